//! The Redis broker engine: many sc nodes (single processes or clusters, on any number of
//! machines) that point at the same Redis share channels and the key-value store.
//!
//! - Each node holds one multiplexed RESP3 connection per Redis instance (redis-rs
//!   `ConnectionManager`: pipelining, reconnect with backoff, automatic resubscription). Channels
//!   and keys are spread over the instances by [`broker_index`](super::cluster::broker_index).
//! - Names: channel `C` is the Redis channel `prefix#C`, key `K` the Redis key `prefix#kv:K`. The
//!   prefix may not contain `#` ([`REDIS_SEPARATOR`](super::REDIS_SEPARATOR)), so it is
//!   everything before the first `#` and two different prefixes never share a name.
//! - A node subscribes to a Redis channel once, when its first local subscriber arrives (the
//!   worker's registry counts sockets), and publishes a message once: `PUBLISH prefix#channel
//!   node-id + frame`, where frame is the `#publish` frame every socket receives. A receiving
//!   node parses the message (its prefix, a node id, a `#publish` frame of
//!   exactly that shape for that channel) before it forwards the frame as is; anything else is
//!   logged and dropped. The publishing node delivers to its own sockets at once and drops its
//!   own message when Redis echoes it back: local delivery keeps working while Redis is down,
//!   and nothing is delivered twice.
//! - Publications go to their instance through one ordered queue each (the `publisher`
//!   submodule): pipelined, in call order, queued when the publish future is first polled.
//! - Received messages wait for delivery in a queue bounded in bytes per Redis instance
//!   ([`Redis::queue_bytes`]); while it is full, new messages are dropped, counted and logged
//!   (Redis pub/sub cannot be slowed down, and its connection also carries the key-value
//!   commands, so dropping it would lose more).
//! - Redis down: publishes (after local delivery) and subscribes fail at once with
//!   [`BrokerError::Unavailable`]; a watchdog pings every second, which keeps reconnection going,
//!   and logs the loss and the recovery. Subscriptions are restored by the connection manager.
//! - Channel history (the `history` submodule): a Redis Stream per channel, positioned and published by one
//!   Lua script; positioned publications reach the publishing node's sockets through Redis too.
//! - Presence (the `presence` submodule): a hash per channel, each entry tagged with its node,
//!   whose key each live node keeps alive: a dead node's entries stop counting within
//!   `NODE_TTL` (6 s) and their leaves are announced within about 8 s.
//! - The key-value store (the `kv` submodule) keeps [`KvOp`]'s semantics with one Redis command
//!   or Lua script per operation (atomic per key): scalars as JSON strings, lists as Redis lists
//!   of JSON elements.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::PushInfo;
use serde_json::Value;
use tokio::sync::mpsc;

use super::cluster::broker_index;
use super::{
    lock, BoxFuture, BrokerEngine, BrokerError, DeliverySink, HistoryPolicy, HistorySince, KvOp,
    Position, Publication, REDIS_SEPARATOR,
};
use inbound::{read_pushes, PushQueue};

mod history;
mod inbound;
mod kv;
mod presence;
mod presence_lua;
mod publisher;

/// Length of the node id that prefixes every message (hex).
const NODE_ID_LEN: usize = 16;

/// The Redis engine. `Redis::new("redis://127.0.0.1:6379")`, or several URLs with
/// [`Redis::with_urls`]; pass it to `SocketCluster::builder().broker_engine(..)`
/// or set `SC_REDIS_URL` (comma-separated URLs).
pub struct Redis {
    urls: Vec<String>,
    prefix: String,
    timeout: Duration,
    queue_bytes: usize,
    state: OnceLock<Arc<State>>,
    /// The push readers and watchdogs: aborted at shutdown (or drop), which drops their
    /// connection handles.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    stopped: AtomicBool,
    /// How much longer a channel's history position (epoch, top) outlives its stream.
    tombstone_ttl: Duration,
    /// This node's presence entries (see the `presence` submodule).
    presence: presence::Mirror,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field(
                "urls",
                &self.urls.iter().map(|u| redact(u)).collect::<Vec<_>>(),
            )
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

struct State {
    node: String,
    shards: Vec<Shard>,
    sink: Weak<dyn DeliverySink>,
}

struct Shard {
    /// The URL without its password, for the log.
    name: String,
    conn: ConnectionManager,
    up: Arc<AtomicBool>,
    /// Publications, in order and pipelined (see the `publisher` submodule).
    publisher: publisher::Publisher,
}

impl Redis {
    /// One Redis instance.
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_urls([url])
    }

