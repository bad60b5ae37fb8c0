//! [`Client::presence`]: who is subscribed to a channel with presence (the reserved procedure
//! `#presence`). Join/leave events arrive as [`ClientEvent::Presence`](super::ClientEvent).

use serde::Deserialize;

use super::codec::PresenceEntry;
use super::{Client, InvokeError};

/// The server's answer to `#presence`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Presence {
    /// Subscribed sockets, cluster-wide.
    pub count: usize,
    /// Distinct users among them (guests not counted).
    pub users: usize,
    /// One entry per socket, at most the server's `presence_max_entries`.
    pub entries: Vec<PresenceEntry>,
    /// Whether `entries` stops short of `count`.
    #[serde(default)]
    pub cut: bool,
}

impl Client {
    /// Who is subscribed to `channel`. The server refuses (an `InvalidActionError` in
    /// [`InvokeError::Remote`]) a channel without presence, or a client its policy does not
    /// allow to ask (by default: one not subscribed to it).
    pub async fn presence(&self, channel: &str) -> Result<Presence, InvokeError> {
        self.invoke("#presence", &serde_json::json!({ "channel": channel }))
            .await
    }
}
