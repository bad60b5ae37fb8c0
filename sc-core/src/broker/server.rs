//! The broker process's main loop: accepts worker connections on a Unix socket, keeps for each
//! channel the set of worker connections subscribed to it, forwards every publication once to
//! each of them (the publisher's own worker included), and answers key-value operations from
//! its own [`KvStore`].
//!
//! The master runs one of these per broker process:
//!
//! ```no_run
//! # async fn broker() -> std::io::Result<()> {
//! sc_core::broker::server::serve_path("/tmp/my-app/b0.sock").await
//! # }
//! ```
//!
//! Everything the broker holds (subscriptions, key-value data, connections) lives inside the
//! `serve` future: dropping it (or aborting its task) closes every worker connection, and the
//! workers reconnect to whatever serves the path next.
//!
//! Only the broker's own user may connect (the peer's uid, `SO_PEERCRED`), and in a cluster the
//! hello must carry the secret the master handed this run's processes ([`serve_with`]):
//! anyone else's connection is closed before it can publish, subscribe or touch the store.
//!
//! A worker whose connection misbehaves (an unknown or malformed frame, no hello within
//! [`HELLO_TIMEOUT`], a wrong protocol version) is dropped with a log line; so is a worker that
//! reads so slowly that more than its queue's bound in bytes waits for it (`broker_queue_bytes`,
//! [`DEFAULT_QUEUE_BYTES`]; it reconnects and resubscribes; the messages in between are lost for
//! its sockets).

use std::collections::{HashMap, HashSet};
use std::io;
#[cfg(feature = "test-util")]
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::codec::{Encoder, FramedRead};
use tokio_util::sync::CancellationToken;

use super::history::{HistoryLimits, HistoryPolicy, HistoryStore};
use super::kv::{self, KvStore};
use super::presence::{encode_event, PresenceStore, DEAD_WORKER_EVENT_MAX};
use super::wire::{BrokerCodec, Frame, HistoryQuery, WireError, MAX_FRAME_LEN, VERSION};
use super::Publication;

/// The longest hello a broker reads (a version and a secret of 64 hex digits fit many times).
const MAX_HELLO_LEN: usize = 1024;

/// How long a new connection has to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes waiting to be written to one worker before the broker gives up on it, unless the
/// `broker_queue_bytes` option says otherwise.
pub const DEFAULT_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// What a queued frame costs beyond its payload (the queue slot, the frame header), so that a
/// flood of tiny frames is bounded too.
const ENTRY_OVERHEAD: usize = 64;

/// One connected worker, as the channel lists hold it.
#[derive(Clone)]
struct Peer {
    id: u64,
    tx: mpsc::UnboundedSender<(Frame, usize)>,
    /// Bytes queued plus the batch being written (as [`cost`] counts them).
    queued: Arc<AtomicUsize>,
    limit: usize,
    /// Cancelled to drop the connection (from another connection's task, for a slow reader).
    kill: CancellationToken,
    /// Set by the one publisher that drops this peer.
    dropping: Arc<AtomicBool>,
    /// Slow workers dropped by this broker since it started (shared by every connection).
    dropped: Arc<AtomicU64>,
}

/// The bytes a frame counts for in a worker's queue: about its encoded length.
fn cost(frame: &Frame) -> usize {
    ENTRY_OVERHEAD
        + match frame {
            Frame::Deliver { channel, frame }
            | Frame::Publish { channel, frame, .. }
            | Frame::PublishWithHistory { channel, frame, .. }
            | Frame::PresenceEvent { channel, frame } => channel.len() + frame.len(),
            Frame::DeliverAt {
                position,
                channel,
                frame,
            } => position.epoch.len() + channel.len() + frame.len(),
            Frame::Subscribe { channel, .. } | Frame::Unsubscribe { channel } => channel.len(),
            Frame::KvResponse { result, .. } => json_len(result),
            Frame::Error { message, .. } => message.len(),
            Frame::KvRequest { .. }
            | Frame::HistoryRequest { .. }
            | Frame::PresenceRequest { .. }
            | Frame::Hello { .. }
            | Frame::Ack { .. }
            | Frame::Ping { .. } => 0,
        }
}

