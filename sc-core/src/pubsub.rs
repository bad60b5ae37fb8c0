//! The worker's channel registry and fan-out: which local sockets and server-side subscriptions
//! listen to which channel, and delivery of a publication to all of them.
//!
//! Each channel's subscriber list is an immutable `Arc<[Subscriber]>` swapped on (rare)
//! subscribe/unsubscribe, so a delivery takes the read lock only long enough to clone one `Arc`,
//! and every socket gets the same pre-encoded frame (no per-subscriber JSON work) unless
//! publish-out middleware is registered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::broker::{BrokerEngine, BrokerError, DeliverySink, Publication};
use crate::handler::{ActionKind, BoxFuture, Origin, Parts, Request};
use crate::metrics::Metrics;
use crate::middleware::MiddlewareKind;
use crate::protocol;
use crate::server::ServerShared;
use crate::socket::{lock, Socket};

#[derive(Clone)]
pub(crate) enum Subscriber {
    Socket(Socket),
    Server {
        id: u64,
        tx: mpsc::UnboundedSender<Arc<Publication>>,
    },
}

impl Subscriber {
    fn is_socket(&self, socket: &Socket) -> bool {
        matches!(self, Self::Socket(s) if s == socket)
    }
}

pub(crate) struct PubSub {
    channels: RwLock<HashMap<Arc<str>, Arc<[Subscriber]>>>,
    pub(crate) engine: Arc<dyn BrokerEngine>,
    server: Weak<ServerShared>,
    next_server_sub: AtomicU64,
}

/// Outcome of adding a subscriber.
pub(crate) enum Added {
    /// First subscriber of this channel in this worker: the engine must be told.
    First,
    Joined,
    AlreadySubscribed,
}

impl PubSub {
    pub(crate) fn new(engine: Arc<dyn BrokerEngine>, server: Weak<ServerShared>) -> Self {
        Self {
            channels: RwLock::new(HashMap::new()),
            engine,
            server,
            next_server_sub: AtomicU64::new(1),
        }
    }

    fn add(&self, channel: &Arc<str>, sub: Subscriber) -> Added {
        let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
        match channels.get_mut(channel) {
            Some(list) => {
                if let Subscriber::Socket(s) = &sub {
                    if list.iter().any(|x| x.is_socket(s)) {
                        return Added::AlreadySubscribed;
                    }
                }
                let mut v: Vec<Subscriber> = list.to_vec();
                v.push(sub);
                *list = v.into();
                Added::Joined
            }
            None => {
                channels.insert(channel.clone(), Arc::from(vec![sub]));
                Added::First
            }
        }
    }

    /// Removes matching subscribers; returns true when the channel has none left.
    fn remove(&self, channel: &str, is_match: impl Fn(&Subscriber) -> bool) -> bool {
        let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
        let Some(list) = channels.get_mut(channel) else {
            return false;
        };
        let before = list.len();
        let v: Vec<Subscriber> = list.iter().filter(|s| !is_match(s)).cloned().collect();
        if v.len() == before {
            return false;
        }
        if v.is_empty() {
            channels.remove(channel);
            true
        } else {
            *list = v.into();
            false
        }
    }

    fn release(&self, channel: &str) {
        let engine = self.engine.clone();
        let channel = channel.to_owned();
        // Unsubscribing from the engine is best effort and must not delay the caller.
        tokio::spawn(async move {
            if let Err(e) = engine.unsubscribe(&channel).await {
                tracing::warn!(%channel, error = %e, "broker unsubscribe failed");
            }
        });
    }

    /// Subscribes a socket. The caller has already checked limits and middleware.
    pub(crate) async fn subscribe_socket(
        &self,
        socket: &Socket,
        channel: Arc<str>,
    ) -> Result<(), BrokerError> {
        match self.add(&channel, Subscriber::Socket(socket.clone())) {
            Added::AlreadySubscribed => return Ok(()),
            Added::Joined => {}
            Added::First => {
                if let Err(e) = self.engine.subscribe(&channel).await {
                    self.remove(&channel, |s| s.is_socket(socket));
                    return Err(e);
                }
            }
        }
        lock(&socket.0.subscriptions).insert(channel);
        Ok(())
    }

