//! [`Exchange`]: the server-side view of every channel (SocketCluster's `agServer.exchange`):
//! publish from server code, subscribe server code to a channel as a `Stream`, and look at the
//! server-side subscriptions. Publications from clients and from the server look the same to
//! every subscriber.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::broker::{BrokerError, Publication};
use crate::pubsub::{data_of, PubSub};

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

impl Exchange {
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
        self.pubsub.engine.publish(publication).await
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