    /// Several Redis instances; channels and keys are spread over them by hash. Every node must
    /// list the same URLs in the same order.
    pub fn with_urls<I, S>(urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            urls: urls.into_iter().map(Into::into).collect(),
            prefix: "sc:".to_owned(),
            timeout: Duration::from_secs(1),
            queue_bytes: 64 * 1024 * 1024,
            state: OnceLock::new(),
            tasks: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            tombstone_ttl: crate::broker::HistoryLimits::default().tombstone_ttl,
            presence: Default::default(),
        }
    }

    /// Prefix of every Redis channel and key this engine uses (default `sc:`), so several apps
    /// can share one Redis: channel `C` is `prefix#C`, key `K` is `prefix#kv:K`. A prefix may not
    /// contain `#` or control characters (the engine then fails to start, saying so), which keeps
    /// any two prefixes apart. `SC_REDIS_PREFIX` sets it for the env-configured engine.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Most bytes of received messages waiting for delivery to this node's sockets, per Redis
    /// instance (default 64 MiB; each message counts its length plus 64). While full, new
    /// messages are dropped, counted and logged. `SC_REDIS_QUEUE_BYTES` sets it for the
    /// env-configured engine.
    pub fn queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes;
        self
    }

    /// How much longer a channel's history position (its epoch and last offset, the hash
    /// `prefix#hm:C`) outlives its publications (default 1 day), so that a client that saw
    /// everything of a quiet channel still recovers and the next publication continues the same
    /// epoch. `SC_HISTORY_TOMBSTONE_TTL` sets it for the env-configured engine.
    pub fn history_tombstone_ttl(mut self, ttl: Duration) -> Self {
        self.tombstone_ttl = ttl;
        self
    }

    /// How long a Redis command may take, and how long connecting may take, before it fails
    /// (default 1 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn state(&self) -> Result<&Arc<State>, BrokerError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(BrokerError::Unavailable(
                "the Redis engine was shut down".into(),
            ));
        }
        self.state
            .get()
            .ok_or_else(|| BrokerError::Unavailable("the Redis engine is not started".into()))
    }

    fn channel_key(&self, channel: &str) -> String {
        format!("{}{REDIS_SEPARATOR}{channel}", self.prefix)
    }

    fn kv_key(&self, key: &str) -> String {
        format!("{}{REDIS_SEPARATOR}kv:{key}", self.prefix)
    }

    async fn connect(
        &self,
        url: &str,
        pushes: impl redis::aio::AsyncPushSender,
    ) -> Result<ConnectionManager, BrokerError> {
        let unreachable = |e: redis::RedisError| {
            BrokerError::Unavailable(format!("Redis at {}: {e}", redact(url)))
        };
        let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(unreachable)?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings)).map_err(unreachable)?;
        let config = ConnectionManagerConfig::new()
            .set_push_sender(pushes)
            .set_automatic_resubscription()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unreachable)
    }

    fn shard_for(&self, name: &str) -> Result<&Shard, BrokerError> {
        let state = self.state()?;
        let shard = &state.shards[broker_index(name, state.shards.len())];
        if !shard.up.load(Ordering::Relaxed) {
            return Err(BrokerError::Unavailable(format!(
                "Redis at {} is unreachable (reconnecting)",
                shard.name
            )));
        }
        Ok(shard)
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        shard: &Shard,
        cmd: &redis::Cmd,
    ) -> Result<T, BrokerError> {
        let mut conn = shard.conn.clone();
        cmd.query_async(&mut conn)
            .await
            .map_err(|e| command_error(&shard.name, e))
    }

    async fn script<T: redis::FromRedisValue>(
        &self,
        shard: &Shard,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, BrokerError> {
        let mut conn = shard.conn.clone();
        invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| command_error(&shard.name, e))
    }
}

/// `name`: the instance's URL without its password.
fn command_error(name: &str, e: redis::RedisError) -> BrokerError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        BrokerError::Unavailable(format!("Redis at {name}: {e}"))
    } else {
        BrokerError::Refused(format!("Redis at {name}: {e}"))
    }
}

/// `redis://user:secret@host` -> `redis://user:***@host`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let auth = &url[scheme + 3..at];
            match auth.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Pings every second: keeps the manager reconnecting while Redis is away, and logs recovery.
async fn watch(conn: ConnectionManager, shard: String, up: Arc<AtomicBool>) {
    let mut conn = conn;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ping: Result<String, _> = redis::cmd("PING").query_async(&mut conn).await;
        match ping {
            Ok(_) => {
                if !up.swap(true, Ordering::Relaxed) {
                    tracing::warn!(redis = %shard, "reconnected to Redis; channel subscriptions restored");
                }
            }
            Err(e) => {
                if up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(redis = %shard, error = %e, "Redis does not answer; reconnecting (publishes fail until it is back)");
                }
            }
        }
    }
}

impl BrokerEngine for Redis {
    fn supports_history(&self) -> bool {
        true
    }

