//! [`Client`] methods for pub/sub: subscribing (to plain and typed channels), unsubscribing,
//! publishing, and which channels are subscribed.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use super::calls::encode;
use super::codec::{self, ChannelTarget, TypedChannel};
use super::state::{ChannelOptions, SubscribeStart};
use super::{Client, ClientError, InvokeError, SubscribeOptions, Subscription, TypedSubscription};

fn publish_data(channel: &str, data_json: &str) -> String {
    format!(
        "{{\"channel\":{},\"data\":{}}}",
        codec::json_string(channel),
        data_json
    )
}

impl Client {
    /// Subscribes to `channel` and waits for the server's ack. See [`Client::subscribe_with`].
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, InvokeError> {
        self.subscribe_with(channel, SubscribeOptions::default())
            .await
    }

    /// Subscribes to `channel` and waits until the server acknowledges it: while the client is
    /// (re)connecting, or for `wait_for_auth` until it is authenticated, the subscription is
    /// pending and this waits (like the official client, subscribe has no ack timeout; wrap it
    /// in `tokio::time::timeout` if needed; dropping the future abandons the subscription).
    /// A channel that is already subscribed resolves at once; options of a channel that
    /// already exists are kept. Fails with [`InvokeError::Remote`] when the server refuses,
    /// [`InvokeError::BadConnection`] when the client is (or becomes) closed for good.
    pub async fn subscribe_with(
        &self,
        channel: &str,
        opts: SubscribeOptions,
    ) -> Result<Subscription, InvokeError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (id, start) = {
            let mut st = self.shared().lock();
            if st.is_terminal() {
                let (code, reason) = st.last_close();
                return Err(InvokeError::BadConnection {
                    event: "#subscribe".to_owned(),
                    code,
                    reason,
                });
            }
            let id = st.next_req();
            let start = st.add_subscription(
                channel,
                id,
                tx,
                ChannelOptions {
                    wait_for_auth: opts.wait_for_auth,
                    data: opts.data,
                    priority: opts.priority,
                },
            );
            (id, start)
        };
        let subscription = Subscription {
            shared: self.inner.shared.clone(),
            channel: channel.to_owned(),
            id,
            rx,
        };
        match start {
            SubscribeStart::Ready => Ok(subscription),
            SubscribeStart::Wait(ack) => match ack.await {
                Ok(Ok(())) => Ok(subscription),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(InvokeError::Unsubscribed {
                    channel: channel.to_owned(),
                }),
            },
        }
    }

    /// Subscribes to a typed channel (`#[channel("rooms/{id}", message = T)]`): the stream
    /// yields the channel's message type, decoded. See [`Client::subscribe_with`].
    pub async fn subscribe_to<C>(
        &self,
        channel: &C,
    ) -> Result<TypedSubscription<C::Message>, InvokeError>
    where
        C: TypedChannel + ChannelTarget<C::Message>,
        C::Message: DeserializeOwned,
    {
        let name = channel.channel_name();
        Ok(TypedSubscription::new(self.subscribe(&name).await?))
    }

    /// Publishes on a channel and waits for the ack, like [`Client::publish`]; on a typed channel
    /// only its message type compiles (`client.publish_to(&Room { id: 1 }, &ChatMsg { .. })`).
    pub async fn publish_to<C, M>(&self, channel: &C, message: &M) -> Result<(), InvokeError>
    where
        C: ChannelTarget<M> + ?Sized,
        M: Serialize + ?Sized,
    {
        self.publish(&channel.channel_name(), message).await
    }

    /// Unsubscribes `channel` (every handle's stream ends); `#unsubscribe` is sent without cid.
    pub fn unsubscribe(&self, channel: &str) {
        self.shared().lock().drop_channel(channel, true);
    }

    /// Channels the client is subscribed to; with `include_pending`, also those waiting for a
    /// connection, for authentication or for the server's ack.
    pub fn subscriptions(&self, include_pending: bool) -> Vec<String> {
        self.shared().lock().subscriptions(include_pending)
    }

    /// Whether `channel` is subscribed (acknowledged by the server on this connection).
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.shared().lock().is_subscribed(channel, false)
    }

    /// Publishes to `channel` and waits for the server's ack (`#publish` with a cid, the
    /// official `invokePublish`). The publisher receives its own publication if subscribed.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        data: &T,
    ) -> Result<(), InvokeError> {
        let data = encode("#publish", data)?;
        self.call("#publish", Some(publish_data(channel, &data)))
            .await
            .map(|_| ())
    }

    /// Publishes to `channel` without waiting (`#publish` without cid, the official
    /// `transmitPublish`).
    pub fn transmit_publish<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        data: &T,
    ) -> Result<(), ClientError> {
        let data = serde_json::to_string(data)?;
        self.send_transmit("#publish", Some(publish_data(channel, &data)))
    }
}
