//! The client's error types.

use super::codec::ScError;

pub use crate::protocol::InvokeError;

/// Connection-level failures: connecting, a rejected handshake, using a closed client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not a valid `ws://` (or `wss://`) URL.
    #[error("invalid URL {url}: {message}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// The WebSocket connection could not be opened (refused, DNS, HTTP status instead of an
    /// upgrade: the official client's `connectAbort` 1006).
    #[error("could not connect: {0}")]
    Connect(String),
    /// The connection was aborted before the handshake completed (e.g. 4007 connect timeout,
    /// 4003 handshake timeout, 4000 ping timeout, a close from the server).
    #[error("connection aborted with code {code}: {reason}")]
    ConnectAbort {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The server answered `#handshake` with an error (handshake middleware block); the
    /// connection is then closed with the error's `statusCode` (default 4003).
    #[error("handshake rejected: {0}")]
    Handshake(ScError),
    /// The client is closed ([`Client::disconnect`](super::Client::disconnect) or a close that
    /// does not reconnect: 1000, >= 4500); [`Client::reconnect`](super::Client::reconnect)
    /// reopens it.
    #[error("the client is closed")]
    Closed,
    /// The data could not be serialised to JSON.
    #[error("failed to encode data: {0}")]
    Encode(#[from] serde_json::Error),
}
