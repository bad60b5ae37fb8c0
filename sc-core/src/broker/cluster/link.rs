//! One worker's link to one broker process: the connection task that connects and reconnects
//! (with backoff), restores the worker's subscriptions on every new connection, matches the
//! broker's answers to requests by id, and hands deliveries to the worker's sink in order.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Encoder, FramedRead};
use tokio_util::sync::CancellationToken;

use super::super::presence::{encode_resync, PresenceOp};
use super::super::wire::{BrokerCodec, Frame, VERSION};
use super::super::{BrokerError, DeliverySink, PresenceEntry, Publication};
use super::{ClusterOptions, CONNECT_TIMEOUT, DELIVERY_QUEUE, WRITE_BATCH};

type Reply = oneshot::Sender<Result<Value, BrokerError>>;

/// The worker's side of one broker.
pub(super) struct Link {
    pub(super) index: usize,
    pub(super) path: PathBuf,
    /// Sent in every hello (the cluster's per-run secret; empty outside one).
    pub(super) secret: Bytes,
    pub(super) next_id: AtomicU64,
    pub(super) state: Mutex<LinkState>,
}

#[derive(Default)]
pub(super) struct LinkState {
    /// The connection's writer queue, while connected.
    pub(super) conn: Option<mpsc::UnboundedSender<Frame>>,
    /// Connected and every needed channel subscribed again.
    pub(super) restored: bool,
    /// How many times the worker's registry subscribed each channel minus how many times it
    /// unsubscribed it (1 in steady state): the channels this worker needs from this broker.
    pub(super) channels: HashMap<Arc<str>, usize>,
    /// Requests waiting for their answer on the current connection.
    pub(super) pending: HashMap<u64, Reply>,
    /// The presence entries this worker added on channels this broker owns (and whether each
    /// channel has join/leave events), by channel and socket: sent again on every new
    /// connection, as a restarted broker has none of them.
    pub(super) presence: HashMap<String, HashMap<String, (PresenceEntry, bool)>>,
}

impl Link {
    pub(super) fn lock(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn next_id(&self) -> u64 {
        // Never 0 (0 means "no ack" on the wire).
        self.next_id.fetch_add(1, Ordering::Relaxed).max(1)
    }

    pub(super) fn down_error(&self) -> BrokerError {
        BrokerError::Unavailable(format!(
            "broker {} ({}) is not connected",
            self.index,
            self.path.display()
        ))
    }

    /// Sends a request and waits for its answer.
    pub(super) async fn request(
        &self,
        make: impl FnOnce(u64) -> Frame,
        timeout: Duration,
    ) -> Result<Value, BrokerError> {
        let (id, reply) = {
            let mut st = self.lock();
            // Only on a connection the broker confirmed: a broker process that is not up yet
            // (its socket held by the master, nobody accepting) must fail requests fast too.
            let Some(conn) = st.conn.as_ref().filter(|_| st.restored) else {
                return Err(self.down_error());
            };
            let id = self.next_id();
            if conn.send(make(id)).is_err() {
                return Err(self.down_error());
            }
            let (tx, rx) = oneshot::channel();
            st.pending.insert(id, tx);
            (id, rx)
        };
        match tokio::time::timeout(timeout, reply).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(BrokerError::Unavailable(format!(
                "the connection to broker {} ({}) was lost before it answered",
                self.index,
                self.path.display()
            ))),
            Err(_) => Err(self.timed_out(id, timeout)),
        }
    }

    pub(super) fn timed_out(&self, id: u64, timeout: Duration) -> BrokerError {
        self.lock().pending.remove(&id);
        BrokerError::Unavailable(format!(
            "broker {} ({}) did not answer within {} ms",
            self.index,
            self.path.display(),
            timeout.as_millis()
        ))
    }

    pub(super) fn resolve(&self, id: u64, result: Result<Value, BrokerError>) {
        if let Some(reply) = self.lock().pending.remove(&id) {
            let _ = reply.send(result);
        }
    }

    /// The worker needs `channel` once less; unsubscribes it at the broker when no longer needed.
    pub(super) fn release(&self, channel: &str) {
        let mut st = self.lock();
        let Some(count) = st.channels.get_mut(channel) else {
            return;
        };
        *count = count.saturating_sub(1);
        if *count > 0 {
            return;
        }
        st.channels.remove(channel);
        if let Some(conn) = &st.conn {
            let _ = conn.send(Frame::Unsubscribe {
                channel: channel.into(),
            });
        }
    }