/// The length of a value's JSON text, without building it.
fn json_len(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

impl Peer {
    fn new(id: u64, limit: usize, dropped: Arc<AtomicU64>) -> (Self, PeerQueue) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let peer = Self {
            id,
            tx,
            queued: queued.clone(),
            limit,
            kill: CancellationToken::new(),
            dropping: Arc::default(),
            dropped,
        };
        (peer, PeerQueue { rx, queued })
    }

    /// Queues a frame; a peer whose queue is over its bound is dropped. A frame always fits
    /// into an empty queue.
    fn send(&self, frame: Frame) {
        if self.kill.is_cancelled() {
            return;
        }
        let size = cost(&frame);
        let queued = self.queued.fetch_add(size, Ordering::AcqRel);
        if queued > 0 && queued + size > self.limit {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            // Publishers race here; the one that drops the peer logs and counts it.
            if self.dropping.swap(true, Ordering::AcqRel) {
                return;
            }
            let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                peer = self.id,
                queued,
                limit = self.limit,
                slow_workers_dropped_since_start = total,
                "worker reads too slowly (broker_queue_bytes reached); dropping its connection (it reconnects and resubscribes; messages in between are lost for it)"
            );
            self.kill.cancel();
            return;
        }
        if self.tx.send((frame, size)).is_err() {
            // The connection is closing: nothing will write these bytes.
            self.queued.fetch_sub(size, Ordering::AcqRel);
        }
    }
}

/// The writer's side of a [`Peer`]'s queue.
struct PeerQueue {
    rx: mpsc::UnboundedReceiver<(Frame, usize)>,
    queued: Arc<AtomicUsize>,
}

struct Broker {
    /// Copy-on-write subscriber lists: a publish clones one `Arc` under the lock.
    channels: Mutex<HashMap<Arc<str>, Arc<[Peer]>>>,
    kv: Arc<KvStore>,
    /// The history of the channels this broker owns (lost with the process: new epochs).
    history: HistoryStore,
    /// The presence of the channels this broker owns, each entry tagged with its worker
    /// connection.
    presence: PresenceStore,
    /// Each worker connection's queue bound, in bytes.
    queue_bytes: usize,
    /// Worker connections dropped for reading too slowly, since start.
    slow_dropped: Arc<AtomicU64>,
}

impl Broker {
    fn channels(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<[Peer]>>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subscribe(&self, channel: &Arc<str>, peer: &Peer) {
        let mut channels = self.channels();
        let list = match channels.get(channel) {
            Some(list) => {
                let mut v = list.to_vec();
                v.push(peer.clone());
                v
            }
            None => vec![peer.clone()],
        };
        channels.insert(channel.clone(), list.into());
    }

    fn unsubscribe(&self, channel: &str, peer: u64) {
        let mut channels = self.channels();
        let Some(list) = channels.get_mut(channel) else {
            return;
        };
        let v: Vec<Peer> = list.iter().filter(|p| p.id != peer).cloned().collect();
        if v.is_empty() {
            channels.remove(channel);
        } else {
            *list = v.into();
        }
    }

    fn subscribers(&self, channel: &str) -> Option<Arc<[Peer]>> {
        self.channels().get(channel).cloned()
    }

    /// Sends a `#presence` event to every worker subscribed to `channel`.
    fn presence_event(&self, channel: &str, frame: &Utf8Bytes) {
        let Some(subscribers) = self.subscribers(channel) else {
            return;
        };
        let channel: Arc<str> = channel.into();
        for sub in subscribers.iter() {
            sub.send(Frame::PresenceEvent {
                channel: channel.clone(),
                frame: frame.clone(),
            });
        }
    }

    /// A worker connection ended (closed, or the worker died): its sockets are gone, so are
    /// their entries, and subscribers of channels with join/leave events hear of it.
    fn forget_presence_of(&self, peer: u64) {
        for removed in self.presence.remove_owner(peer) {
            if !removed.join_leave {
                continue;
            }
            match encode_event(
                &removed.channel,
                &[],
                &removed.entries,
                DEAD_WORKER_EVENT_MAX,
            ) {
                Ok(frame) => self.presence_event(&removed.channel, &frame.into()),
                Err(e) => tracing::error!(error = %e, "could not encode a presence event"),
            }
        }
    }
}

/// Binds `path` and serves it (see [`serve`]). A socket file left behind by a broker that died
/// is replaced; one that still accepts connections is an `AddrInUse` error. (The master binds
/// the brokers' sockets itself; this is for tests that run a broker in process.)
#[cfg(feature = "test-util")]
pub async fn serve_path(path: impl AsRef<Path>) -> io::Result<()> {
    serve(bind(path.as_ref()).await?).await
}

/// Binds a Unix listener at `path`, replacing a stale socket file (one nobody listens on).
#[cfg(feature = "test-util")]
pub async fn bind(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            use std::os::unix::fs::FileTypeExt;
            let is_socket = std::fs::symlink_metadata(path)?.file_type().is_socket();
            if !is_socket || UnixStream::connect(path).await.is_ok() {
                return Err(e);
            }
            tracing::debug!(path = %path.display(), "replacing a stale broker socket file");
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        other => other,
    }
}

