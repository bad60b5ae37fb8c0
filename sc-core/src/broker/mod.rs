//! The broker engine: where pub/sub between workers happens. A worker keeps its own channel
//! registry (`pubsub`) and tells the engine only which channels it needs (once per channel, not
//! per socket) and what to publish; the engine hands every publication on a needed channel back
//! through the [`DeliverySink`] given at start. The engine also fronts the cluster-wide
//! key-value store ([`kv`]).
//!
//! - [`LocalBroker`] (the default) is the in-process engine: one process, publications delivered
//!   directly, an in-process [`KvStore`](kv::KvStore).
//! - [`ClusterBroker`](cluster::ClusterBroker) is the engine of a worker in a multi-process
//!   cluster: it talks to broker processes ([`server::serve`]) over Unix sockets with the
//!   framed protocol of [`wire`]. Channels and keys are sharded over the brokers by
//!   [`cluster::broker_index`].
//! - [`Redis`](redis::Redis) (feature `redis`) joins many nodes through Redis pub/sub, with the
//!   key-value store on Redis.

pub mod cluster;
pub mod history;
pub mod kv;
pub mod presence;
#[cfg(feature = "redis")]
pub mod redis;
// The broker process's side and the wire format between it and the workers: the process model's
// business, public only to sc's own tests (feature `test-util`).
#[cfg(feature = "test-util")]
pub mod server;
#[cfg(not(feature = "test-util"))]
pub(crate) mod server;
#[cfg(feature = "test-util")]
pub mod wire;
#[cfg(not(feature = "test-util"))]
pub(crate) mod wire;

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use serde::Deserialize;
use serde_json::Value;

pub use futures_util::future::BoxFuture;

pub use cluster::ClusterBroker;
pub use history::{HistoryLimits, HistoryPolicy, HistorySince, Position};
pub use kv::{KvOp, KvStore};
pub use presence::{PresenceEntry, PresenceStats};
#[cfg(feature = "redis")]
pub use redis::Redis;

/// One message published on a channel. The `#publish` frame is encoded once, when the message is
/// published, and shared (reference-counted bytes) by every socket it is delivered to.
///
/// A publication that came from a broker process carries only the channel and the frame; its
/// data is parsed from the frame the first time [`Publication::data`] is called (only server-side
/// subscriptions and publish-out middleware need it), so a worker forwards broker traffic to its
/// sockets without touching the JSON.
#[derive(Debug)]
pub struct Publication {
    /// The channel.
    pub channel: Arc<str>,
    /// `{"event":"#publish","data":{"channel":..,"data":..}}`, ready to write (with `"offset"`
    /// and `"epoch"` after `data` on a channel with history: see [`history`]).
    pub frame: Utf8Bytes,
    data: OnceLock<Option<Value>>,
    position: Option<Position>,
}

impl Publication {
    /// Encodes a publication.
    pub fn new(channel: impl Into<Arc<str>>, data: Option<Value>) -> Result<Self, BrokerError> {
        let channel = channel.into();
        let frame = crate::protocol::encode_publish(&channel, data.as_ref())
            .map_err(|e| BrokerError::Encode(e.to_string()))?;
        Ok(Self {
            channel,
            frame: frame.into(),
            data: OnceLock::from(data),
            position: None,
        })
    }

    /// A publication from an already-encoded `#publish` frame (as received from a broker). The
    /// frame is trusted: it is forwarded to sockets as is, and parsed only if [`data`] is asked
    /// for.
    ///
    /// [`data`]: Publication::data
    pub fn from_frame(channel: impl Into<Arc<str>>, frame: Utf8Bytes) -> Self {
        Self {
            channel: channel.into(),
            frame,
            data: OnceLock::new(),
            position: None,
        }
    }

