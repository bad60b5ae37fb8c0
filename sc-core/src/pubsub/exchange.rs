//! [`Exchange`]: the server-side view of every channel (SocketCluster's `agServer.exchange`):
//! publish from server code, subscribe server code to a channel as a `Stream`, and look at the
//! server-side subscriptions. Publications from clients and from the server look the same to
//! every subscriber.
//!
//! It also fronts the cluster-wide key-value store (SocketCluster v14's `exchange.set/get/...`):
//! [`Exchange::set`], [`get`](Exchange::get), [`remove`](Exchange::remove),
//! [`add`](Exchange::add), [`expire`](Exchange::expire), [`unexpire`](Exchange::unexpire),
//! [`has_key`](Exchange::has_key), [`count`](Exchange::count). With the in-process broker the
//! store lives in this process; with broker processes each key lives on the broker that owns it,
//! so every worker sees the same data (see [`crate::broker::kv`]).

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{data_of, PubSub};
use crate::app::handler::{FromRequestParts, Parts};
use crate::broker::{
    BrokerError, HistorySince, KvOp, Position, PresenceEntry, PresenceStats, Publication,
};
use crate::protocol::ScError;

/// Something that names a channel that accepts messages of type `M`.
///
/// Any string accepts any serialisable message. A typed channel (the `#[channel("rooms/{id}",
/// message = ChatMsg)]` macro, or a hand-written impl) accepts only its message type, so
/// `exchange.publish(&Room { id: 1 }, &wrong_type)` does not compile.
pub trait ChannelTarget<M: ?Sized> {
    /// The channel's name on the wire.
    fn channel_name(&self) -> Cow<'_, str>;
}