/// Runs a broker on `listener` until the future is dropped. Accept errors (out of file
/// descriptors, ...) are logged and retried, so this does not return in practice. Workers must
/// send an empty secret in their hello (see [`serve_with`]).
// Only tests run a broker without a secret; the process model always gives one.
#[cfg_attr(not(feature = "test-util"), allow(dead_code))]
pub async fn serve(listener: UnixListener) -> io::Result<()> {
    serve_with(listener, Bytes::new(), DEFAULT_QUEUE_BYTES).await
}

/// [`serve`], admitting only connections from this process's user whose hello carries `secret`
/// (a cluster's per-run secret: a socket file's mode is one line of defence, this is the
/// second), with each worker connection's queue bounded to `queue_bytes` (the
/// `broker_queue_bytes` option).
pub async fn serve_with(
    listener: UnixListener,
    secret: Bytes,
    queue_bytes: usize,
) -> io::Result<()> {
    serve_limited(listener, secret, queue_bytes, HistoryLimits::default()).await
}

/// [`serve_with`], keeping the history of the channels this broker owns within `history`
/// (the `history_max_bytes` and other `history_*` options).
pub async fn serve_limited(
    listener: UnixListener,
    secret: Bytes,
    queue_bytes: usize,
    history: HistoryLimits,
) -> io::Result<()> {
    let broker = Arc::new(Broker {
        channels: Mutex::default(),
        kv: Arc::default(),
        history: HistoryStore::with_limits(history),
        presence: PresenceStore::default(),
        queue_bytes,
        slow_dropped: Arc::default(),
    });
    // Owned tasks: dropping this future aborts every connection and the sweeper.
    let mut tasks = JoinSet::new();
    tasks.spawn(kv::sweep_every(
        Arc::downgrade(&broker.kv),
        super::KV_SWEEP_INTERVAL,
    ));
    let mut next_peer = 0u64;
    tracing::debug!(addr = ?listener.local_addr().ok(), "broker listening");
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    next_peer += 1;
                    tasks.spawn(connection(broker.clone(), next_peer, stream, secret.clone()));
                }
                Err(e) => {
                    tracing::error!(error = %e, "broker accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Reap finished connections (the sweeper never finishes while `broker` lives).
            Some(joined) = tasks.join_next() => {
                if let Err(e) = joined {
                    if e.is_panic() {
                        tracing::error!(error = %e, "a broker connection task panicked");
                    }
                }
            }
        }
    }
}

/// Whether the peer runs as this process's user.
pub(crate) fn same_user(stream: &UnixStream) -> bool {
    let own = nix::unistd::getuid().as_raw();
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == own => true,
        Ok(cred) => {
            tracing::warn!(
                uid = cred.uid(),
                pid = ?cred.pid(),
                "refused a connection from another user"
            );
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "refused a connection whose peer is unknown");
            false
        }
    }
}