    /// An already-encoded positioned publication (as received from a broker process or Redis):
    /// `frame` must already carry `position` (see [`with_position`](Self::with_position)).
    pub fn from_positioned_frame(
        channel: impl Into<Arc<str>>,
        frame: Utf8Bytes,
        position: Position,
    ) -> Self {
        Self {
            position: Some(position),
            ..Self::from_frame(channel, frame)
        }
    }

    /// Its position in the channel's history (`None` on a channel without history).
    pub fn position(&self) -> Option<&Position> {
        self.position.as_ref()
    }

    /// The same publication at `position`: its frame gets `"offset"` and `"epoch"` after
    /// `data` (spliced in before the frame's closing `}}`, without parsing it again). The data
    /// is not copied: the positioned publication parses it from its frame if asked for (see
    /// [`into_position`](Self::into_position) to move it instead).
    pub fn with_position(&self, position: Position) -> Result<Self, BrokerError> {
        self.positioned(position, OnceLock::new())
    }

    /// [`with_position`](Self::with_position) for a publication the caller may hold the last
    /// reference to: then its parsed data moves to the positioned one (no copy, no parse).
    pub fn into_position(this: Arc<Self>, position: Position) -> Result<Self, BrokerError> {
        match Arc::try_unwrap(this) {
            Ok(mut owned) => {
                let data = std::mem::take(&mut owned.data);
                owned.positioned(position, data)
            }
            Err(shared) => shared.with_position(position),
        }
    }

    fn positioned(
        &self,
        position: Position,
        data: OnceLock<Option<Value>>,
    ) -> Result<Self, BrokerError> {
        let frame = self.frame.as_str();
        let head = frame
            .strip_suffix("}}")
            .ok_or_else(|| BrokerError::Encode("a #publish frame must end with }}".into()))?;
        let epoch = serde_json::to_string(&position.epoch)
            .map_err(|e| BrokerError::Encode(e.to_string()))?;
        let spliced = format!(
            "{head},\"offset\":{},\"epoch\":{epoch}}}}}",
            position.offset
        );
        Ok(Self {
            channel: self.channel.clone(),
            frame: spliced.into(),
            data,
            position: Some(position),
        })
    }

    /// The published data (`None`: published without data). Parsed from the frame on first use
    /// for publications received from a broker; a frame that does not parse gives `None` (and a
    /// warning in the log).
    pub fn data(&self) -> Option<&Value> {
        self.data
            .get_or_init(|| parse_publish_data(&self.channel, self.frame.as_str()))
            .as_ref()
    }
}

/// The `data` of a `#publish` frame: absent -> `None`, `null` -> `Some(Value::Null)` (as
/// [`Publication::new`] was given).
fn parse_publish_data(channel: &str, frame: &str) -> Option<Value> {
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
        Value::deserialize(d).map(Some)
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default, deserialize_with = "present")]
        data: Option<Value>,
    }
    #[derive(Deserialize)]
    struct Outer {
        data: Inner,
    }
    match serde_json::from_str::<Outer>(frame) {
        Ok(outer) => outer.data.data,
        Err(e) => {
            tracing::warn!(%channel, error = %e, "a #publish frame from the broker does not parse");
            None
        }
    }
}

/// A failure of the broker engine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The engine is not reachable right now (it reconnects by itself).
    #[error("the broker is unavailable: {0}")]
    Unavailable(String),
    /// The message could not be encoded.
    #[error("the message could not be encoded: {0}")]
    Encode(String),
    /// The engine does not support this operation.
    #[error("the broker engine does not support {0}")]
    Unsupported(&'static str),
    /// The broker answered the request with an error.
    #[error("the broker refused the request: {0}")]
    Refused(String),
    /// A stored value does not have the type the caller asked for (key-value store).
    #[error("the stored value could not be decoded: {0}")]
    Decode(String),
}

impl From<BrokerError> for crate::protocol::ScError {
    fn from(e: BrokerError) -> Self {
        crate::protocol::ScError::broker(e.to_string())
    }
}

