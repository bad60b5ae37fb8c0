//! Client configuration: [`ClientOptions`] for a client, [`SubscribeOptions`] for one channel.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{Backoff, ProtocolVersion};

/// Client configuration. Defaults are the official client's.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Server URL, e.g. `ws://127.0.0.1:8000/socketcluster/` (the trailing slash of the default
    /// path matters to the reference server). A query string is passed through.
    pub url: String,
    /// How long an invoke waits for its response, counted from the call (default 10 s). Also
    /// bounds the `#handshake` reply (failure: close 4003) and how long a transmit may wait in
    /// the offline buffer.
    pub ack_timeout: Duration,
    /// How long opening the WebSocket may take (default 20 s; failure: 4007). Also the ping
    /// watchdog's timeout until the handshake reply gives the server's `pingTimeout`.
    pub connect_timeout: Duration,
    /// Reconnect after a lost connection (default true).
    pub auto_reconnect: bool,
    /// Reconnect delays (default: the official 10 s + up to 10 s, x1.5, max 60 s).
    pub backoff: Backoff,
    /// Ping/pong tokens (default [`ProtocolVersion::V2`]).
    pub protocol_version: ProtocolVersion,
    /// Signed token sent in the first `#handshake` (the official client's stored token).
    pub auth_token: Option<String>,
    /// Ping watchdog (default on; the official `pingTimeoutDisabled: false`): without a ping for
    /// `pingTimeout` the client closes with 4000 and reconnects.
    pub ping_watchdog: bool,
    /// Capacity of the [`Client::events`](super::Client::events) broadcast (default 256); slower receivers lag.
    pub event_capacity: usize,
    /// TLS settings for `wss://` URLs (default `None`: rustls with the Mozilla roots of
    /// `webpki-roots`). Set it to trust a private CA.
    pub tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
}

impl ClientOptions {
    /// Defaults with the given URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            url: "ws://127.0.0.1:8000/socketcluster/".to_owned(),
            ack_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(20),
            auto_reconnect: true,
            backoff: Backoff::default(),
            protocol_version: ProtocolVersion::V2,
            auth_token: None,
            ping_watchdog: true,
            event_capacity: 256,
            tls: None,
        }
    }
}

/// Options of [`Client::subscribe_with`](super::Client::subscribe_with).
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// Sent to the server with `#subscribe` (visible to its subscribe middleware) when truthy.
    pub data: Option<Value>,
    /// Subscribe only while authenticated: the subscription stays pending until the client is
    /// authenticated, and `waitForAuth: true` is sent.
    pub wait_for_auth: bool,
    /// Resubscription order after a reconnect (higher first); never sent.
    pub priority: i32,
}