impl<M: Serialize + ?Sized> ChannelTarget<M> for str {
    fn channel_name(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl<M: Serialize + ?Sized> ChannelTarget<M> for String {
    fn channel_name(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl<M: Serialize + ?Sized> ChannelTarget<M> for Arc<str> {
    fn channel_name(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

/// Server-side pub/sub. Cheap to clone; get it as a handler argument or from the server handle.
#[derive(Clone)]
pub struct Exchange {
    pub(crate) pubsub: Arc<PubSub>,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange").finish_non_exhaustive()
    }
}

/// Handlers get the server's exchange, which the server registers as a service when it starts.
impl FromRequestParts for Exchange {
    async fn from_request_parts(parts: &Parts) -> Result<Self, ScError> {
        parts
            .shared()
            .services
            .get::<Exchange>()
            .cloned()
            .ok_or_else(|| {
                tracing::error!("no Exchange registered with the server state");
                ScError::internal()
            })
    }
}

impl Exchange {
    pub(crate) fn new(pubsub: Arc<PubSub>) -> Self {
        Self { pubsub }
    }

    /// Publishes `message` to `channel` (SocketCluster's `invokePublish`): every subscribed
    /// client receives `{"event":"#publish","data":{"channel":..,"data":message}}`. With the
    /// in-process broker, it returns once the message is in every local subscriber's queue.
    pub async fn publish<C, M>(&self, channel: &C, message: &M) -> Result<(), BrokerError>
    where
        C: ChannelTarget<M> + ?Sized,
        M: Serialize + ?Sized,
    {
        let data = serde_json::to_value(message).map_err(|e| BrokerError::Encode(e.to_string()))?;
        self.publish_value(&channel.channel_name(), Some(data))
            .await
    }

    /// Publishes already-built JSON (`None`: a publication without data).
    pub async fn publish_value(
        &self,
        channel: &str,
        data: Option<Value>,
    ) -> Result<(), BrokerError> {
        let publication = Arc::new(Publication::new(channel, data)?);
        match self.pubsub.history.of(channel) {
            Some(policy) => self
                .pubsub
                .engine
                .publish_with_history(publication, policy)
                .await
                .map(drop),
            None => self.pubsub.engine.publish(publication).await,
        }
    }

    /// The channel's kept publications after `since` (all of them for `None`), oldest first,
    /// and its latest position (see [`HistorySince`]: `publications` is `None` when they cannot
    /// be told exactly). A channel without history (no declaration or default gives it one) is
    /// [`BrokerError::Refused`].
    /// A typed channel's name is its `to_string()`.
    pub async fn history(
        &self,
        name: &str,
        since: Option<Position>,
    ) -> Result<HistorySince, BrokerError> {
        let Some(policy) = self.pubsub.history.of(name) else {
            return Err(BrokerError::Refused(format!(
                "channel '{name}' has no history: declare it with `history = N` or set history_size"
            )));
        };
        self.pubsub.engine.history(name, since, policy).await
    }

    /// Who is subscribed to `name`, cluster-wide: one entry per subscribed socket, in no
    /// particular order (see [`PresenceEntry`]). A channel without presence (no declaration or
    /// default gives it one) is [`BrokerError::Refused`]. A typed channel's name is its
    /// `to_string()`.
    pub async fn presence(&self, name: &str) -> Result<Vec<PresenceEntry>, BrokerError> {
        self.presence_policy(name)?;
        self.pubsub.engine.presence(name).await
    }

    /// How many sockets, and distinct users, are subscribed to `name`, cluster-wide (see
    /// [`presence`](Self::presence)).
    pub async fn presence_stats(&self, name: &str) -> Result<PresenceStats, BrokerError> {
        Ok(PresenceStats::of(&self.presence(name).await?))
    }

    fn presence_policy(
        &self,
        name: &str,
    ) -> Result<crate::app::presence::PresencePolicy, BrokerError> {
        self.pubsub.presence.of(name).ok_or_else(|| {
            BrokerError::Refused(format!(
                "channel '{name}' has no presence: declare it with `presence` or set presence"
            ))
        })
    }

    /// Publishes without waiting (SocketCluster's `transmitPublish`); failures are logged.
    pub fn transmit_publish<C, M>(&self, channel: &C, message: &M)
    where
        C: ChannelTarget<M> + ?Sized,
        M: Serialize + ?Sized,
    {
        let channel = channel.channel_name().into_owned();
        let data = match serde_json::to_value(message) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(%channel, error = %e, "transmit_publish: message is not JSON");
                return;
            }
        };
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.publish_value(&channel, Some(data)).await {
                tracing::warn!(%channel, error = %e, "transmit_publish failed");
            }
        });
    }

    /// Subscribes server code to `channel`. The stream yields every message's data, from clients
    /// and from the server, until it is dropped (which unsubscribes it).
    pub async fn subscribe(&self, channel: &str) -> Result<ChannelStream, BrokerError> {
        let channel: Arc<str> = channel.into();
        let (id, rx) = self.pubsub.subscribe_server(channel.clone()).await?;
        Ok(ChannelStream {
            channel,
            id,
            rx,
            pubsub: self.pubsub.clone(),
        })
    }

    /// Ends every server-side subscription to `channel` (their streams end).
    pub fn unsubscribe(&self, channel: &str) {
        self.pubsub.unsubscribe_server(channel, None);
    }

    /// Whether server code is subscribed to `channel`.
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.pubsub.server_channels().iter().any(|c| c == channel)
    }

    /// The channels server code is subscribed to.
    pub fn subscriptions(&self) -> Vec<String> {
        self.pubsub.server_channels()
    }

    /// Runs one key-value operation and returns its raw result (see [`KvOp`]); the methods below
    /// are typed shortcuts. Fails with [`BrokerError::Unavailable`] when the broker that owns the
    /// key is down.
    pub async fn kv(&self, op: KvOp) -> Result<Value, BrokerError> {
        self.pubsub.engine.kv(op).await
    }