/// Where the engine delivers publications for the channels the worker subscribed to.
pub trait DeliverySink: Send + Sync + 'static {
    /// Delivers to every local subscriber of the publication's channel. The future completes when
    /// the message has been handed to every local socket queue.
    fn deliver(&self, publication: Arc<Publication>) -> BoxFuture<'_, ()>;
    /// Writes an encoded `#presence` event (see [`presence::encode_event`]) to every local socket
    /// subscribed to `channel`; server-side subscriptions and publish-out middleware do not see
    /// it (it is not a publication).
    fn deliver_event(&self, channel: &str, frame: Utf8Bytes) {
        let _ = (channel, frame);
    }
}

/// A pub/sub engine shared by the workers of a cluster (or of many clusters).
///
/// Ownership: the server owns the engine (through its channel registry) and the registry is the
/// engine's sink, so an engine holds its sink only weakly: a strong reference would be a cycle
/// that keeps both, and every task the engine runs, alive forever. Every background task an
/// engine starts ends at [`shutdown`](BrokerEngine::shutdown), which the server calls when it
/// stops, or when the engine is dropped.
pub trait BrokerEngine: Send + Sync + 'static {
    /// Called once, before any other method, with the worker's sink (held weakly: see above).
    fn start(&self, sink: Weak<dyn DeliverySink>) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// The worker now has at least one subscriber on `channel`.
    fn subscribe(&self, channel: &str) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// The worker's last subscriber of `channel` left.
    fn unsubscribe(&self, channel: &str) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// Publishes to every worker subscribed to the channel (this one included). Completes when the
    /// engine accepted the message; the in-process engine also completes local delivery first.
    fn publish(&self, publication: Arc<Publication>) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// Whether the first poll of a [`publish`](Self::publish) or
    /// [`publish_with_history`](Self::publish_with_history) future queues the publication for
    /// the engine, in call order, before anything else (what is left is waiting for the answer).
    /// The session then lets a socket's next message start while its publish waits for the
    /// engine's answer, so one socket's publishes do not take a round trip each. Engines that may
    /// wait before queueing keep the default, and a socket's publishes wait for each other.
    fn publish_queued_on_first_poll(&self) -> bool {
        false
    }
    /// Whether the engine keeps channel history ([`publish_with_history`](Self::publish_with_history)
    /// and [`history`](Self::history)). The server refuses to start when history is configured
    /// and its engine says no, rather than failing every publish on those channels.
    fn supports_history(&self) -> bool {
        false
    }
    /// Publishes on a channel with history: the engine gives the publication the channel's next
    /// [`Position`] ([`Publication::with_position`]), keeps it under `policy`, and delivers it
    /// (positioned) to every worker subscribed, like [`publish`](Self::publish). Engines without
    /// history answer [`BrokerError::Unsupported`].
    fn publish_with_history(
        &self,
        publication: Arc<Publication>,
        policy: HistoryPolicy,
    ) -> BoxFuture<'_, Result<Position, BrokerError>> {
        let _ = (publication, policy);
        Box::pin(async { Err(BrokerError::Unsupported("channel history")) })
    }
    /// The channel's kept publications after `since` (every kept one for `None`), and its latest
    /// position: see [`HistorySince`].
    fn history(
        &self,
        channel: &str,
        since: Option<Position>,
        policy: HistoryPolicy,
    ) -> BoxFuture<'_, Result<HistorySince, BrokerError>> {
        let _ = (channel, since, policy);
        Box::pin(async { Err(BrokerError::Unsupported("channel history")) })
    }
    /// Runs one operation on the cluster-wide key-value store (see [`KvOp`] for each operation's
    /// result). Engines without a store answer [`BrokerError::Unsupported`].
    fn kv(&self, op: KvOp) -> BoxFuture<'_, Result<Value, BrokerError>> {
        let _ = op;
        Box::pin(async { Err(BrokerError::Unsupported("key-value store")) })
    }
    /// Stops every background task and closes every connection the engine holds; later calls
    /// fail with [`BrokerError::Unavailable`]. Called once when the server stops.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    /// Whether the engine keeps presence (the `presence_*` methods). The server refuses to start
    /// when presence is configured and its engine says no.
    fn supports_presence(&self) -> bool {
        false
    }
    /// Adds (or replaces) `entry` on `channel`, cluster-wide. `join_leave`: the channel's
    /// subscribers get join/leave events (an engine that notices a dead worker or node on its
    /// own announces its leaves).
    fn presence_join(
        &self,
        channel: &str,
        entry: PresenceEntry,
        join_leave: bool,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        let _ = (channel, entry, join_leave);
        Box::pin(async { Err(BrokerError::Unsupported("presence")) })
    }
    /// Removes `socket`'s entry from `channel`; the entry it had (`None`: it had none).
    fn presence_leave(
        &self,
        channel: &str,
        socket: &str,
    ) -> BoxFuture<'_, Result<Option<PresenceEntry>, BrokerError>> {
        let _ = (channel, socket);
        Box::pin(async { Err(BrokerError::Unsupported("presence")) })
    }
    /// Every entry of `channel`, cluster-wide, in no particular order.
    fn presence(&self, channel: &str) -> BoxFuture<'_, Result<Vec<PresenceEntry>, BrokerError>> {
        let _ = channel;
        Box::pin(async { Err(BrokerError::Unsupported("presence")) })
    }
    /// Sends an encoded `#presence` event to every worker with subscribers on `channel` (this
    /// one included), which writes it to them ([`DeliverySink::deliver_event`]).
    fn presence_event(
        &self,
        channel: &str,
        frame: Utf8Bytes,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        let _ = (channel, frame);
        Box::pin(async { Err(BrokerError::Unsupported("presence")) })
    }
}

