//! Typed channels: a channel-name pattern such as `rooms/{id}` bound to a struct whose fields are
//! the pattern's captures, and to the one message type published on it.
//!
//! A pattern is a `/`-separated list of non-empty segments; each segment is either literal text or
//! a whole capture `{name}` (a capture matches one non-empty segment). That grammar
//! ([`ChannelPattern`], [`Segment`], [`PatternError`]) is the `sc-pattern` crate, re-exported
//! here; the `#[channel]` macro checks patterns with the same crate, so what compiles is what
//! parses at run time.
//!
//! ```
//! use sc_core::prelude::*;
//!
//! #[derive(Serialize)]
//! struct ChatMsg { text: String }
//!
//! #[channel("rooms/{id}", message = ChatMsg)]
//! struct Room { id: u64 }
//!
//! #[event("hello")]
//! async fn hello(exchange: Exchange) -> Result<(), ScError> {
//!     // `&"text"` instead of a `ChatMsg` would not compile.
//!     exchange.publish(&Room { id: 1 }, &ChatMsg { text: "hi".into() }).await?;
//!     Ok(())
//! }
//!
//! // Only rooms can be subscribed to: `Channel<Room>` refuses other names (`InvalidChannelError`).
//! #[middleware(subscribe)]
//! async fn rooms_only(Channel(room): Channel<Room>) {
//!     let _ = room.id;
//! }
//!
//! let app: App = handlers![Room, hello, rooms_only];
//! ```
//!
//! The `#[channel]` macro checks the pattern against the struct at compile time and writes the
//! impls; this module holds what they use at run time, so everything can also be written by hand:
//!
//! ```
//! use std::borrow::Cow;
//! use sc_core::channel::{self, TypedChannel};
//! use sc_core::exchange::ChannelTarget;
//! use sc_core::extract::FromChannelName;
//! use sc_core::prelude::*;
//!
//! #[derive(Serialize)]
//! struct ChatMsg { text: String }
//!
//! // What `#[channel("rooms/{id}", message = ChatMsg)] struct Room { id: u64 }` generates, in short:
//! struct Room { id: u64 }
//!
//! impl TypedChannel for Room {
//!     const PATTERN: &'static str = "rooms/{id}";
//!     type Message = ChatMsg;
//! }
//! impl std::fmt::Display for Room {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         write!(f, "rooms/{}", self.id)
//!     }
//! }
//! impl ChannelTarget<ChatMsg> for Room {           // publish(&Room { .. }, &ChatMsg { .. }) only
//!     fn channel_name(&self) -> Cow<'_, str> {
//!         Cow::Owned(self.to_string())
//!     }
//! }
//! impl FromChannelName for Room {                  // the `Channel<Room>` extractor
//!     fn from_channel_name(name: &str) -> Result<Self, ScError> {
//!         let [id] = channel::captures(Self::PATTERN, name)?;
//!         Ok(Room { id: channel::parse_capture(Self::PATTERN, name, "id", id)? })
//!     }
//! }
//!
//! assert_eq!(Room::from_channel_name("rooms/7").map(|r| r.id).ok(), Some(7));
//! let err = Room::from_channel_name("lobby").err().map(|e| e.name().to_owned());
//! assert_eq!(err.as_deref(), Some("InvalidChannelError"));
//! ```
//!
//! A name that does not match is refused with `InvalidChannelError` ([`ChannelNameError`]); in
//! `Channel<Room>` that is the error the client receives (a subscribe middleware blocks with it).
//!
//! [`App::channel_at`](crate::App::channel_at) (and `App::channel_contract_at`, what the macro
//! calls) declares a pattern: overlapping declared channels (`rooms/{id}` and `rooms/{name}`, or
//! `rooms/{id}` and `rooms/lobby`: a capture matches any segment) fail at startup, naming both
//! source locations, and the declaration is the channel's contract for clients (who may
//! subscribe and publish; by default only the server publishes): see
//! [`App::channel_contract`](crate::App::channel_contract).

use std::fmt::Display;
use std::str::FromStr;

use serde::Serialize;

use crate::protocol::ScError;

pub use sc_pattern::{ChannelPattern, PatternError, Segment};

/// A channel type with a fixed name pattern and message type (what `#[channel]` implements).
pub trait TypedChannel {
    /// The name pattern, e.g. `rooms/{id}`.
    const PATTERN: &'static str;
    /// What is published on the channel.
    type Message: Serialize;
}

/// A channel name that does not fit a typed channel. The client receives it as
/// `InvalidChannelError` with the message below and a `channel` property.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNameError {
    /// The name's segments do not match the pattern.
    #[error("Channel '{name}' does not match the pattern '{pattern}'")]
    NoMatch {
        /// The channel name.
        name: String,
        /// The pattern.
        pattern: String,
    },
    /// A capture's text does not parse as the field's type.
    #[error(
        "Channel '{name}' does not match the pattern '{pattern}': '{value}' is not a valid {{{capture}}} ({reason})"
    )]
    InvalidCapture {
        /// The channel name.
        name: String,
        /// The pattern.
        pattern: String,
        /// The capture.
        capture: String,
        /// Its text in the name.
        value: String,
        /// The `FromStr` error.
        reason: String,
    },
    /// The pattern itself is invalid (a hand-written [`TypedChannel`]; the macro checks it).
    #[error("'{pattern}' is not a valid channel pattern: {error}")]
    InvalidPattern {
        /// The pattern.
        pattern: String,
        /// Why.
        error: PatternError,
    },
}

