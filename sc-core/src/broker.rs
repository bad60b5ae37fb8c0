//! The broker engine: where pub/sub between workers happens. A worker keeps its own channel
//! registry (`pubsub`) and tells the engine only which channels it needs (once per channel, not
//! per socket) and what to publish; the engine hands every publication on a needed channel back
//! through the [`DeliverySink`] given at start.
//!
//! [`LocalBroker`] (the default) is the in-process engine: one process, publications delivered
//! directly. Broker processes and Redis implement the same trait.

use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use serde_json::Value;

use crate::handler::BoxFuture;

/// One message published on a channel. The `#publish` frame is encoded once, when the message is
/// published, and shared (reference-counted bytes) by every socket it is delivered to.
#[derive(Debug)]
pub struct Publication {
    /// The channel.
    pub channel: Arc<str>,
    /// The published data (`None`: published without data).
    pub data: Option<Value>,
    /// `{"event":"#publish","data":{"channel":..,"data":..}}`, ready to write.
    pub frame: Utf8Bytes,
}

impl Publication {
    /// Encodes a publication.
    pub fn new(channel: impl Into<Arc<str>>, data: Option<Value>) -> Result<Self, BrokerError> {
        let channel = channel.into();
        let frame = crate::protocol::encode_publish(&channel, data.as_ref())
            .map_err(|e| BrokerError::Encode(e.to_string()))?;
        Ok(Self {
            channel,
            data,
            frame: frame.into(),
        })
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
}

impl From<BrokerError> for crate::error::ScError {
    fn from(e: BrokerError) -> Self {
        crate::error::ScError::broker(e.to_string())
    }
}

/// Where the engine delivers publications for the channels the worker subscribed to.
pub trait DeliverySink: Send + Sync + 'static {
    /// Delivers to every local subscriber of the publication's channel. The future completes when
    /// the message has been handed to every local socket queue.
    fn deliver(&self, publication: Arc<Publication>) -> BoxFuture<'_, ()>;
}

/// A pub/sub engine shared by the workers of a cluster (or of many clusters).
pub trait BrokerEngine: Send + Sync + 'static {
    /// Called once, before any other method, with the worker's sink.
    fn start(&self, sink: Arc<dyn DeliverySink>) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// The worker now has at least one subscriber on `channel`.
    fn subscribe(&self, channel: &str) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// The worker's last subscriber of `channel` left.
    fn unsubscribe(&self, channel: &str) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// Publishes to every worker subscribed to the channel (this one included). Completes when the
    /// engine accepted the message; the in-process engine also completes local delivery first.
    fn publish(&self, publication: Arc<Publication>) -> BoxFuture<'_, Result<(), BrokerError>>;
}

/// The in-process engine: the default when the cluster has no broker processes.
#[derive(Default)]
pub struct LocalBroker {
    sink: OnceLock<Arc<dyn DeliverySink>>,
}

impl LocalBroker {
    /// A new in-process engine.
    pub fn new() -> Self {
        Self::default()
    }
}

impl BrokerEngine for LocalBroker {
    fn start(&self, sink: Arc<dyn DeliverySink>) -> BoxFuture<'_, Result<(), BrokerError>> {
        let _ = self.sink.set(sink);
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
            match self.sink.get() {
                Some(sink) => {
                    sink.deliver(publication).await;
                    Ok(())
                }
                None => Err(BrokerError::Unavailable(
                    "the local broker was not started".into(),
                )),
            }
        })
    }
}