/// An engine behind an `Arc` is an engine: the caller keeps a handle (or a `Weak`, to check that
/// a stopped server let go of it).
impl<T: BrokerEngine + ?Sized> BrokerEngine for Arc<T> {
    fn start(&self, sink: Weak<dyn DeliverySink>) -> BoxFuture<'_, Result<(), BrokerError>> {
        (**self).start(sink)
    }
    fn subscribe(&self, channel: &str) -> BoxFuture<'_, Result<(), BrokerError>> {
        (**self).subscribe(channel)
    }
    fn unsubscribe(&self, channel: &str) -> BoxFuture<'_, Result<(), BrokerError>> {
        (**self).unsubscribe(channel)
    }
    fn publish(&self, publication: Arc<Publication>) -> BoxFuture<'_, Result<(), BrokerError>> {
        (**self).publish(publication)
    }
    fn publish_queued_on_first_poll(&self) -> bool {
        (**self).publish_queued_on_first_poll()
    }
    fn supports_history(&self) -> bool {
        (**self).supports_history()
    }
    fn publish_with_history(
        &self,
        publication: Arc<Publication>,
        policy: HistoryPolicy,
    ) -> BoxFuture<'_, Result<Position, BrokerError>> {
        (**self).publish_with_history(publication, policy)
    }
    fn history(
        &self,
        channel: &str,
        since: Option<Position>,
        policy: HistoryPolicy,
    ) -> BoxFuture<'_, Result<HistorySince, BrokerError>> {
        (**self).history(channel, since, policy)
    }
    fn kv(&self, op: KvOp) -> BoxFuture<'_, Result<Value, BrokerError>> {
        (**self).kv(op)
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        (**self).shutdown()
    }
    fn supports_presence(&self) -> bool {
        (**self).supports_presence()
    }
    fn presence_join(
        &self,
        channel: &str,
        entry: PresenceEntry,
        join_leave: bool,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        (**self).presence_join(channel, entry, join_leave)
    }
    fn presence_leave(
        &self,
        channel: &str,
        socket: &str,
    ) -> BoxFuture<'_, Result<Option<PresenceEntry>, BrokerError>> {
        (**self).presence_leave(channel, socket)
    }
    fn presence(&self, channel: &str) -> BoxFuture<'_, Result<Vec<PresenceEntry>, BrokerError>> {
        (**self).presence(channel)
    }
    fn presence_event(
        &self,
        channel: &str,
        frame: Utf8Bytes,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        (**self).presence_event(channel, frame)
    }
}

