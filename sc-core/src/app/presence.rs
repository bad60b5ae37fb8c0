//! Presence declarations: which channels keep presence (who is subscribed, cluster-wide), who
//! may ask for it with `#presence`, and whether subscribers get join/leave events. Attached to a
//! channel pattern with [`ChannelContract::presence`](super::contract::ChannelContract::presence)
//! (what `#[channel(.., presence, join_leave)]` writes), or to every undeclared channel with the
//! server-wide default (`Config::presence`, `SC_PRESENCE=1`).

/// Who may ask for a channel's presence with the client procedure `#presence`. Server code
/// (`Exchange::presence`) always may.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PresenceAccess {
    /// Only sockets subscribed to the channel (the default).
    #[default]
    Subscribers,
    /// Sockets holding a valid auth token.
    Authenticated,
    /// Every socket.
    Anyone,
}

/// A channel's presence: an entry per subscribed socket, who may ask for them, and whether
/// subscribers get batched `#presence` join/leave events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PresencePolicy {
    pub(crate) join_leave: bool,
    pub(crate) query: PresenceAccess,
}

impl PresencePolicy {
    /// Presence without join/leave events, queried by subscribers only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribers also get `{"event":"#presence","data":{"channel","joins","leaves"}}`, batched
    /// per channel in a window of `Config::presence_window`.
    pub fn join_leave(mut self, on: bool) -> Self {
        self.join_leave = on;
        self
    }

    /// Who may ask with `#presence` (default [`PresenceAccess::Subscribers`]).
    pub fn query(mut self, access: PresenceAccess) -> Self {
        self.query = access;
        self
    }

    /// Whether subscribers get join/leave events.
    pub fn has_join_leave(&self) -> bool {
        self.join_leave
    }

    /// Who may ask with `#presence`.
    pub fn query_access(&self) -> PresenceAccess {
        self.query
    }
}
