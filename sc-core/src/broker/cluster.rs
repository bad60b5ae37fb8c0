//! [`ClusterBroker`]: the broker engine of a worker in a multi-process cluster. It keeps one
//! connection to each broker process ([`serve`](super::server::serve)) and shards channels and
//! key-value keys over them with [`broker_index`].
//!
//! ```no_run
//! # async fn worker() -> sc_core::Result<()> {
//! use sc_core::broker::ClusterBroker;
//! use sc_core::SocketCluster;
//!
//! let brokers = vec!["/tmp/my-app/b0.sock".into(), "/tmp/my-app/b1.sock".into()];
//! SocketCluster::builder()
//!     .broker_engine(ClusterBroker::new(brokers))
//!     .serve_until(std::future::pending())
//!     .await
//! # }
//! ```
//!
//! - `subscribe` / `unsubscribe` go to the broker that owns the channel. The engine counts what
//!   the worker needs per channel and remembers it while a broker is away: a subscribe made while
//!   the broker is down succeeds at once and is sent when it is back (nothing can be published on
//!   that channel meanwhile, since the same broker carries it).
//! - `publish` returns once the owning broker accepted the message (forwarded it to every
//!   subscribed worker, this one included); while that broker is down (not connected, or
//!   connected but not yet confirmed with every subscription restored) it fails at once with
//!   [`BrokerError::Unavailable`], and a broker that does not answer within
//!   [`ClusterOptions::request_timeout`] gives the same error. Local subscribers get the message
//!   back from the broker like everyone else.
//! - Key-value operations go to the broker that owns the key; `Count` asks every broker and adds
//!   up, `Expire` / `Unexpire` split their keys by owner.
//! - A broker that goes away is reconnected with backoff ([`ClusterOptions::reconnect_delay`]
//!   doubling up to [`ClusterOptions::max_reconnect_delay`], each delay randomised between half
//!   and all of it); once back, every channel the worker still needs from it is subscribed again.
//!   The loss is logged as a warning, the restoration as info. Its key-value data is gone (as in
//!   the reference).
//! - Frames for a broker wait in an unbounded queue, but every publish and key-value request
//!   waits for its answer, so the queue holds at most what is in flight. Publications from a
//!   broker wait in a bounded queue (1024) for the worker's registry: a worker that cannot keep
//!   up stops reading, and the broker drops it once its own queue is full (see
//!   [`server`](super::server)).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{join_all, try_join_all};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use serde::Deserialize;

use super::history::{HistoryPolicy, HistorySince, Position};
use super::kv::KvOp;
use super::presence::PresenceOp;
use super::wire::{Frame, HistoryQuery};
use super::{BoxFuture, BrokerEngine, BrokerError, DeliverySink, PresenceEntry, Publication};
use axum::extract::ws::Utf8Bytes;

mod link;
use link::{run_link, Link, LinkState};

/// The hash that shards names over brokers: Java's `String.hashCode` over the name's UTF-16 code
/// units (`h = 31 * h + unit`, wrapping at 32 bits, from 0), the hash sc1's stores and
/// `sc-hasher` are built on.
///
/// (`sc-hasher` as published seeds `h` with the key itself, which in JavaScript makes a
/// non-numeric key skip its first character; we hash every unit. Only our own processes ever
/// agree on an owner, so matching that quirk buys nothing.)
pub fn name_hash(name: &str) -> i32 {
    name.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The broker (`0..brokers`) that owns a channel or key: `|name_hash(name)| % brokers` (the
/// absolute value taken without overflow, as JavaScript's `Math.abs` does). `0` when `brokers`
/// is 0.
pub fn broker_index(name: &str, brokers: usize) -> usize {
    let h = name_hash(name).unsigned_abs() as usize;
    h.checked_rem(brokers).unwrap_or(0)
}

/// Tuning for [`ClusterBroker`]. Start from `ClusterOptions::default()`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterOptions {
    /// How long a request (publish, subscribe, key-value) waits for its broker's answer before
    /// failing with [`BrokerError::Unavailable`]. Default 5000 ms. Also bounds how long `start`
    /// waits for the first connections.
    pub request_timeout: Duration,
    /// The first reconnection delay. Default 100 ms.
    pub reconnect_delay: Duration,
    /// The longest reconnection delay. Default 2000 ms.
    pub max_reconnect_delay: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_millis(5000),
            reconnect_delay: Duration::from_millis(100),
            max_reconnect_delay: Duration::from_millis(2000),
        }
    }
}

impl ClusterOptions {
    /// The delay before reconnection attempt `attempt` (0-based): doubling from
    /// `reconnect_delay` up to `max_reconnect_delay`, then randomised between half and all of it.
    fn backoff(&self, attempt: u32) -> Duration {
        let full = self
            .reconnect_delay
            .saturating_mul(2u32.saturating_pow(attempt.min(20)))
            .min(self.max_reconnect_delay);
        full / 2 + full.mul_f64(rand::random::<f64>() / 2.0)
    }
}