    /// Stores `value` at `key` (replacing any value and expiry).
    pub async fn set<V: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &V,
    ) -> Result<(), BrokerError> {
        let value = serde_json::to_value(value).map_err(|e| BrokerError::Encode(e.to_string()))?;
        self.kv(KvOp::Set {
            key: key.to_owned(),
            value,
        })
        .await
        .map(drop)
    }

    /// The value at `key` as a `T`; `None` if the key does not exist (or holds `null`). A value
    /// that is not a `T` is [`BrokerError::Decode`].
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, BrokerError> {
        let value = self
            .kv(KvOp::Get {
                key: key.to_owned(),
            })
            .await?;
        decode_optional(value)
    }

    /// Deletes `key`; returns its old value (`None` if it did not exist or held `null`).
    pub async fn remove(&self, key: &str) -> Result<Option<Value>, BrokerError> {
        let old = self
            .kv(KvOp::Remove {
                key: key.to_owned(),
            })
            .await?;
        Ok((!old.is_null()).then_some(old))
    }

    /// Appends `value` to the list at `key` (creating it; a non-list value `x` becomes
    /// `[x, value]`); returns the index of the new element.
    pub async fn add<V: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &V,
    ) -> Result<u64, BrokerError> {
        let value = serde_json::to_value(value).map_err(|e| BrokerError::Encode(e.to_string()))?;
        let index = self
            .kv(KvOp::Add {
                key: key.to_owned(),
                value,
            })
            .await?;
        decode_count(index)
    }

    /// Makes each existing key of `keys` expire `ttl` from now; returns how many exist.
    pub async fn expire<K: AsRef<str>>(
        &self,
        keys: impl IntoIterator<Item = K>,
        ttl: Duration,
    ) -> Result<u64, BrokerError> {
        let keys = keys.into_iter().map(|k| k.as_ref().to_owned()).collect();
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        decode_count(self.kv(KvOp::Expire { keys, ms }).await?)
    }

    /// Removes the expiry of each existing key of `keys`; returns how many exist.
    pub async fn unexpire<K: AsRef<str>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<u64, BrokerError> {
        let keys = keys.into_iter().map(|k| k.as_ref().to_owned()).collect();
        decode_count(self.kv(KvOp::Unexpire { keys }).await?)
    }

    /// Whether `key` exists.
    pub async fn has_key(&self, key: &str) -> Result<bool, BrokerError> {
        match self
            .kv(KvOp::HasKey {
                key: key.to_owned(),
            })
            .await?
        {
            Value::Bool(b) => Ok(b),
            other => Err(BrokerError::Decode(format!("hasKey answered {other}"))),
        }
    }

    /// The number of keys in the store (with broker processes: in all of them).
    pub async fn count(&self) -> Result<u64, BrokerError> {
        decode_count(self.kv(KvOp::Count).await?)
    }
}

fn decode_optional<T: DeserializeOwned>(value: Value) -> Result<Option<T>, BrokerError> {
    if value.is_null() {
        return Ok(None);
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| BrokerError::Decode(e.to_string()))
}

fn decode_count(value: Value) -> Result<u64, BrokerError> {
    value
        .as_u64()
        .ok_or_else(|| BrokerError::Decode(format!("expected a count, got {value}")))
}

/// A server-side subscription: a `Stream` of the channel's message data. Dropping it unsubscribes.
///
/// Messages wait in an unbounded queue until read: keep reading, or drop the stream.
pub struct ChannelStream {
    channel: Arc<str>,
    id: u64,
    rx: mpsc::UnboundedReceiver<Arc<Publication>>,
    pubsub: Arc<PubSub>,
}

impl std::fmt::Debug for ChannelStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelStream")
            .field("channel", &self.channel)
            .finish()
    }
}

impl ChannelStream {
    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The next message's data (`Value::Null` for a publication without data); `None` once the
    /// subscription has ended.
    pub async fn recv(&mut self) -> Option<Value> {
        self.rx.recv().await.map(|p| data_of(&p))
    }
}

impl Stream for ChannelStream {
    type Item = Value;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Value>> {
        self.rx.poll_recv(cx).map(|o| o.map(|p| data_of(&p)))
    }
}

impl Drop for ChannelStream {
    fn drop(&mut self) {
        self.pubsub.unsubscribe_server(&self.channel, Some(self.id));
    }
}
