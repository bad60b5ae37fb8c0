//! Channel contracts: a declared channel pattern says who may subscribe from a client, who may
//! publish from a client, and what a client's publication must be. The session enforces it for
//! every `#subscribe` and `#publish` on a name the pattern matches; names no pattern declares
//! keep SocketCluster's behaviour (`allow_client_publish`, middleware).
//!
//! ```
//! use sc_core::prelude::*;
//! use sc_core::app::contract::{Access, ChannelContract};
//!
//! #[derive(Serialize, Deserialize)]
//! struct ChatMsg { from: String, text: String }
//! #[derive(Deserialize)]
//! struct Claims { name: String }
//!
//! /// Clients may publish, but the message says who sent it, whatever the client wrote.
//! async fn stamp_sender(Auth(me): Auth<Claims>, Json(msg): Json<ChatMsg>) -> Json<ChatMsg> {
//!     Json(ChatMsg { from: me.name, ..msg })
//! }
//!
//! let app = App::new().channel_contract(
//!     ChannelContract::new("rooms/{id}")
//!         .message::<ChatMsg>()
//!         .subscribe(Access::Authenticated)
//!         .publish(Access::guard(stamp_sender)),
//! );
//! ```
//!
//! What `#[channel("rooms/{id}", message = ChatMsg, subscribe = authenticated, publish =
//! stamp_sender)]` registers is exactly this.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::broker::history::HistoryPolicy;

pub use super::presence::{PresenceAccess, PresencePolicy};

use super::handler::{erase, ErasedHandler, Handler};
use super::middleware::{Decision, IntoDecision};

/// Who may perform an action on a declared channel from a client.
#[derive(Clone)]
#[non_exhaustive]
pub enum Access {
    /// Every client.
    Anyone,
    /// Clients whose socket holds a valid auth token.
    Authenticated,
    /// No client: only server code (`Exchange::publish`, `Exchange::subscribe`). The default for
    /// publishing; for subscribing it keeps every client out.
    Server,
    /// A guard: an async fn over extractors, like middleware, that allows (`()`), refuses
    /// (`Err(Block)`) or, for a publish, replaces the message (`Json(new)`).
    Guard(Guard),
}

impl Access {
    /// A guard function (see [`Access::Guard`]).
    pub fn guard<H, T>(handler: H) -> Self
    where
        H: Handler<T>,
        H::Output: IntoDecision,
        T: 'static,
    {
        Self::Guard(Guard(erase(handler, IntoDecision::into_decision)))
    }

    /// How the declaration reads, for error messages: `authenticated`, `server`, ...
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Self::Anyone => "anyone",
            Self::Authenticated => "authenticated",
            Self::Server => "server",
            Self::Guard(_) => "a guard",
        }
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// A guard function, type-erased.
#[derive(Clone)]
pub struct Guard(pub(crate) ErasedHandler<Decision>);

/// Reads a client's publication as the channel's message type and writes it back: what
/// subscribers get is exactly a message of that type (unknown fields dropped), or an error.
pub(crate) type MessageCheck = Arc<dyn Fn(&Value) -> Result<Value, String> + Send + Sync>;

/// A channel pattern's contract; register it with [`App::channel_contract`](super::App::channel_contract).
#[derive(Clone)]
pub struct ChannelContract {
    pub(crate) pattern: String,
    pub(crate) subscribe: Access,
    pub(crate) publish: Access,
    pub(crate) message: Option<(Arc<str>, MessageCheck)>,
    pub(crate) history: Option<HistoryPolicy>,
    pub(crate) presence: Option<PresencePolicy>,
    /// The message's TypeScript type, for the contract file (`ts_message`).
    pub(crate) ts_message: Option<super::typescript::TsType>,
    /// The captures' TypeScript types (`ts_capture`): numbers make `${number}` in the pattern.
    pub(crate) ts_captures: Vec<(String, super::typescript::TsType)>,
}

impl fmt::Debug for ChannelContract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelContract")
            .field("pattern", &self.pattern)
            .field("subscribe", &self.subscribe)
            .field("publish", &self.publish)
            .field("message", &self.message.as_ref().map(|(name, _)| name))
            .field("history", &self.history)
            .field("presence", &self.presence)
            .finish()
    }
}