/// How often an engine's key-value store drops expired keys nobody asked for again.
pub(crate) const KV_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The in-process engine: the default when the cluster has no broker processes.
#[derive(Default)]
pub struct LocalBroker {
    sink: OnceLock<Weak<dyn DeliverySink>>,
    kv: Arc<KvStore>,
    sweeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Channel history, lost with the process: a restart gives every channel a new epoch.
    history: history::HistoryStore,
    /// Presence, lost with the process (and every socket with it).
    presence: presence::PresenceStore,
}

impl LocalBroker {
    /// A new in-process engine.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new in-process engine whose channel history is bounded by `limits` (the default
    /// engine's come from `history_max_bytes` and the other `history_*` options).
    pub fn with_history_limits(limits: HistoryLimits) -> Self {
        Self {
            sink: OnceLock::new(),
            kv: Arc::default(),
            sweeper: Mutex::default(),
            history: history::HistoryStore::with_limits(limits),
            presence: presence::PresenceStore::default(),
        }
    }

    /// What its channel history holds now, as counted against its limits.
    pub fn history_usage(&self) -> history::HistoryUsage {
        self.history.usage()
    }
}

impl BrokerEngine for LocalBroker {
    fn start(&self, sink: Weak<dyn DeliverySink>) -> BoxFuture<'_, Result<(), BrokerError>> {
        if self.sink.set(sink).is_ok() {
            *lock(&self.sweeper) = Some(kv::spawn_sweeper(&self.kv, KV_SWEEP_INTERVAL));
        }
        Box::pin(async { Ok(()) })
    }

    fn subscribe(&self, _channel: &str) -> BoxFuture<'_, Result<(), BrokerError>> {
        // The local registry already knows every subscriber; nothing to tell anyone.
        Box::pin(async { Ok(()) })
    }

    fn unsubscribe(&self, _channel: &str) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async { Ok(()) })
    }

    fn publish(&self, publication: Arc<Publication>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            match self.sink.get().and_then(Weak::upgrade) {
                Some(sink) => {
                    sink.deliver(publication).await;
                    Ok(())
                }
                None => Err(BrokerError::Unavailable(
                    "the local broker is not running".into(),
                )),
            }
        })
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
            let Some(sink) = self.sink.get().and_then(Weak::upgrade) else {
                return Err(BrokerError::Unavailable(
                    "the local broker is not running".into(),
                ));
            };
            // The delivery starts under the channel's lock in the store, so one channel's
            // publications are delivered in offset order (the registry queues them to every
            // socket when called).
            let (position, delivered) =
                self.history
                    .append_with(publication, policy, |positioned| {
                        sink.deliver(positioned.clone())
                    })?;
            delivered.await;
            Ok(position)
        })
    }

    fn history(
        &self,
        channel: &str,
        since: Option<Position>,
        policy: HistoryPolicy,
    ) -> BoxFuture<'_, Result<HistorySince, BrokerError>> {
        let answer = self.history.since(channel, since.as_ref(), policy);
        Box::pin(async move { Ok(answer) })
    }

    fn kv(&self, op: KvOp) -> BoxFuture<'_, Result<Value, BrokerError>> {
        let result = self.kv.apply(op);
        Box::pin(async move { Ok(result) })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        if let Some(sweeper) = lock(&self.sweeper).take() {
            sweeper.abort();
        }
        Box::pin(async {})
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
        self.presence.join(channel, 0, entry, join_leave);
        Box::pin(async { Ok(()) })
    }

    fn presence_leave(
        &self,
        channel: &str,
        socket: &str,
    ) -> BoxFuture<'_, Result<Option<PresenceEntry>, BrokerError>> {
        let left = self.presence.leave(channel, socket);
        Box::pin(async move { Ok(left) })
    }

    fn presence(&self, channel: &str) -> BoxFuture<'_, Result<Vec<PresenceEntry>, BrokerError>> {
        let entries = self.presence.entries(channel);
        Box::pin(async move { Ok(entries) })
    }

    fn presence_event(
        &self,
        channel: &str,
        frame: Utf8Bytes,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        let sink = self.sink.get().and_then(Weak::upgrade);
        if let Some(sink) = &sink {
            sink.deliver_event(channel, frame);
        }
        Box::pin(async move {
            match sink {
                Some(_) => Ok(()),
                None => Err(BrokerError::Unavailable(
                    "the local broker is not running".into(),
                )),
            }
        })
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        if let Some(sweeper) = lock(&self.sweeper).take() {
            sweeper.abort();
        }
    }
}

