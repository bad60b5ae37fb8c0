//! [`Shared`]: the state every socket of one server shares with it: the options in force, the
//! auth engine, the counters, the connected sockets, the app's state and the services the layers
//! above make extractable. The server builds it once at startup (nothing in it is re-read from
//! the environment later) and it lives as long as a socket or a handle refers to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::Extensions;
use base64::Engine as _;
use tokio::sync::Notify;

use super::{lock, Socket};
use crate::auth::AuthEngine;
use crate::config::Config;
use crate::metrics::{Metrics, Snapshot};

/// The pub/sub registry's answers about one socket's channels. The registry (above this layer)
/// owns every socket's subscription set; a socket asks it through this trait.
pub(crate) trait SocketChannels: Send + Sync {
    /// The channels `socket` is subscribed to.
    fn of(&self, socket: &Socket) -> Vec<Arc<str>>;
    /// Whether `socket` is subscribed to `channel`.
    fn contains(&self, socket: &Socket, channel: &str) -> bool;
    /// How many channels `socket` is subscribed to.
    fn count(&self, socket: &Socket) -> usize;
    /// Unsubscribes `socket` from `channel`; false if it was not subscribed.
    fn unsubscribe(&self, socket: &Socket, channel: &str) -> bool;
    /// Socket subscriptions in total (for the metrics).
    fn total(&self) -> usize;
    /// `socket`'s presence info changed: its presence entries are to be replaced.
    fn presence_changed(&self, socket: &Socket) {
        let _ = socket;
    }
}

/// Server-wide state shared by every connection; see the module docs.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) auth: AuthEngine,
    pub(crate) metrics: Arc<Metrics>,
    /// Values registered with `App::state`, for the `State<T>` extractor.
    pub(crate) state: Extensions,
    /// What the layers above this one make extractable by type (the `Exchange`).
    pub(crate) services: Extensions,
    /// The pub/sub registry's view of each socket's channels.
    pub(crate) channels: Arc<dyn SocketChannels>,
    /// A handler panic ends this process (`crash_worker_on_error` in a worker), decided once at
    /// startup by the process model; the session only asks for it through [`Shared::request_exit`].
    pub(crate) exit_on_panic: bool,
    exit: ExitRequest,
    clients: Mutex<HashMap<Arc<str>, Socket>>,
    /// `clients.len()`, kept next to it so that `/health`, the metrics and
    /// [`clients_count`](Self::clients_count) read one atomic instead of taking the registry's
    /// lock, which every connect and disconnect takes.
    connected: AtomicUsize,
    id_seq: AtomicU64,
    id_prefix: [u8; 12],
}

/// A one-way flag the process model waits on.
#[derive(Default)]
struct ExitRequest {
    set: AtomicBool,
    notify: Notify,
}

impl Shared {
    pub(crate) fn new(
        config: Config,
        auth: AuthEngine,
        metrics: Arc<Metrics>,
        state: Extensions,
        services: Extensions,
        channels: Arc<dyn SocketChannels>,
        exit_on_panic: bool,
    ) -> Self {
        Self {
            config,
            auth,
            metrics,
            state,
            services,
            channels,
            exit_on_panic,
            exit: ExitRequest::default(),
            clients: Mutex::new(HashMap::new()),
            connected: AtomicUsize::new(0),
            id_seq: AtomicU64::new(0),
            id_prefix: rand::random(),
        }
    }

    /// 20 URL-safe characters: 12 random bytes per process and a 3-byte sequence (the
    /// reference's `base64id` shape), unique within the process and unguessable across them.
    pub(crate) fn next_socket_id(&self) -> Arc<str> {
        let seq = self.id_seq.fetch_add(1, Ordering::Relaxed);
        let mut bytes = [0u8; 15];
        bytes[..12].copy_from_slice(&self.id_prefix);
        let mut mix: [u8; 12] = rand::random();
        for (b, m) in bytes[..12].iter_mut().zip(mix.iter_mut()) {
            *b ^= *m;
        }
        bytes[12..].copy_from_slice(&seq.to_be_bytes()[5..]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(bytes)
            .into()
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        self.metrics
            .snapshot(self.clients_count(), self.channels.total())
    }

    pub(crate) fn register(&self, socket: &Socket) {
        Metrics::add(&self.metrics.handshakes, 1);
        let mut clients = lock(&self.clients);
        if clients
            .insert(socket.0.id.clone(), socket.clone())
            .is_none()
        {
            // Under the registry's lock, so the count never disagrees with it for long.
            self.connected.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn unregister(&self, socket: &Socket) {
        let mut clients = lock(&self.clients);
        if clients.remove(&socket.0.id).is_some() {
            self.connected.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Sockets registered now; no lock.
    pub(crate) fn clients_count(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    pub(crate) fn client(&self, id: &str) -> Option<Socket> {
        lock(&self.clients).get(id).cloned()
    }

    pub(crate) fn clients(&self) -> Vec<Socket> {
        lock(&self.clients).values().cloned().collect()
    }

    pub(crate) fn close_all(&self, code: u16, reason: &str) {
        for s in self.clients() {
            s.disconnect(code, reason);
        }
    }

    /// Asks the process model to end this process (a handler panicked and
    /// [`exit_on_panic`](Self::exit_on_panic) is set).
    pub(crate) fn request_exit(&self) {
        self.exit.set.store(true, Ordering::Release);
        self.exit.notify.notify_waiters();
    }

    /// Completes once [`request_exit`](Self::request_exit) was called.
    pub(crate) async fn exit_requested(&self) {
        loop {
            let notified = self.exit.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.exit.set.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/health` and the metrics read the count while connects and disconnects hold the
    /// registry's lock: the count must not wait for it.
    #[test]
    fn the_connection_count_does_not_take_the_registry_lock() {
        let shared = Arc::new(Shared::new(
            Config::default(),
            AuthEngine::new(crate::auth::AuthOptions::default()).expect("auth"),
            Arc::default(),
            Extensions::new(),
            Extensions::new(),
            Arc::new(crate::socket::testkit::NoChannels),
            false,
        ));
        let held = lock(&shared.clients);
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = shared.clone();
        std::thread::spawn(move || {
            let _ = tx.send((reader.clients_count(), reader.snapshot().connections));
        });
        let counted = rx.recv_timeout(std::time::Duration::from_secs(2));
        drop(held);
        assert_eq!(counted.expect("counted while the lock is held"), (0, 0));
    }
}