    /// Remembers `entry` on `channel` and sends it to the broker; on a confirmed connection,
    /// the receiver answers once the broker has it (otherwise it is sent on the connection being
    /// confirmed, or on the next one).
    pub(super) fn presence_join(
        &self,
        channel: &str,
        entry: PresenceEntry,
        join_leave: bool,
    ) -> Option<oneshot::Receiver<Result<Value, BrokerError>>> {
        let mut st = self.lock();
        st.presence
            .entry(channel.to_owned())
            .or_default()
            .insert(entry.socket.clone(), (entry.clone(), join_leave));
        let conn = st.conn.clone()?;
        let id = self.next_id();
        let op = PresenceOp::Join {
            channel: channel.to_owned(),
            entry,
            join_leave,
        };
        if conn.send(Frame::PresenceRequest { id, op }).is_err() || !st.restored {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        st.pending.insert(id, tx);
        Some(rx)
    }

    /// Forgets `socket`'s entry on `channel` and tells the broker (unanswered: the entry
    /// removed is the one remembered here).
    pub(super) fn presence_leave(&self, channel: &str, socket: &str) -> Option<PresenceEntry> {
        let mut st = self.lock();
        let members = st.presence.get_mut(channel)?;
        let (entry, _) = members.remove(socket)?;
        if members.is_empty() {
            st.presence.remove(channel);
        }
        if let Some(conn) = &st.conn {
            let op = PresenceOp::Leave {
                channel: channel.to_owned(),
                socket: socket.to_owned(),
            };
            let _ = conn.send(Frame::PresenceRequest {
                id: self.next_id(),
                op,
            });
        }
        Some(entry)
    }

    /// Starts using a new connection: queues the hello, a subscribe (without ack) for every
    /// channel needed, every presence entry, and a ping whose ack confirms them all.
    pub(super) fn attach(
        &self,
        conn: mpsc::UnboundedSender<Frame>,
    ) -> oneshot::Receiver<Result<Value, BrokerError>> {
        let mut st = self.lock();
        let _ = conn.send(Frame::Hello {
            version: VERSION,
            secret: self.secret.clone(),
        });
        for channel in st.channels.keys() {
            let _ = conn.send(Frame::Subscribe {
                id: 0,
                channel: channel.clone(),
            });
        }
        for (channel, members) in &st.presence {
            for (entry, join_leave) in members.values() {
                let op = PresenceOp::Join {
                    channel: channel.clone(),
                    entry: entry.clone(),
                    join_leave: *join_leave,
                };
                let _ = conn.send(Frame::PresenceRequest {
                    id: self.next_id(),
                    op,
                });
            }
            // The entries came back without join events (and, after a dropped link, their
            // leaves were announced): the channel's subscribers ask again.
            if members.values().any(|(_, join_leave)| *join_leave) {
                if let Ok(frame) = encode_resync(channel) {
                    let op = PresenceOp::Event {
                        channel: channel.clone(),
                        frame,
                    };
                    let _ = conn.send(Frame::PresenceRequest {
                        id: self.next_id(),
                        op,
                    });
                }
            }
        }
        let id = self.next_id();
        let _ = conn.send(Frame::Ping { id });
        let (tx, rx) = oneshot::channel();
        st.pending.insert(id, tx);
        st.conn = Some(conn);
        rx
    }

    /// Marks the connection restored; returns how many channels it carries for this worker.
    pub(super) fn mark_restored(&self) -> usize {
        let mut st = self.lock();
        st.restored = st.conn.is_some();
        st.channels.len()
    }

    /// Forgets the connection; pending requests fail. Returns whether it had been restored.
    pub(super) fn detach(&self) -> bool {
        let mut st = self.lock();
        st.conn = None;
        st.pending.clear();
        std::mem::take(&mut st.restored)
    }
}

/// Keeps one broker connected until the engine is dropped.
pub(super) async fn run_link(
    link: Arc<Link>,
    sink: Weak<dyn DeliverySink>,
    options: ClusterOptions,
    shutdown: CancellationToken,
    first_attempt: oneshot::Sender<()>,
) {
    let mut first_attempt = Some(first_attempt);
    // Whether a warning was logged since the broker was last up (so its return is logged).
    let mut warned = false;
    let mut attempt = 0u32;
    loop {
        let reason = tokio::select! {
            _ = shutdown.cancelled() => {
                link.detach();
                return;
            }
            reason = session(&link, &sink, &options, &mut first_attempt, &mut warned) => reason,
        };
        let was_up = link.detach();
        let path = link.path.display();
        if was_up {
            tracing::warn!(broker = link.index, %path, %reason, "lost the connection to a broker; reconnecting");
            warned = true;
            attempt = 0;
        } else if !warned {
            tracing::warn!(broker = link.index, %path, %reason, "broker unavailable; retrying");
            warned = true;
        } else {
            tracing::debug!(broker = link.index, %path, %reason, "broker still unavailable");
        }
        if let Some(tx) = first_attempt.take() {
            let _ = tx.send(());
        }
        let delay = options.backoff(attempt);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One connection to a broker, from connect to loss; returns why it ended.
async fn session(
    link: &Link,
    sink: &Weak<dyn DeliverySink>,
    options: &ClusterOptions,
    first_attempt: &mut Option<oneshot::Sender<()>>,
    warned: &mut bool,
) -> String {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&link.path)).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return format!("cannot connect: {e}"),
        Err(_) => {
            return format!(
                "connecting took more than {} ms",
                CONNECT_TIMEOUT.as_millis()
            )
        }
    };
    let (read, write) = stream.into_split();
    let (conn, queue) = mpsc::unbounded_channel();
    let restored = link.attach(conn);
    let (deliveries, delivery_queue) = mpsc::channel(DELIVERY_QUEUE);
    // A task of its own, so that slow local delivery (publish-out middleware) never holds up the
    // answers this connection carries; it drains and ends when the reader is gone.
    tokio::spawn(deliver_loop(delivery_queue, sink.clone()));
    let restore = async {
        match tokio::time::timeout(options.request_timeout, restored).await {
            Ok(Ok(Ok(_))) => {}
            _ => {
                return format!(
                    "the broker did not confirm the subscriptions within {} ms",
                    options.request_timeout.as_millis()
                )
            }
        }
        let channels = link.mark_restored();
        let path = link.path.display();
        if std::mem::take(warned) {
            tracing::info!(broker = link.index, %path, channels, "broker connection restored");
        } else {
            tracing::debug!(broker = link.index, %path, channels, "connected to broker");
        }
        if let Some(tx) = first_attempt.take() {
            let _ = tx.send(());
        }
        std::future::pending().await
    };
    tokio::select! {
        reason = read_loop(link, read, deliveries, sink) => reason,
        reason = write_loop(link, write, queue) => reason,
        reason = restore => reason,
    }
}