/// Compares without an early exit, so timing does not tell how much of a guess was right.
pub(crate) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn connection(broker: Arc<Broker>, id: u64, stream: UnixStream, secret: Bytes) {
    if !same_user(&stream) {
        return;
    }
    let (read, write) = stream.into_split();
    let mut frames = FramedRead::new(read, BrokerCodec::new());
    // Nothing is checked before the hello: it alone may not be 16 MiB.
    frames.decoder_mut().set_max_frame_length(MAX_HELLO_LEN);
    match tokio::time::timeout(HELLO_TIMEOUT, frames.next()).await {
        Ok(Some(Ok(Frame::Hello {
            version,
            secret: theirs,
        }))) if version == VERSION => {
            if !same_secret(&theirs, &secret) {
                tracing::warn!(
                    peer = id,
                    "a connection's hello lacks this run's secret; dropping it"
                );
                return;
            }
        }
        Ok(Some(Ok(Frame::Hello { version, .. }))) => {
            tracing::warn!(peer = id, version, "worker speaks broker protocol version {version}, this broker {VERSION}; dropping it");
            return;
        }
        Ok(None) => return,
        Ok(Some(Ok(_))) => {
            tracing::warn!(peer = id, "worker did not start with a hello; dropping it");
            return;
        }
        Ok(Some(Err(e))) => {
            tracing::warn!(peer = id, error = %e, "bad first frame from a worker; dropping it");
            return;
        }
        Err(_) => {
            tracing::warn!(
                peer = id,
                "no hello from a worker within {HELLO_TIMEOUT:?}; dropping it"
            );
            return;
        }
    }
    frames.decoder_mut().set_max_frame_length(MAX_FRAME_LEN);
    tracing::debug!(peer = id, "worker connected");
    let (peer, rx) = Peer::new(id, broker.queue_bytes, broker.slow_dropped.clone());
    let mut subscribed = HashSet::new();
    let outcome = tokio::select! {
        r = read_loop(&broker, &peer, &mut frames, &mut subscribed) => r,
        r = write_loop(write, rx) => r.map_err(|e| e.to_string()),
        _ = peer.kill.cancelled() => Err("too slow".into()),
    };
    for channel in &subscribed {
        broker.unsubscribe(channel, id);
    }
    broker.forget_presence_of(id);
    match outcome {
        Ok(()) => tracing::debug!(peer = id, "worker disconnected"),
        Err(reason) => tracing::warn!(peer = id, %reason, "dropped a worker connection"),
    }
}

/// Handles a connection's frames in order; `Ok` when the worker closed the connection.
async fn read_loop(
    broker: &Broker,
    peer: &Peer,
    frames: &mut FramedRead<tokio::net::unix::OwnedReadHalf, BrokerCodec>,
    subscribed: &mut HashSet<Arc<str>>,
) -> Result<(), String> {
    while let Some(frame) = frames.next().await {
        match frame.map_err(|e| e.to_string())? {
            Frame::Subscribe { id, channel } => {
                if subscribed.insert(channel.clone()) {
                    broker.subscribe(&channel, peer);
                }
                if id != 0 {
                    peer.send(Frame::Ack { id });
                }
            }
            Frame::Unsubscribe { channel } => {
                if subscribed.remove(&channel) {
                    broker.unsubscribe(&channel, peer.id);
                }
            }
            Frame::Publish { id, channel, frame } => {
                if let Some(subscribers) = broker.subscribers(&channel) {
                    for sub in subscribers.iter() {
                        sub.send(Frame::Deliver {
                            channel: channel.clone(),
                            frame: frame.clone(),
                        });
                    }
                }
                peer.send(Frame::Ack { id });
            }
            Frame::KvRequest { id, op } => {
                let result = broker.kv.apply(op);
                peer.send(Frame::KvResponse { id, result });
            }
            Frame::PublishWithHistory {
                id,
                policy,
                channel,
                frame,
            } => {
                let publication = Arc::new(Publication::from_frame(channel.clone(), frame));
                // Fanned out under the channel's lock in the store: one channel's publications
                // reach every worker in offset order.
                let result = broker
                    .history
                    .append_with(publication, policy, |positioned| {
                        let Some(position) = positioned.position() else {
                            return;
                        };
                        for sub in broker.subscribers(&channel).iter().flat_map(|s| s.iter()) {
                            sub.send(Frame::DeliverAt {
                                position: position.clone(),
                                channel: channel.clone(),
                                frame: positioned.frame.clone(),
                            });
                        }
                    });
                match result {
                    Ok((position, ())) => peer.send(Frame::KvResponse {
                        id,
                        result: serde_json::json!(position),
                    }),
                    Err(e) => peer.send(Frame::Error {
                        id,
                        message: e.to_string(),
                    }),
                }
            }
            Frame::HistoryRequest { id, query } => {
                let policy = HistoryPolicy::new(query.size, Duration::from_millis(query.ttl_ms));
                let answer = broker
                    .history
                    .since(&query.channel, query.since.as_ref(), policy);
                let result = HistoryQuery::encode_answer(&answer);
                peer.send(Frame::KvResponse { id, result });
            }
            Frame::PresenceRequest { id, op } => {
                let (result, event) = broker.presence.apply(peer.id, op);
                if let Some((channel, frame)) = event {
                    broker.presence_event(&channel, &frame.into());
                }
                peer.send(Frame::KvResponse { id, result });
            }
            Frame::Ping { id } => peer.send(Frame::Ack { id }),
            Frame::Hello { .. }
            | Frame::PresenceEvent { .. }
            | Frame::Deliver { .. }
            | Frame::DeliverAt { .. }
            | Frame::KvResponse { .. }
            | Frame::Ack { .. }
            | Frame::Error { .. } => {
                return Err("a worker sent a frame only brokers send".into());
            }
        }
    }
    Ok(())
}

