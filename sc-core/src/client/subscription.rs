//! Streams handed to the application: channel subscriptions and server-transmit receivers.

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;

use super::state::Shared;

/// A subscription to one channel: a [`Stream`] of the channel's publications (the `data` of
/// each `#publish`, `null` when the publisher sent none).
///
/// Several handles may exist for one channel (one per [`Client::subscribe`](super::Client::subscribe)
/// call); each receives every publication. When the last handle is dropped the client
/// unsubscribes (`{"event":"#unsubscribe","data":CHANNEL}`, no cid, like the official client).
/// [`Subscription::unsubscribe`] unsubscribes the channel at once, for every handle.
///
/// The stream survives reconnects (the client resubscribes by itself) and ends when the channel
/// is unsubscribed, the server kicks the client out of it (`#kickOut`), a resubscription is
/// refused (`SubscribeFail`), or the client is dropped. Publications are queued without bound:
/// consume them.
pub struct Subscription {
    pub(crate) shared: Arc<Shared>,
    pub(crate) channel: String,
    pub(crate) id: u64,
    pub(crate) rx: mpsc::UnboundedReceiver<Value>,
}

impl Subscription {
    /// The channel name.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Whether the channel is currently subscribed on the server (false while the client is
    /// reconnecting and the subscription is pending again, and after it ended).
    pub fn is_subscribed(&self) -> bool {
        self.shared.lock().is_subscribed(&self.channel, false)
    }

    /// On a channel with history, the position (offset, epoch) of the last publication received
    /// (or the channel's top from the last ack): what the client sends as `recover` when it
    /// resubscribes. `None` on a channel without history.
    pub fn position(&self) -> Option<(u64, String)> {
        self.shared.lock().history_of(&self.channel).0
    }

    /// How many times, on a channel with history, what the client missed while away could not
    /// be recovered (also a [`ClientEvent::NotRecovered`](super::ClientEvent::NotRecovered)):
    /// the app should reload the channel's state when this grows.
    pub fn not_recovered(&self) -> u64 {
        self.shared.lock().history_of(&self.channel).1
    }

    /// The next publication; `None` once the subscription has ended.
    pub async fn recv(&mut self) -> Option<Value> {
        self.rx.recv().await
    }

    /// Unsubscribes the channel now (for every handle of it): sends `#unsubscribe` when the
    /// server holds the subscription, and ends the streams.
    pub fn unsubscribe(self) {
        self.shared.lock().drop_channel(&self.channel, true);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared
            .lock()
            .remove_subscription(&self.channel, self.id);
    }
}

impl Stream for Subscription {
    type Item = Value;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Value>> {
        self.rx.poll_recv(cx)
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("channel", &self.channel)
            .field("id", &self.id)
            .finish()
    }
}

/// A subscription to a typed channel ([`Client::subscribe_to`](super::Client::subscribe_to)):
/// each publication decoded as `M`. A publication that is not an `M` (another publisher sent
/// something else) is an `Err` item; the stream goes on.
pub struct TypedSubscription<M> {
    inner: Subscription,
    _message: PhantomData<fn() -> M>,
}

impl<M: DeserializeOwned> TypedSubscription<M> {
    pub(crate) fn new(inner: Subscription) -> Self {
        Self {
            inner,
            _message: PhantomData,
        }
    }

    /// The channel name.
    pub fn channel(&self) -> &str {
        self.inner.channel()
    }

    /// The next publication, decoded; `None` once the subscription has ended.
    pub async fn recv(&mut self) -> Option<Result<M, serde_json::Error>> {
        self.inner.recv().await.map(serde_json::from_value)
    }

    /// Unsubscribes now (see [`Subscription::unsubscribe`]).
    pub fn unsubscribe(self) {
        self.inner.unsubscribe()
    }

    /// The untyped subscription.
    pub fn into_inner(self) -> Subscription {
        self.inner
    }
}

impl<M> fmt::Debug for TypedSubscription<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TypedSubscription")
            .field(&self.inner)
            .finish()
    }
}

/// A [`Stream`] of one server-transmitted event's data (`None` when the server sent no data),
/// from [`Client::receiver`](super::Client::receiver). It ends when the client is dropped.
/// Dropping it unregisters it.
pub struct EventReceiver {
    pub(crate) rx: mpsc::UnboundedReceiver<Option<Value>>,
}

impl EventReceiver {
    /// The next transmit's data; `None` once the stream has ended (the outer option), `Some(None)`
    /// for a transmit without data.
    pub async fn recv(&mut self) -> Option<Option<Value>> {
        self.rx.recv().await
    }
}

impl Stream for EventReceiver {
    type Item = Option<Value>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Option<Value>>> {
        self.rx.poll_recv(cx)
    }
}

impl fmt::Debug for EventReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventReceiver").finish_non_exhaustive()
    }
}