impl ChannelNameError {
    /// The channel name that was refused (empty for an invalid pattern).
    pub fn channel(&self) -> &str {
        match self {
            Self::NoMatch { name, .. } | Self::InvalidCapture { name, .. } => name,
            Self::InvalidPattern { .. } => "",
        }
    }
}

impl From<ChannelNameError> for ScError {
    fn from(e: ChannelNameError) -> Self {
        match &e {
            ChannelNameError::InvalidPattern { .. } => {
                tracing::error!(error = %e, "typed channel with an invalid pattern");
                ScError::internal()
            }
            _ => {
                let channel = e.channel().to_owned();
                ScError::new("InvalidChannelError", e.to_string()).with("channel", channel)
            }
        }
    }
}

/// Matches `name` against `pattern` and returns its `N` capture values, in pattern order.
///
/// Fails with [`ChannelNameError::NoMatch`] when the name does not match, and with
/// [`ChannelNameError::InvalidPattern`] when the pattern is invalid or has not `N` captures.
pub fn captures<'n, const N: usize>(
    pattern: &str,
    name: &'n str,
) -> Result<[&'n str; N], ChannelNameError> {
    let parsed =
        ChannelPattern::parse(pattern).map_err(|error| ChannelNameError::InvalidPattern {
            pattern: pattern.to_owned(),
            error,
        })?;
    let count = parsed.captures().count();
    if count != N {
        return Err(ChannelNameError::InvalidPattern {
            pattern: pattern.to_owned(),
            error: PatternError::InvalidCapture {
                name: format!("expected {N} captures, found {count}"),
            },
        });
    }
    let found = parsed
        .match_name(name)
        .ok_or_else(|| ChannelNameError::NoMatch {
            name: name.to_owned(),
            pattern: pattern.to_owned(),
        })?;
    let mut values = [""; N];
    for (slot, (_, value)) in values.iter_mut().zip(found) {
        *slot = value;
    }
    Ok(values)
}

/// A type a capture can have: parsed with `FromStr` from the name, written with `Display` into it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the type of a channel capture",
    label = "captures are parsed with `FromStr` and written with `Display`",
    note = "use `String`, an integer, or a type implementing `FromStr` (with an error that implements `Display`) and `Display`"
)]
pub trait CaptureValue: Sized {
    /// Parses `value`, the text of capture `capture` in channel `name` (which matched
    /// `pattern`); the error names all of them.
    fn parse_capture(
        pattern: &str,
        name: &str,
        capture: &str,
        value: &str,
    ) -> Result<Self, ChannelNameError>;

    /// Writes the value into a channel name.
    fn write_capture(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result;
}

#[diagnostic::do_not_recommend]
impl<T> CaptureValue for T
where
    T: FromStr + Display,
    T::Err: Display,
{
    fn parse_capture(
        pattern: &str,
        name: &str,
        capture: &str,
        value: &str,
    ) -> Result<Self, ChannelNameError> {
        value
            .parse()
            .map_err(|e: T::Err| ChannelNameError::InvalidCapture {
                name: name.to_owned(),
                pattern: pattern.to_owned(),
                capture: capture.to_owned(),
                value: value.to_owned(),
                reason: e.to_string(),
            })
    }

    fn write_capture(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Display::fmt(self, f)
    }
}

/// Parses `value`, the text of capture `capture` in channel `name`, as a `T`
/// ([`CaptureValue::parse_capture`]).
pub fn parse_capture<T: CaptureValue>(
    pattern: &str,
    name: &str,
    capture: &str,
    value: &str,
) -> Result<T, ChannelNameError> {
    T::parse_capture(pattern, name, capture, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_and_parse_capture_report_clear_errors() {
        assert_eq!(captures::<2>("a/{x}/{y}", "a/1/2"), Ok(["1", "2"]));
        assert_eq!(captures::<0>("lobby", "lobby"), Ok([]));
        let e = captures::<1>("rooms/{id}", "lobby").expect_err("no match");
        assert_eq!(
            e.to_string(),
            "Channel 'lobby' does not match the pattern 'rooms/{id}'"
        );
        assert!(matches!(
            captures::<2>("rooms/{id}", "rooms/1"),
            Err(ChannelNameError::InvalidPattern { .. })
        ));
        assert!(matches!(
            captures::<0>("a//b", "a//b"),
            Err(ChannelNameError::InvalidPattern { .. })
        ));

        assert_eq!(
            parse_capture::<u64>("rooms/{id}", "rooms/7", "id", "7"),
            Ok(7)
        );
        let e =
            parse_capture::<u64>("rooms/{id}", "rooms/abc", "id", "abc").expect_err("not a u64");
        assert_eq!(
            e.to_string(),
            "Channel 'rooms/abc' does not match the pattern 'rooms/{id}': 'abc' is not a valid {id} (invalid digit found in string)"
        );
        let sc = ScError::from(e);
        assert_eq!(sc.name(), "InvalidChannelError");
        assert_eq!(sc.get("channel"), Some(&serde_json::json!("rooms/abc")));
        let internal = ScError::from(ChannelNameError::InvalidPattern {
            pattern: "a//b".into(),
            error: PatternError::EmptySegment { index: 2 },
        });
        assert_eq!(internal.name(), "ServerError");
    }
}