    fn start(&self, sink: Weak<dyn DeliverySink>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            if self.urls.is_empty() {
                return Err(BrokerError::Unavailable("no Redis URL given".into()));
            }
            super::validate_redis_prefix(&self.prefix).map_err(BrokerError::Refused)?;
            let node = format!("{:016x}", rand::random::<u64>());
            let mut shards = Vec::with_capacity(self.urls.len());
            for url in &self.urls {
                let (tx, rx) = mpsc::unbounded_channel();
                let name = redact(url);
                let queue = Arc::new(PushQueue::new(self.queue_bytes, name.clone()));
                let offer = queue.clone();
                let sender = move |push: PushInfo| {
                    offer.offer(push, &tx);
                    Ok::<(), std::convert::Infallible>(())
                };
                let conn = self.connect(url, sender).await?;
                let up = Arc::new(AtomicBool::new(true));
                let reader = tokio::spawn(read_pushes(
                    rx,
                    queue,
                    sink.clone(),
                    self.prefix.clone(),
                    node.clone(),
                    up.clone(),
                ));
                let watchdog = tokio::spawn(watch(conn.clone(), name.clone(), up.clone()));
                let (publisher, sending) = publisher::Publisher::new(publisher::Target {
                    conn: conn.clone(),
                    name: name.clone(),
                    load_script: history::load_publish_script(),
                });
                let sending = tokio::spawn(sending);
                lock(&self.tasks).extend([reader, watchdog, sending]);
                shards.push(Shard {
                    name,
                    conn,
                    up,
                    publisher,
                });
            }
            self.state
                .set(Arc::new(State { node, shards, sink }))
                .map_err(|_| BrokerError::Refused("the Redis engine was started twice".into()))?;
            if let Some(keeper) = self.presence_keeper() {
                lock(&self.tasks).push(tokio::spawn(keeper));
            }
            Ok(())
        })
    }

    fn subscribe(&self, channel: &str) -> BoxFuture<'_, Result<(), BrokerError>> {
        let key = self.channel_key(channel);
        let shard = self.shard_for(channel);
        Box::pin(async move {
            let shard = shard?;
            let mut conn = shard.conn.clone();
            conn.subscribe(&key)
                .await
                .map_err(|e| command_error(&shard.name, e))
        })
    }

    fn unsubscribe(&self, channel: &str) -> BoxFuture<'_, Result<(), BrokerError>> {
        let key = self.channel_key(channel);
        let shard = self.shard_for(channel);
        Box::pin(async move {
            let shard = shard?;
            let mut conn = shard.conn.clone();
            conn.unsubscribe(&key)
                .await
                .map_err(|e| command_error(&shard.name, e))
        })
    }

    fn publish(&self, publication: Arc<Publication>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let state = self.state()?;
            // Local sockets first: they get the message even while Redis is away, and Redis's
            // echo of it is dropped (it carries this node's id).
            if let Some(sink) = state.sink.upgrade() {
                sink.deliver(publication.clone()).await;
            }
            let shard = self.shard_for(&publication.channel)?;
            let mut payload = String::with_capacity(NODE_ID_LEN + publication.frame.len());
            payload.push_str(&state.node);
            payload.push_str(publication.frame.as_str());
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(self.channel_key(&publication.channel)).arg(payload);
            shard.publisher.send(cmd, false).await.map(drop)
        })
    }

    /// The sink the server hands the engine delivers locally without waiting, and the publication
    /// is then queued in the instance's ordered publisher (the `publisher` submodule).
    fn publish_queued_on_first_poll(&self) -> bool {
        true
    }

    fn publish_with_history(
        &self,
        publication: Arc<Publication>,
        policy: HistoryPolicy,
    ) -> BoxFuture<'_, Result<Position, BrokerError>> {
        Box::pin(async move { self.publish_positioned(&publication, policy).await })
    }

    fn history(
        &self,
        channel: &str,
        since: Option<Position>,
        policy: HistoryPolicy,
    ) -> BoxFuture<'_, Result<HistorySince, BrokerError>> {
        let channel = channel.to_owned();
        Box::pin(async move { self.read_history(&channel, since, policy).await })
    }

    fn kv(&self, op: KvOp) -> BoxFuture<'_, Result<Value, BrokerError>> {
        Box::pin(self.run_kv(op))
    }

    fn supports_presence(&self) -> bool {
        true
    }

    fn presence_join(
        &self,
        channel: &str,
        entry: crate::broker::PresenceEntry,
        join_leave: bool,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        let channel = channel.to_owned();
        Box::pin(async move { self.join_presence(&channel, entry, join_leave).await })
    }

    fn presence_leave(
        &self,
        channel: &str,
        socket: &str,
    ) -> BoxFuture<'_, Result<Option<crate::broker::PresenceEntry>, BrokerError>> {
        let (channel, socket) = (channel.to_owned(), socket.to_owned());
        Box::pin(async move { self.leave_presence(&channel, &socket).await })
    }

    fn presence(
        &self,
        channel: &str,
    ) -> BoxFuture<'_, Result<Vec<crate::broker::PresenceEntry>, BrokerError>> {
        let channel = channel.to_owned();
        Box::pin(async move { self.query_presence(&channel).await })
    }

    fn presence_event(
        &self,
        channel: &str,
        frame: axum::extract::ws::Utf8Bytes,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        let channel = channel.to_owned();
        Box::pin(async move { self.publish_presence_event(&channel, frame.as_str()).await })
    }

    /// Aborts the push readers and watchdogs; the connections close when the engine is dropped
    /// (the server drops it when it stops), and every call fails from now on.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.stopped.store(true, Ordering::Release);
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        Box::pin(async {})
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_in_logs() {
        assert_eq!(redact("redis://u:pw@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        assert_eq!(redact("redis://:pw@h"), "redis://:***@h");
    }
}
