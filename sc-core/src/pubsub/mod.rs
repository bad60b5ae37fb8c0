//! The worker's channel registry and fan-out: which local sockets and server-side subscriptions
//! listen to which channel, and delivery of a publication to all of them. The registry is the one
//! owner of subscriptions: it keeps each channel's subscribers and each socket's channels (the
//! socket asks through [`SocketChannels`]); nothing else mutates either.
//!
//! Each channel's subscriber list is an immutable `Arc<[Subscriber]>` swapped on (rare)
//! subscribe/unsubscribe, so a delivery takes the read lock only long enough to clone one `Arc`,
//! and every socket gets the same pre-encoded frame (no per-subscriber JSON work). With
//! publish-out middleware each socket's own publish-out task runs it, in order, so one slow
//! middleware call delays only its own subscriber.
//!
//! [`Exchange`](exchange::Exchange) is the server-side API over it.

pub mod exchange;
pub(crate) mod presence;
pub(crate) mod recovery;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::extract::ws::Utf8Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::broker::{
    BoxFuture, BrokerEngine, BrokerError, DeliverySink, HistoryPolicy, Position, Publication,
};
use crate::metrics::Metrics;
use crate::socket::{frame_cost, Socket, SocketChannels};

#[derive(Clone)]
pub(crate) enum Subscriber {
    Socket(Socket),
    /// A socket subscribed to a channel with history (see [`recovery`]).
    Gated(Socket, Arc<recovery::Gate>),
    Server {
        id: u64,
        tx: mpsc::UnboundedSender<Arc<Publication>>,
    },
}

impl Subscriber {
    fn is_socket(&self, socket: &Socket) -> bool {
        matches!(self, Self::Socket(s) | Self::Gated(s, _) if s == socket)
    }

    fn socket(&self) -> Option<&Socket> {
        match self {
            Self::Socket(s) | Self::Gated(s, _) => Some(s),
            Self::Server { .. } => None,
        }
    }
}

#[derive(Default)]
struct Registry {
    channels: HashMap<Arc<str>, Arc<[Subscriber]>>,
    /// Each socket's channels, by socket id: an entry only while the socket has any.
    by_socket: HashMap<Arc<str>, HashSet<Arc<str>>>,
    /// The sum of `by_socket`'s set sizes, kept as they change, so `/metrics` does not walk
    /// every socket's set.
    subscriptions: usize,
}

pub(crate) struct PubSub {
    registry: RwLock<Registry>,
    pub(crate) engine: Arc<dyn BrokerEngine>,
    metrics: Arc<Metrics>,
    next_server_sub: AtomicU64,
    /// Which channels have history, and how much.
    pub(crate) history: recovery::HistoryPolicies,
    /// Which channels have presence, and the worker's presence task.
    pub(crate) presence: presence::Presence,
}

/// Outcome of adding a subscriber.
enum Added {
    /// First subscriber of this channel in this worker: the engine must be told.
    First,
    Joined,
    AlreadySubscribed,
    /// The socket is closed: nothing was added.
    Closed,
}

