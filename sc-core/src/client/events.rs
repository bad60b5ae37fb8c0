//! What the client reports to the application: its [`ConnectionState`], the [`ClientEvent`]s of
//! [`Client::events`](super::Client::events) and the [`AuthStatus`] of an `authenticate()`.

use std::time::Duration;

use serde_json::Value;

use super::codec::ScError;

/// The connection's state (the official client's `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Opening the WebSocket or waiting for the handshake reply.
    Connecting,
    /// Handshake done.
    Open,
    /// Not connected: waiting to reconnect, or closed for good.
    Closed,
}

/// What happens to the client, from [`Client::events`](super::Client::events).
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A connection attempt starts.
    Connecting,
    /// The handshake completed (after the resubscriptions were sent, before the offline buffer
    /// is flushed).
    Connect {
        /// The socket id the server assigned.
        id: String,
        /// Whether the token sent in the handshake was accepted.
        is_authenticated: bool,
        /// Why the token was rejected, if one was sent and rejected.
        auth_error: Option<ScError>,
        /// The server's `pingTimeout`.
        ping_timeout: Duration,
    },
    /// An open connection closed.
    Disconnect {
        /// Close code.
        code: u16,
        /// Close reason (the frame's text, else the code's standard text).
        reason: String,
    },
    /// A connection attempt failed before the handshake completed.
    ConnectAbort {
        /// Close code (1006 when the WebSocket could not be opened, 4007 on connect timeout,
        /// 4003 on handshake timeout, the error's `statusCode` on a rejected handshake).
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// The client is authenticated with this token (a handshake accepted the token, the server
    /// sent `#setAuthToken`, or [`Client::authenticate`](super::Client::authenticate) succeeded).
    Authenticate {
        /// The signed token (JWT).
        signed_token: String,
    },
    /// The client is no longer authenticated.
    Deauthenticate,
    /// The server acknowledged a subscription.
    Subscribe {
        /// The channel.
        channel: String,
    },
    /// A subscription ended or became pending again (disconnect).
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// The server refused a subscription; the channel is dropped.
    SubscribeFail {
        /// The channel.
        channel: String,
        /// The server's error.
        error: ScError,
    },
    /// The server kicked the client out of a channel; the channel is dropped.
    KickOut {
        /// The channel.
        channel: String,
        /// The server's message, if any.
        message: Option<Value>,
    },
    /// The server could not send what the client missed on a channel with history while it was
    /// away (the history overflowed, expired or was lost): nothing of the gap was delivered,
    /// live publications follow; reload the channel's state.
    NotRecovered {
        /// The channel.
        channel: String,
    },
    /// Sockets joined or left a channel with presence and join/leave events (the server batches
    /// them; `cut`: some were left out, ask [`Client::presence`](super::Client::presence) again).
    Presence {
        /// The channel.
        channel: String,
        /// Who joined.
        joins: Vec<super::codec::PresenceEntry>,
        /// Who left.
        leaves: Vec<super::codec::PresenceEntry>,
        /// Whether either list was cut.
        cut: bool,
    },
    /// An error the official client would emit: `SocketProtocolError` (with `code`) for closes
    /// other than 1000/1001, the handshake's `TimeoutError` or rejection error.
    Error(ScError),
}

/// The outcome of [`Client::authenticate`](super::Client::authenticate).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthStatus {
    /// Whether the server accepted the token.
    pub is_authenticated: bool,
    /// Why not, when the server said so without failing the call.
    pub auth_error: Option<ScError>,
}