/// Writes queued frames, batching whatever is queued into one write. A frame that cannot be
/// encoded (a key-value result over the frame limit) is answered with [`Frame::Error`].
async fn write_loop(mut write: OwnedWriteHalf, mut queue: PeerQueue) -> Result<(), WireError> {
    let mut codec = BrokerCodec::new();
    let mut buf = BytesMut::new();
    while let Some(first) = queue.rx.recv().await {
        let mut next = Some(first);
        // Released only once written: the bytes in flight count against the bound too.
        let mut batch = 0;
        while let Some((frame, size)) = next.take() {
            batch += size;
            encode_or_refuse(&mut codec, frame, &mut buf)?;
            if buf.len() >= 64 * 1024 {
                break;
            }
            next = queue.rx.try_recv().ok();
        }
        write.write_all_buf(&mut buf).await?;
        queue.queued.fetch_sub(batch, Ordering::AcqRel);
    }
    Ok(())
}

fn encode_or_refuse(
    codec: &mut BrokerCodec,
    frame: Frame,
    buf: &mut BytesMut,
) -> Result<(), WireError> {
    let id = match &frame {
        Frame::KvResponse { id, .. } => Some(*id),
        _ => None,
    };
    match (codec.encode(frame, buf), id) {
        (Ok(()), _) => Ok(()),
        (Err(e), Some(id)) => {
            tracing::warn!(request = id, error = %e, "key-value result not sent");
            codec.encode(
                Frame::Error {
                    id,
                    message: format!("the result could not be sent: {e}"),
                },
                buf,
            )
        }
        (Err(e), None) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::SinkExt;
    use tokio_util::codec::Framed;

    type Link = Framed<UnixStream, BrokerCodec>;

    /// A worker link: hello, then a subscription to `channel`, acked.
    async fn link(path: &std::path::Path, channel: &str) -> Link {
        let stream = UnixStream::connect(path).await.expect("connect");
        let mut link = Framed::new(stream, BrokerCodec::new());
        link.send(Frame::Hello {
            version: VERSION,
            secret: Bytes::new(),
        })
        .await
        .expect("hello");
        link.send(Frame::Subscribe {
            id: 1,
            channel: channel.into(),
        })
        .await
        .expect("subscribe");
        match link.next().await {
            Some(Ok(Frame::Ack { id: 1 })) => link,
            other => panic!("expected the subscription's ack, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_worker_that_stops_reading_is_dropped_at_its_byte_bound_and_others_go_on() {
        let dir = std::env::temp_dir().join(format!("sc-broker-queue-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("b.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let broker = tokio::spawn(serve_with(listener, Bytes::new(), 1024 * 1024));

        let mut slow = link(&path, "ch").await;
        let (mut publisher, mut deliveries) = link(&path, "ch").await.split();
        const N: u64 = 100;
        // The publisher reads its own deliveries as they come: it is the fast reader.
        let reader = tokio::spawn(async move {
            let mut delivered = 0;
            while delivered < N {
                match deliveries.next().await {
                    Some(Ok(Frame::Deliver { .. })) => delivered += 1,
                    Some(Ok(_)) => {}
                    other => panic!("the fast worker's link ended: {other:?}"),
                }
            }
            delivered
        });
        // 100 publications of 64 KiB: 6.4 MiB for each subscriber, far over the 1 MiB bound
        // plus what the socket buffers hold (old bound: 65,536 frames, never reached here).
        let frame: axum::extract::ws::Utf8Bytes = "x".repeat(64 * 1024).into();
        for id in 0..N {
            publisher
                .send(Frame::Publish {
                    id: 10 + id,
                    channel: "ch".into(),
                    frame: frame.clone(),
                })
                .await
                .expect("publish");
        }
        let delivered = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the fast worker gets every publication within 10 s")
            .expect("reader");
        assert_eq!(delivered, N);
        // The slow worker's link is closed once it reads what was written before the drop.
        let mut got = 0;
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match slow.next().await {
                    Some(Ok(_)) => got += 1,
                    Some(Err(_)) | None => return,
                }
            }
        })
        .await;
        assert!(end.is_ok(), "the slow worker's link was not closed");
        assert!(got < N, "it got {got} of {N} frames before the drop");
        broker.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