/// Longest a `#subscribe` ack on a channel with presence waits for the engine to have the entry.
const PRESENCE_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl PubSub {
    pub(crate) fn new(engine: Arc<dyn BrokerEngine>, metrics: Arc<Metrics>) -> Self {
        Self {
            registry: RwLock::new(Registry::default()),
            engine,
            metrics,
            next_server_sub: AtomicU64::new(1),
            history: Default::default(),
            presence: Default::default(),
        }
    }

    /// The registry with presence policies (see [`presence::Presence`]).
    pub(crate) fn with_presence(mut self, presence: presence::Presence) -> Self {
        self.presence = presence;
        self
    }

    /// The registry with history policies (see [`recovery::HistoryPolicies`]).
    pub(crate) fn with_history(mut self, history: recovery::HistoryPolicies) -> Self {
        self.history = history;
        self
    }

    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a subscriber; `joined` runs under the lock when a socket joins a channel the worker
    /// already has (for a first subscriber, once the engine confirmed: see `join`).
    fn add(&self, channel: &Arc<str>, sub: Subscriber, joined: impl FnOnce()) -> Added {
        let mut registry = self.write();
        // Checked under the lock: `remove_socket` runs after the socket is marked closed, so a
        // late subscribe (a handler that outlived its socket) either sees it closed here or is
        // removed there.
        if let Some(socket) = sub.socket() {
            if !socket.is_open() {
                return Added::Closed;
            }
        }
        let Registry {
            channels,
            by_socket,
            subscriptions,
        } = &mut *registry;
        let added = match channels.get_mut(channel) {
            Some(list) => {
                if let Some(s) = sub.socket() {
                    if list.iter().any(|x| x.is_socket(s)) {
                        return Added::AlreadySubscribed;
                    }
                }
                let mut v: Vec<Subscriber> = list.to_vec();
                v.push(sub.clone());
                *list = v.into();
                Added::Joined
            }
            None => {
                channels.insert(channel.clone(), Arc::from(vec![sub.clone()]));
                Added::First
            }
        };
        // A first subscriber counts as subscribed only once the engine confirmed the channel
        // (see `subscribe_socket`).
        if let (Some(socket), Added::Joined) = (sub.socket(), &added) {
            if by_socket
                .entry(socket.0.id.clone())
                .or_default()
                .insert(channel.clone())
            {
                *subscriptions += 1;
                joined();
            }
        }
        added
    }

    /// Removes matching subscribers; returns true when the channel has none left.
    fn remove(
        registry: &mut Registry,
        channel: &str,
        is_match: impl Fn(&Subscriber) -> bool,
    ) -> bool {
        let Some(list) = registry.channels.get_mut(channel) else {
            return false;
        };
        let before = list.len();
        for s in list.iter().filter(|s| is_match(s)) {
            if let Subscriber::Gated(_, gate) = s {
                gate.remove();
            }
        }
        let v: Vec<Subscriber> = list.iter().filter(|s| !is_match(s)).cloned().collect();
        if v.len() == before {
            return false;
        }
        if v.is_empty() {
            registry.channels.remove(channel);
            true
        } else {
            *list = v.into();
            false
        }
    }

    /// Removes `socket` from `channel` in both indexes; (was subscribed, channel emptied).
    fn remove_socket_from(registry: &mut Registry, socket: &Socket, channel: &str) -> (bool, bool) {
        let was = match registry.by_socket.get_mut(&socket.0.id) {
            Some(set) => {
                let was = set.remove(channel);
                if set.is_empty() {
                    registry.by_socket.remove(&socket.0.id);
                }
                registry.subscriptions = registry.subscriptions.saturating_sub(usize::from(was));
                was
            }
            None => false,
        };
        let emptied = Self::remove(registry, channel, |s| s.is_socket(socket));
        (was, emptied)
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
        self.join(socket, channel, Subscriber::Socket(socket.clone()))
            .await
            .map(drop)
    }

    /// Subscribes a socket to a channel with history, behind a closed gate, and reads the
    /// history since `since` (`None`: only the top is wanted). The caller sends the ack, then
    /// [`Recovery::finish`](recovery::Recovery::finish).
    pub(crate) async fn subscribe_with_history(
        &self,
        socket: &Socket,
        channel: Arc<str>,
        policy: HistoryPolicy,
        since: Option<Position>,
    ) -> Result<recovery::Recovery, BrokerError> {
        let gate = recovery::Gate::closed(socket.0.shared.config.outbound_queue_bytes);
        let subscriber = Subscriber::Gated(socket.clone(), gate.clone());
        let fresh = self.join(socket, channel.clone(), subscriber).await?;
        if !fresh {
            // Already subscribed: its gate is open and sending; the ack tells where it is, so
            // that a client moving its position to the ack's skips nothing still behind it.
            let gate = self.gate_of(socket, &channel).unwrap_or(gate);
            return Ok(recovery::Recovery {
                top: gate.last(),
                recovered: since.is_some().then_some(true),
                missed: Vec::new(),
                gate,
                fresh,
            });
        }
        let asked = since.is_some();
        let read = since.unwrap_or_else(crate::broker::history::top_only);
        let answer = match self.engine.history(&channel, Some(read), policy).await {
            Ok(answer) => answer,
            // The subscription stands (live publications flow once the engine is back), as for
            // a channel without history; the client learns its gap is not recovered.
            Err(e) => {
                tracing::warn!(%channel, error = %e, "history read failed on #subscribe");
                return Ok(recovery::Recovery {
                    top: None,
                    recovered: asked.then_some(false),
                    missed: Vec::new(),
                    gate,
                    fresh,
                });
            }
        };
        let (mut recovered, mut missed) = match (asked, answer.publications) {
            (true, Some(missed)) => (Some(true), missed),
            (true, None) => (Some(false), Vec::new()),
            (false, _) => (None, Vec::new()),
        };
        // A replay the socket's outbound queue cannot take would close it as a slow consumer
        // (4100), and the client would come back asking for the same replay forever.
        let replay: usize = missed.iter().map(|p| frame_cost(p.frame.len())).sum();
        if replay > socket.outbound_free() {
            recovered = Some(false);
            missed = Vec::new();
        }
        Ok(recovery::Recovery {
            top: Some(answer.top),
            recovered,
            missed,
            gate,
            fresh,
        })
    }

    /// The gate of `socket`'s subscription to `channel`, if it has one.
    fn gate_of(&self, socket: &Socket, channel: &str) -> Option<Arc<recovery::Gate>> {
        self.subscribers(channel)?.iter().find_map(|s| match s {
            Subscriber::Gated(s, gate) if s == socket => Some(gate.clone()),
            _ => None,
        })
    }

    /// Adds a socket's subscriber, telling the engine about a channel new to this worker;
    /// true when the socket was not subscribed already.
    async fn join(
        &self,
        socket: &Socket,
        channel: Arc<str>,
        subscriber: Subscriber,
    ) -> Result<bool, BrokerError> {
        // Presence: the join is queued under the registry's lock, so it is always queued before
        // the leave of the same subscription; the ack waits until the engine has it.
        let presence = self
            .presence
            .of(&channel)
            .map(|policy| (policy, self.presence.entry_of(socket)));
        let queue = |channel: &Arc<str>| {
            presence.as_ref().map(|(policy, entry)| {
                self.presence
                    .join(&self.engine, channel.clone(), entry.clone(), *policy)
            })
        };
        let mut answered = None;
        let added = self.add(&channel, subscriber, || answered = queue(&channel));
        let joined = match added {
            Added::Joined => Ok(true),
            Added::AlreadySubscribed => Ok(false),
            Added::Closed => Err(BrokerError::Unavailable("the socket is closed".into())),
            Added::First => {
                let confirmed = self.engine.subscribe(&channel).await;
                let mut registry = self.write();
                if confirmed.is_ok() && socket.is_open() {
                    let added = registry
                        .by_socket
                        .entry(socket.0.id.clone())
                        .or_default()
                        .insert(channel.clone());
                    registry.subscriptions += usize::from(added);
                    if added {
                        answered = queue(&channel);
                    }
                    drop(registry);
                    Ok(true)
                } else {
                    // Failed, or the socket closed meanwhile (after `remove_socket` ran).
                    let emptied = Self::remove(&mut registry, &channel, |s| s.is_socket(socket));
                    drop(registry);
                    if emptied && confirmed.is_ok() {
                        self.release(&channel);
                    }
                    confirmed.and(Err(BrokerError::Unavailable("the socket is closed".into())))
                }
            }
        };
        if let Some(answered) = answered {
            // Bounded: an engine that is slow or unreachable (but not yet known to be) must not
            // hold the ack; the entry still arrives when the engine takes it.
            let _ = tokio::time::timeout(PRESENCE_ACK_WAIT, answered).await;
        }
        joined
    }

    /// Unsubscribes a socket; returns false if it was not subscribed.
    pub(crate) fn unsubscribe_socket(&self, socket: &Socket, channel: &str) -> bool {
        let (was, emptied) = {
            let mut registry = self.write();
            let (was, emptied) = Self::remove_socket_from(&mut registry, socket, channel);
            if was {
                self.leave_presence(socket, channel);
            }
            (was, emptied)
        };
        if emptied {
            self.release(channel);
        }
        was
    }

    /// Removes a closed socket from every channel.
    pub(crate) fn remove_socket(&self, socket: &Socket) {
        let mut emptied = Vec::new();
        {
            let mut registry = self.write();
            let channels = registry.by_socket.remove(&socket.0.id).unwrap_or_default();
            registry.subscriptions = registry.subscriptions.saturating_sub(channels.len());
            for ch in channels {
                self.leave_presence(socket, &ch);
                if Self::remove(&mut registry, &ch, |s| s.is_socket(socket)) {
                    emptied.push(ch);
                }
            }
        }
        for ch in emptied {
            self.release(&ch);
        }
    }

    /// Queues the leave of `socket` from `channel` if the channel has presence; called under the
    /// registry's write lock (see `join`).
    fn leave_presence(&self, socket: &Socket, channel: &str) {
        if let Some(policy) = self.presence.of(channel) {
            self.presence
                .leave(&self.engine, channel.into(), socket.0.id.clone(), policy);
        }
    }

    /// Queues a join with the socket's current entry for every channel with presence it is on
    /// (its presence info changed: the engine replaces the entries).
    fn rejoin_presence(&self, socket: &Socket) {
        let registry = self.read();
        let Some(channels) = registry.by_socket.get(&socket.0.id) else {
            return;
        };
        let entry = self.presence.entry_of(socket);
        for channel in channels {
            if let Some(policy) = self.presence.of(channel) {
                // Nobody waits for it: the socket's subscriptions were acknowledged already.
                self.presence
                    .rejoin(&self.engine, channel.clone(), entry.clone(), policy);
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
        if let Added::First = self.add(&channel, Subscriber::Server { id, tx }, || {}) {
            if let Err(e) = self.engine.subscribe(&channel).await {
                Self::remove(
                    &mut self.write(),
                    &channel,
                    |s| matches!(s, Subscriber::Server { id: i, .. } if *i == id),
                );
                return Err(e);
            }
        }
        Ok((id, rx))
    }

    pub(crate) fn unsubscribe_server(&self, channel: &str, id: Option<u64>) {
        let emptied = Self::remove(
            &mut self.write(),
            channel,
            |s| matches!(s, Subscriber::Server { id: i, .. } if id.is_none_or(|id| *i == id)),
        );
        if emptied {
            self.release(channel);
        }
    }

    pub(crate) fn server_channels(&self) -> Vec<String> {
        self.read()
            .channels
            .iter()
            .filter(|(_, subs)| subs.iter().any(|s| matches!(s, Subscriber::Server { .. })))
            .map(|(c, _)| c.to_string())
            .collect()
    }

    fn subscribers(&self, channel: &str) -> Option<Arc<[Subscriber]>> {
        self.read().channels.get(channel).cloned()
    }
}

impl SocketChannels for PubSub {
    fn of(&self, socket: &Socket) -> Vec<Arc<str>> {
        self.read()
            .by_socket
            .get(&socket.0.id)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn contains(&self, socket: &Socket, channel: &str) -> bool {
        self.read()
            .by_socket
            .get(&socket.0.id)
            .is_some_and(|set| set.contains(channel))
    }

    fn count(&self, socket: &Socket) -> usize {
        self.read()
            .by_socket
            .get(&socket.0.id)
            .map_or(0, HashSet::len)
    }

    fn unsubscribe(&self, socket: &Socket, channel: &str) -> bool {
        self.unsubscribe_socket(socket, channel)
    }

    fn total(&self) -> usize {
        self.read().subscriptions
    }

    fn presence_changed(&self, socket: &Socket) {
        self.rejoin_presence(socket);
    }
}

impl DeliverySink for PubSub {
    fn deliver_event(&self, channel: &str, frame: Utf8Bytes) {
        let Some(subs) = self.subscribers(channel) else {
            return;
        };
        for socket in subs.iter().filter_map(Subscriber::socket) {
            let _ = socket.push(frame.clone());
        }
    }

    fn deliver(&self, publication: Arc<Publication>) -> BoxFuture<'_, ()> {
        let Some(subs) = self.subscribers(&publication.channel) else {
            return Box::pin(async {});
        };
        // Counted once per publication: a shared atomic per delivery would be contended on the
        // hottest path.
        let mut queued = 0;
        for sub in subs.iter() {
            match sub {
                Subscriber::Socket(socket) => {
                    if socket.deliver(&publication).is_ok() {
                        queued += 1;
                    }
                }
                Subscriber::Gated(socket, gate) => {
                    if gate.offer(socket, &publication) {
                        queued += 1;
                    }
                }
                Subscriber::Server { tx, .. } => {
                    let _ = tx.send(publication.clone());
                }
            }
        }
        Metrics::add(&self.metrics.publications, 1);
        Metrics::add(&self.metrics.publish_deliveries, queued);
        Box::pin(async {})
    }
}

/// The data of a delivered publication (`null` when it had none).
pub(crate) fn data_of(publication: &Publication) -> Value {
    publication.data().cloned().unwrap_or(Value::Null)
}