/// Ends a Redis prefix in every channel and key name (`sc:` + `#` + `chat`), and may not appear in
/// a prefix: the prefix is then everything before the first `#`, so two different prefixes (`sc:`
/// and `sc:app2:`) can never name the same channel or key. Here, not in `redis`, so the option is
/// checked even without the `redis` feature.
pub(crate) const REDIS_SEPARATOR: char = '#';

/// Checks a Redis prefix (see [`REDIS_SEPARATOR`]); the error is one sentence naming the option.
pub(crate) fn validate_redis_prefix(prefix: &str) -> Result<(), String> {
    if prefix.contains(REDIS_SEPARATOR) || prefix.chars().any(char::is_control) {
        return Err(format!(
            "redis_prefix {prefix:?} must not contain '{REDIS_SEPARATOR}' (it ends the prefix in every Redis name, which keeps different prefixes apart) or control characters"
        ));
    }
    Ok(())
}

/// Locks a mutex, recovering from poisoning (no engine code panics while holding one).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn data_is_parsed_lazily_from_the_frame_and_keeps_null_apart_from_absent() {
        for data in [None, Some(Value::Null), Some(json!({"a": [1, "é"]}))] {
            let encoded = Publication::new("ch", data.clone()).expect("encodes");
            let received = Publication::from_frame("ch", encoded.frame.clone());
            assert_eq!(received.data(), data.as_ref());
            assert_eq!(encoded.data(), data.as_ref());
        }
        let broken = Publication::from_frame("ch", Utf8Bytes::from("not json"));
        assert_eq!(broken.data(), None);
    }

    #[test]
    fn a_position_is_spliced_into_the_frame_and_the_data_stays() {
        for data in [None, Some(json!({"text": "}}\"", "n": 1}))] {
            let plain = Publication::new("rooms/1", data.clone()).expect("encodes");
            let position = Position {
                offset: 7,
                epoch: "e\"1".into(),
            };
            let positioned = plain.with_position(position.clone()).expect("splices");
            let frame: Value = serde_json::from_str(positioned.frame.as_str()).expect("json");
            assert_eq!(frame["event"], "#publish");
            assert_eq!(frame["data"]["channel"], "rooms/1");
            assert_eq!(frame["data"]["offset"], 7);
            assert_eq!(frame["data"]["epoch"], "e\"1");
            assert_eq!(frame["data"].get("data"), data.as_ref());
            assert_eq!(positioned.position(), Some(&position));
            assert_eq!(positioned.data(), data.as_ref());
            let received =
                Publication::from_positioned_frame("rooms/1", positioned.frame.clone(), position);
            assert_eq!(received.data(), data.as_ref());
        }
    }
}
