//! The client's error types.

use super::codec::ScError;

/// Why an invoke (or `publish`, `subscribe`, `authenticate`) failed.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// No response within `ack_timeout` (counted from the call, including time spent in the
    /// offline buffer). The official client's `TimeoutError`.
    #[error("Event response for {event} event timed out")]
    Timeout {
        /// The event (procedure) name.
        event: String,
    },
    /// The connection closed (or could not be established) before the response arrived, or the
    /// client is closed. The official client's `BadConnectionError`.
    #[error("Event {event} was aborted due to a bad connection (code {code}: {reason})")]
    BadConnection {
        /// The event (procedure) name.
        event: String,
        /// The close code of the connection that failed.
        code: u16,
        /// The close reason (the close frame's text, or the code's standard text).
        reason: String,
    },
    /// The server answered with an error (`{"rid":N,"error":E}`).
    #[error("{0}")]
    Remote(ScError),
    /// The request data could not be serialised to JSON.
    #[error("failed to encode the data of {event}: {source}")]
    Encode {
        /// The event (procedure) name.
        event: String,
        /// The serialisation error.
        source: serde_json::Error,
    },
    /// The response data did not deserialise into the requested type.
    #[error("failed to decode the response to {event}: {source}")]
    Decode {
        /// The event (procedure) name.
        event: String,
        /// The deserialisation error.
        source: serde_json::Error,
    },
    /// A subscription was dropped locally (unsubscribed, kicked out) before the server's ack.
    #[error("subscription to channel {channel} was cancelled before it completed")]
    Unsubscribed {
        /// The channel name.
        channel: String,
    },
}

impl InvokeError {
    /// The server's error, if the failure is one ([`InvokeError::Remote`]).
    pub fn remote(&self) -> Option<&ScError> {
        match self {
            Self::Remote(e) => Some(e),
            _ => None,
        }
    }
}

impl From<InvokeError> for ScError {
    /// The failure as the official client would surface it: `TimeoutError`,
    /// `BadConnectionError` (with `type`, `code`, `reason`), the server's own error as is.
    fn from(err: InvokeError) -> Self {
        match err {
            InvokeError::Timeout { event } => ScError::timeout(&event),
            InvokeError::BadConnection {
                event,
                code,
                reason,
            } => ScError::new(
                "BadConnectionError",
                format!("Event {event} was aborted due to a bad connection"),
            )
            .with("type", "disconnect")
            .with("code", code)
            .with("reason", reason),
            InvokeError::Remote(e) => e,
            InvokeError::Encode { event, source } => ScError::invalid_arguments(format!(
                "Failed to encode the data of {event}: {source}"
            )),
            InvokeError::Decode { event, source } => ScError::new(
                "InvalidMessageError",
                format!("Failed to decode the response to {event}: {source}"),
            ),
            InvokeError::Unsubscribed { channel } => ScError::new(
                "BrokerError",
                format!("Subscription to the {channel} channel was cancelled"),
            ),
        }
    }
}

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