/// How long connecting to a broker's socket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Publications received from one broker waiting for the worker's registry.
const DELIVERY_QUEUE: usize = 1024;

/// Bytes gathered before one write to a broker.
const WRITE_BATCH: usize = 64 * 1024;

/// The broker engine of a worker talking to broker processes. Cheap to clone (clones share the
/// connections); the connections close when the last clone is dropped.
#[derive(Clone)]
pub struct ClusterBroker {
    inner: Arc<Inner>,
}

struct Inner {
    links: Vec<Arc<Link>>,
    options: ClusterOptions,
    started: OnceLock<()>,
    shutdown: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl std::fmt::Debug for ClusterBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let brokers: Vec<_> = self
            .inner
            .links
            .iter()
            .map(|l| (l.path.display().to_string(), l.lock().restored))
            .collect();
        f.debug_struct("ClusterBroker")
            .field("brokers", &brokers)
            .finish_non_exhaustive()
    }
}

impl ClusterBroker {
    /// An engine for the brokers listening on `paths` (broker `i` at `paths[i]`; every worker
    /// must list them in the same order). Connections are made by `start`.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self::with_options(paths, ClusterOptions::default())
    }

    /// [`ClusterBroker::new`] with tuning.
    pub fn with_options(paths: Vec<PathBuf>, options: ClusterOptions) -> Self {
        Self::with_secret(paths, options, Bytes::new())
    }

    /// [`ClusterBroker::with_options`] for brokers that admit only a hello carrying `secret`
    /// ([`serve_with`](super::server::serve_with)).
    pub fn with_secret(paths: Vec<PathBuf>, options: ClusterOptions, secret: Bytes) -> Self {
        let links = paths
            .into_iter()
            .enumerate()
            .map(|(index, path)| {
                Arc::new(Link {
                    index,
                    path,
                    secret: secret.clone(),
                    next_id: AtomicU64::new(1),
                    state: Mutex::new(LinkState::default()),
                })
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                links,
                options,
                started: OnceLock::new(),
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// The number of brokers.
    pub fn brokers(&self) -> usize {
        self.inner.links.len()
    }

    /// The broker that owns a channel or key ([`broker_index`]).
    pub fn broker_for(&self, name: &str) -> usize {
        broker_index(name, self.brokers())
    }

    /// Whether broker `broker` is connected and every channel this worker needs from it is
    /// subscribed there.
    pub fn is_connected(&self, broker: usize) -> bool {
        self.inner
            .links
            .get(broker)
            .is_some_and(|l| l.lock().restored)
    }

    fn link_for(&self, name: &str) -> Result<&Arc<Link>, BrokerError> {
        let links = &self.inner.links;
        links
            .get(broker_index(name, links.len()))
            .ok_or_else(|| BrokerError::Unavailable("no broker processes are configured".into()))
    }

    async fn subscribe_at(&self, channel: &str) -> Result<(), BrokerError> {
        let link = self.link_for(channel)?;
        let channel: Arc<str> = channel.into();
        let (id, reply) = {
            let mut st = link.lock();
            let count = st.channels.entry(channel.clone()).or_insert(0);
            *count += 1;
            if *count > 1 {
                return Ok(());
            }
            let Some(conn) = st.conn.clone() else {
                // Remembered: subscribed when the broker is back.
                return Ok(());
            };
            if !st.restored {
                // A connection that the broker has not confirmed yet (its resubscription is in
                // flight): queued behind it, remembered for the next connection.
                let _ = conn.send(Frame::Subscribe {
                    id: 0,
                    channel: channel.clone(),
                });
                return Ok(());
            }
            let id = link.next_id();
            let (tx, rx) = oneshot::channel();
            st.pending.insert(id, tx);
            // A closed writer means the connection is going down: the channel is subscribed
            // again on reconnection.
            let _ = conn.send(Frame::Subscribe {
                id,
                channel: channel.clone(),
            });
            (id, rx)
        };
        let timeout = self.inner.options.request_timeout;
        let error = match tokio::time::timeout(timeout, reply).await {
            Ok(Ok(Ok(_))) => return Ok(()),
            // The connection was lost first; restored on reconnection.
            Ok(Err(_)) => return Ok(()),
            Ok(Ok(Err(e))) => e,
            Err(_) => link.timed_out(id, timeout),
        };
        link.release(&channel);
        Err(error)
    }

    /// One request to the broker that owns `name`, within the request timeout.
    async fn ask(
        &self,
        name: &str,
        frame: impl FnOnce(u64) -> Frame,
    ) -> Result<Value, BrokerError> {
        let link = self.link_for(name)?;
        link.request(frame, self.inner.options.request_timeout)
            .await
    }

    async fn kv_at(&self, op: KvOp) -> Result<Value, BrokerError> {
        let links = &self.inner.links;
        let timeout = self.inner.options.request_timeout;
        if links.is_empty() {
            return Err(BrokerError::Unavailable(
                "no broker processes are configured".into(),
            ));
        }
        let (keys, ms) = match op {
            KvOp::Count => {
                let counts = try_join_all(links.iter().map(|link| {
                    link.request(
                        |id| Frame::KvRequest {
                            id,
                            op: KvOp::Count,
                        },
                        timeout,
                    )
                }))
                .await?;
                return sum_counts(counts);
            }
            KvOp::Expire { keys, ms } => (keys, Some(ms)),
            KvOp::Unexpire { keys } => (keys, None),
            op => {
                let index = op.key().map_or(0, |k| broker_index(k, links.len()));
                return links[index]
                    .request(|id| Frame::KvRequest { id, op }, timeout)
                    .await;
            }
        };
        let mut by_owner: HashMap<usize, Vec<String>> = HashMap::new();
        for key in keys {
            by_owner
                .entry(broker_index(&key, links.len()))
                .or_default()
                .push(key);
        }
        let counts = try_join_all(by_owner.into_iter().map(|(index, keys)| {
            let op = match ms {
                Some(ms) => KvOp::Expire { keys, ms },
                None => KvOp::Unexpire { keys },
            };
            links[index].request(|id| Frame::KvRequest { id, op }, timeout)
        }))
        .await?;
        sum_counts(counts)
    }
}

fn sum_counts(counts: Vec<Value>) -> Result<Value, BrokerError> {
    let mut total = 0u64;
    for c in counts {
        let n = c
            .as_u64()
            .ok_or_else(|| BrokerError::Decode(format!("a broker answered a count with {c}")))?;
        total = total.saturating_add(n);
    }
    Ok(Value::from(total))
}

impl BrokerEngine for ClusterBroker {
    /// Starts one connection task per broker and waits (at most `request_timeout`) for each
    /// one's first attempt. Brokers that are not up yet are retried in the background: `start`
    /// never fails. The sink is held weakly (it owns this engine).
    fn start(&self, sink: Weak<dyn DeliverySink>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            if self.inner.started.set(()).is_err() {
                return Ok(());
            }
            let mut first_attempts = Vec::new();
            for link in &self.inner.links {
                let (tx, rx) = oneshot::channel();
                tokio::spawn(run_link(
                    link.clone(),
                    sink.clone(),
                    self.inner.options.clone(),
                    self.inner.shutdown.clone(),
                    tx,
                ));
                first_attempts.push(rx);
            }
            let wait = self.inner.options.request_timeout;
            let _ = tokio::time::timeout(wait, join_all(first_attempts)).await;
            Ok(())
        })
    }

    fn subscribe(&self, channel: &str) -> BoxFuture<'_, Result<(), BrokerError>> {
        let channel = channel.to_owned();
        Box::pin(async move { self.subscribe_at(&channel).await })
    }

    fn unsubscribe(&self, channel: &str) -> BoxFuture<'_, Result<(), BrokerError>> {
        let result = self.link_for(channel).map(|link| link.release(channel));
        Box::pin(async move { result })
    }

    fn publish(&self, publication: Arc<Publication>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let (channel, frame) = (publication.channel.clone(), publication.frame.clone());
            self.ask(&publication.channel, |id| Frame::Publish {
                id,
                channel,
                frame,
            })
            .await
            .map(drop)
        })
    }

    /// The frame goes into the broker link's queue before the first wait (`Link::request`).
    fn publish_queued_on_first_poll(&self) -> bool {
        true
    }

    fn supports_history(&self) -> bool {
        true
    }

    fn publish_with_history(
        &self,
        publication: Arc<Publication>,
        policy: HistoryPolicy,
    ) -> BoxFuture<'_, Result<Position, BrokerError>> {
        Box::pin(async move {
            let (channel, frame) = (publication.channel.clone(), publication.frame.clone());
            let answer = self
                .ask(&publication.channel, |id| Frame::PublishWithHistory {
                    id,
                    policy,
                    channel,
                    frame,
                })
                .await?;
            Position::deserialize(&answer).map_err(|e| BrokerError::Decode(e.to_string()))
        })
    }

    fn history(
        &self,
        channel: &str,
        since: Option<Position>,
        policy: HistoryPolicy,
    ) -> BoxFuture<'_, Result<HistorySince, BrokerError>> {
        let query = HistoryQuery::new(channel, since, policy);
        let channel: Arc<str> = channel.into();
        Box::pin(async move {
            let answer = self
                .ask(&channel, |id| Frame::HistoryRequest { id, query })
                .await?;
            HistoryQuery::decode_answer(channel, answer)
        })
    }

    fn kv(&self, op: KvOp) -> BoxFuture<'_, Result<Value, BrokerError>> {
        Box::pin(self.kv_at(op))
    }

    fn supports_presence(&self) -> bool {
        true
    }

    fn presence_join(
        &self,
        channel: &str,
        entry: PresenceEntry,
        join_leave: bool,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        let link = self.link_for(channel).cloned();
        let channel = channel.to_owned();
        Box::pin(async move {
            let Some(answer) = link?.presence_join(&channel, entry, join_leave) else {
                // Remembered: sent when the broker is (back) up.
                return Ok(());
            };
            let timeout = self.inner.options.request_timeout;
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(result)) => result.map(drop),
                // The connection was lost first: sent again on reconnection.
                Ok(Err(_)) => Ok(()),
                Err(_) => Err(BrokerError::Unavailable(format!(
                    "the broker did not confirm a presence join within {} ms",
                    timeout.as_millis()
                ))),
            }
        })
    }

    fn presence_leave(
        &self,
        channel: &str,
        socket: &str,
    ) -> BoxFuture<'_, Result<Option<PresenceEntry>, BrokerError>> {
        let left = self
            .link_for(channel)
            .map(|link| link.presence_leave(channel, socket));
        Box::pin(async move { left })
    }

    fn presence(&self, channel: &str) -> BoxFuture<'_, Result<Vec<PresenceEntry>, BrokerError>> {
        let op = PresenceOp::Query {
            channel: channel.to_owned(),
        };
        let channel = channel.to_owned();
        Box::pin(async move {
            let answer = self
                .ask(&channel, |id| Frame::PresenceRequest { id, op })
                .await?;
            serde_json::from_value(answer).map_err(|e| BrokerError::Decode(e.to_string()))
        })
    }

    fn presence_event(
        &self,
        channel: &str,
        frame: Utf8Bytes,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        let op = PresenceOp::Event {
            channel: channel.to_owned(),
            frame: frame.to_string(),
        };
        let channel = channel.to_owned();
        Box::pin(async move {
            self.ask(&channel, |id| Frame::PresenceRequest { id, op })
                .await
                .map(drop)
        })
    }

    /// Ends every link's connection task (each closes its connection and its delivery task).
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.inner.shutdown.cancel();
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_javas_string_hash_code() {
        assert_eq!(name_hash(""), 0);
        assert_eq!(name_hash("a"), 97);
        assert_eq!(name_hash("hello"), 99_162_322);
        // The classic collision, and the string whose hash is i32::MIN.
        assert_eq!(name_hash("Aa"), name_hash("BB"));
        assert_eq!(name_hash("polygenelubricants"), i32::MIN);
        // UTF-16 units, not bytes or chars: U+1F600 is the pair D83D DE00.
        assert_eq!(name_hash("\u{1F600}"), 0xD83D * 31 + 0xDE00);
        assert_eq!(name_hash("é"), 0xE9);
    }

    #[test]
    fn broker_index_is_the_absolute_hash_modulo_the_count() {
        assert_eq!(broker_index("hello", 3), 99_162_322 % 3);
        // |i32::MIN| = 2^31 does not overflow; 2^31 % 3 == 2.
        assert_eq!(broker_index("polygenelubricants", 3), 2);
        // A negative hash: its absolute value is taken.
        assert_eq!(name_hash("rooms/42"), -172_451_595);
        assert_eq!(broker_index("rooms/42", 7), 172_451_595 % 7);
        assert_eq!(broker_index("anything", 1), 0);
        assert_eq!(broker_index("anything", 0), 0);
        // Spread: 1000 channels over 4 brokers all get a fair share.
        let mut counts = [0usize; 4];
        for i in 0..1000 {
            counts[broker_index(&format!("rooms/{i}"), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 150), "{counts:?}");
    }

    #[test]
    fn backoff_doubles_to_the_maximum_with_jitter() {
        let o = ClusterOptions::default();
        for _ in 0..50 {
            let d0 = o.backoff(0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
            let d3 = o.backoff(3);
            assert!(d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800));
            let d = o.backoff(u32::MAX);
            assert!(d >= Duration::from_millis(1000) && d <= Duration::from_millis(2000));
        }
    }

    #[tokio::test]
    async fn without_brokers_everything_fails_fast() {
        let engine = ClusterBroker::new(Vec::new());
        let publication = Arc::new(Publication::new("c", None).expect("encodes"));
        assert!(matches!(
            engine.publish(publication).await,
            Err(BrokerError::Unavailable(_))
        ));
        assert!(matches!(
            engine.kv(KvOp::Count).await,
            Err(BrokerError::Unavailable(_))
        ));
        assert!(!engine.is_connected(0));
    }
}