    /// Unsubscribes a socket; returns false if it was not subscribed.
    pub(crate) fn unsubscribe_socket(&self, socket: &Socket, channel: &str) -> bool {
        let was = lock(&socket.0.subscriptions).remove(channel);
        if self.remove(channel, |s| s.is_socket(socket)) {
            self.release(channel);
        }
        was
    }

    /// Removes a closed socket from every channel.
    pub(crate) fn remove_socket(&self, socket: &Socket) {
        let channels: Vec<Arc<str>> = lock(&socket.0.subscriptions).drain().collect();
        for ch in channels {
            if self.remove(&ch, |s| s.is_socket(socket)) {
                self.release(&ch);
            }
        }
    }

    /// Adds a server-side subscription; returns its id and receiver.
    pub(crate) async fn subscribe_server(
        &self,
        channel: Arc<str>,
    ) -> Result<(u64, mpsc::UnboundedReceiver<Arc<Publication>>), BrokerError> {
        let id = self.next_server_sub.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        if let Added::First = self.add(&channel, Subscriber::Server { id, tx }) {
            if let Err(e) = self.engine.subscribe(&channel).await {
                self.remove(
                    &channel,
                    |s| matches!(s, Subscriber::Server { id: i, .. } if *i == id),
                );
                return Err(e);
            }
        }
        Ok((id, rx))
    }

    pub(crate) fn unsubscribe_server(&self, channel: &str, id: Option<u64>) {
        let emptied = self.remove(
            channel,
            |s| matches!(s, Subscriber::Server { id: i, .. } if id.is_none_or(|id| *i == id)),
        );
        if emptied {
            self.release(channel);
        }
    }

    pub(crate) fn server_channels(&self) -> Vec<String> {
        let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
        channels
            .iter()
            .filter(|(_, subs)| subs.iter().any(|s| matches!(s, Subscriber::Server { .. })))
            .map(|(c, _)| c.to_string())
            .collect()
    }

    pub(crate) fn subscribers(&self, channel: &str) -> Option<Arc<[Subscriber]>> {
        let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
        channels.get(channel).cloned()
    }

    /// Queues the publication for one socket; whether a frame was queued.
    async fn deliver_to_socket(
        server: &Arc<ServerShared>,
        socket: &Socket,
        publication: &Publication,
    ) -> bool {
        if !server.app.middleware.has(MiddlewareKind::PublishOut) {
            return socket.push(publication.frame.clone()).is_ok();
        }
        let req = Request {
            parts: Parts {
                origin: Origin::Socket(socket.clone()),
                kind: ActionKind::PublishOut,
                event: None,
                channel: Some(publication.channel.clone()),
                auth: socket.auth_token(),
                auth_token_expired: None,
                wait_for_auth: false,
            },
            data: publication.data().cloned(),
        };
        match server
            .app
            .middleware
            .run(MiddlewareKind::PublishOut, req)
            .await
        {
            Ok(data) if data.as_ref() == publication.data() => {
                socket.push(publication.frame.clone()).is_ok()
            }
            Ok(data) => match protocol::encode_publish(&publication.channel, data.as_ref()) {
                Ok(frame) => socket.push(frame.into()).is_ok(),
                Err(e) => {
                    tracing::error!(error = %e, "publish-out data is not JSON");
                    false
                }
            },
            Err(block) => {
                tracing::debug!(socket = %socket.id(), channel = %publication.channel, %block, "publishOut blocked");
                false
            }
        }
    }
}

impl DeliverySink for PubSub {
    fn deliver(&self, publication: Arc<Publication>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(subs) = self.subscribers(&publication.channel) else {
                return;
            };
            let Some(server) = self.server.upgrade() else {
                return;
            };
            // Counted once per publication: a shared atomic per delivery would be contended on
            // the hottest path.
            let mut queued = 0;
            for sub in subs.iter() {
                match sub {
                    Subscriber::Socket(socket) => {
                        if Self::deliver_to_socket(&server, socket, &publication).await {
                            queued += 1;
                        }
                    }
                    Subscriber::Server { tx, .. } => {
                        let _ = tx.send(publication.clone());
                    }
                }
            }
            Metrics::add(&server.metrics.publications, 1);
            Metrics::add(&server.metrics.publish_deliveries, queued);
        })
    }
}

/// Used by tests and the exchange to read the data of a delivered publication.
pub(crate) fn data_of(publication: &Publication) -> Value {
    publication.data().cloned().unwrap_or(Value::Null)
}