async fn read_loop(
    link: &Link,
    read: OwnedReadHalf,
    deliveries: mpsc::Sender<Arc<Publication>>,
    sink: &Weak<dyn DeliverySink>,
) -> String {
    let mut frames = FramedRead::new(read, BrokerCodec::new());
    while let Some(frame) = frames.next().await {
        match frame {
            Ok(Frame::Deliver { channel, frame }) => {
                let publication = Arc::new(Publication::from_frame(channel, frame));
                // Fails only when the sink is gone: nobody to deliver to.
                let _ = deliveries.send(publication).await;
            }
            Ok(Frame::DeliverAt {
                position,
                channel,
                frame,
            }) => {
                let publication =
                    Arc::new(Publication::from_positioned_frame(channel, frame, position));
                let _ = deliveries.send(publication).await;
            }
            Ok(Frame::PresenceEvent { channel, frame }) => {
                if let Some(sink) = sink.upgrade() {
                    sink.deliver_event(&channel, frame);
                }
            }
            Ok(Frame::Ack { id }) => link.resolve(id, Ok(Value::Null)),
            Ok(Frame::KvResponse { id, result }) => link.resolve(id, Ok(result)),
            Ok(Frame::Error { id, message }) => {
                link.resolve(id, Err(BrokerError::Refused(message)))
            }
            Ok(other) => return format!("the broker sent an unexpected {} frame", other.name()),
            Err(e) => return format!("bad frame from the broker: {e}"),
        }
    }
    "the broker closed the connection".into()
}

async fn write_loop(
    link: &Link,
    mut write: OwnedWriteHalf,
    mut queue: mpsc::UnboundedReceiver<Frame>,
) -> String {
    let mut codec = BrokerCodec::new();
    let mut buf = BytesMut::new();
    while let Some(frame) = queue.recv().await {
        let mut next = Some(frame);
        while let Some(frame) = next.take() {
            let id = frame.request_id();
            let name = frame.name();
            if let Err(e) = codec.encode(frame, &mut buf) {
                // Nothing was written: the request fails alone, the connection goes on.
                match id {
                    Some(id) => link.resolve(id, Err(BrokerError::Encode(e.to_string()))),
                    None => {
                        tracing::error!(frame = name, error = %e, "a frame for the broker was not sent")
                    }
                }
            }
            if buf.len() >= WRITE_BATCH {
                break;
            }
            next = queue.try_recv().ok();
        }
        if let Err(e) = write.write_all_buf(&mut buf).await {
            return format!("writing to the broker failed: {e}");
        }
    }
    "the connection was closed".into()
}

async fn deliver_loop(mut queue: mpsc::Receiver<Arc<Publication>>, sink: Weak<dyn DeliverySink>) {
    while let Some(publication) = queue.recv().await {
        let Some(sink) = sink.upgrade() else {
            return;
        };
        sink.deliver(publication).await;
    }
}