impl ChannelContract {
    /// The defaults: anyone may subscribe, only the server publishes.
    pub fn new(pattern: impl Into<String>) -> Self {
        Self {
            pattern: pattern.into(),
            subscribe: Access::Anyone,
            publish: Access::Server,
            message: None,
            history: None,
            presence: None,
            ts_message: None,
            ts_captures: Vec::new(),
        }
    }

    /// Who may subscribe ([`Access::Server`]: no client may).
    pub fn subscribe(mut self, access: Access) -> Self {
        self.subscribe = access;
        self
    }

    /// Who may publish from a client.
    pub fn publish(mut self, access: Access) -> Self {
        self.publish = access;
        self
    }

    /// A client's publication must deserialize as `M`, or it is refused with
    /// `InvalidArgumentsError`; what is delivered is that `M` written back (fields `M` does not
    /// have are dropped). Checked before a publish guard runs, and again on what the guard
    /// returns.
    pub fn message<M: DeserializeOwned + Serialize>(mut self) -> Self {
        let check: MessageCheck = Arc::new(|data: &Value| {
            let message = M::deserialize(data).map_err(|e| e.to_string())?;
            serde_json::to_value(&message).map_err(|e| e.to_string())
        });
        self.message = Some((short_type_name(std::any::type_name::<M>()), check));
        self
    }
}

impl ChannelContract {
    /// Keeps history on every channel the pattern matches (see [`crate::broker::history`]):
    /// each publication gets a position, and a client that resubscribes with its last position
    /// gets what it missed, or an explicit "not recovered". Overrides the server-wide default
    /// (`Config::history_size`). `#[channel(.., history = 100, history_ttl = "5m")]` writes
    /// `.history(HistoryPolicy::new(100, Duration::from_secs(300)))`. A size of 0 or a ttl under
    /// 1 s fails at startup.
    pub fn history(mut self, policy: HistoryPolicy) -> Self {
        self.history = Some(policy);
        self
    }
}

impl ChannelContract {
    /// Keeps presence on every channel the pattern matches (see [`PresencePolicy`]): who is
    /// subscribed, cluster-wide, for `Exchange::presence` and the client procedure `#presence`,
    /// and with [`PresencePolicy::join_leave`] batched join/leave events for subscribers.
    /// Overrides the server-wide default (`Config::presence`). `#[channel(.., presence)]` writes
    /// `.presence(PresencePolicy::new())`, `#[channel(.., presence, join_leave)]`
    /// `.presence(PresencePolicy::new().join_leave(true))`.
    pub fn presence(mut self, policy: PresencePolicy) -> Self {
        self.presence = Some(policy);
        self
    }

    /// The message type in the TypeScript contract (`App::typescript`); without it, `unknown`.
    /// `#[channel(.., message = M)]` writes it (`unknown` when `M` does not derive `TS`).
    pub fn ts_message(mut self, message: super::typescript::TsType) -> Self {
        self.ts_message = Some(message);
        self
    }

    /// A capture's type in the TypeScript contract: a number makes the pattern's template
    /// literal `rooms/${number}`; otherwise captures are `${string}`.
    pub fn ts_capture(mut self, capture: impl Into<String>, ty: super::typescript::TsType) -> Self {
        self.ts_captures.push((capture.into(), ty));
        self
    }
}

/// `alloc::vec::Vec<app::ChatMsg>` -> `Vec<ChatMsg>`: each path without its modules.
fn short_type_name(full: &str) -> Arc<str> {
    let mut short = String::with_capacity(full.len());
    let mut segment = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            segment.push(c);
        } else {
            short.push_str(segment.rsplit("::").next().unwrap_or(""));
            segment.clear();
            short.push(c);
        }
    }
    short.push_str(segment.rsplit("::").next().unwrap_or(""));
    short.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_lose_their_modules() {
        assert_eq!(&*short_type_name("app::ChatMsg"), "ChatMsg");
        assert_eq!(
            &*short_type_name("alloc::vec::Vec<app::ChatMsg>"),
            "Vec<ChatMsg>"
        );
        assert_eq!(
            &*short_type_name("std::collections::HashMap<alloc::string::String, u8>"),
            "HashMap<String, u8>"
        );
    }
}
