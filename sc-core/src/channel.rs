//! Typed channels: a channel-name pattern such as `rooms/{id}` bound to a struct whose fields are
//! the pattern's captures, and to the one message type published on it.
//!
//! A pattern is a `/`-separated list of non-empty segments; each segment is either literal text or
//! a whole capture `{name}` (a capture matches one non-empty segment).
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
//! [`App::channel_at`](crate::App::channel_at) records a pattern so that overlapping typed
//! channels (`rooms/{id}` and `rooms/{name}`, or `rooms/{id}` and `rooms/lobby`: a capture matches
//! any segment) fail at startup, naming both source locations.

use std::fmt::Display;
use std::str::FromStr;

use serde::Serialize;

use crate::protocol::ScError;

/// A channel type with a fixed name pattern and message type (what `#[channel]` implements).
pub trait TypedChannel {
    /// The name pattern, e.g. `rooms/{id}`.
    const PATTERN: &'static str;
    /// What is published on the channel.
    type Message: Serialize;
}

/// One segment of a [`ChannelPattern`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Text that must appear as is.
    Literal(String),
    /// `{name}`: any non-empty segment.
    Capture(String),
}

/// A parsed channel-name pattern such as `rooms/{id}/messages`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelPattern {
    source: String,
    segments: Vec<Segment>,
}

/// Why a channel pattern is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// `""`.
    #[error("a channel pattern must not be empty")]
    Empty,
    /// `a//b`, `/a` or `a/`.
    #[error(
        "segment {index} is empty: separate segments with a single '/', with none at the start or the end"
    )]
    EmptySegment {
        /// 1-based position of the empty segment.
        index: usize,
    },
    /// `room-{id}`, `{a}{b}`.
    #[error(
        "segment '{segment}' mixes a capture with other text: a capture is a whole segment, like 'rooms/{{id}}'"
    )]
    MixedSegment {
        /// The segment.
        segment: String,
    },
    /// `{id`, `id}`, `{{id}}`.
    #[error("segment '{segment}' has an unmatched '{{' or '}}': write a capture as '{{name}}'")]
    UnbalancedBrace {
        /// The segment.
        segment: String,
    },
    /// `{}`, `{1x}`, `{a-b}`.
    #[error(
        "'{{{name}}}' is not a valid capture: a capture is named like a Rust field (letters, digits, '_'; not starting with a digit)"
    )]
    InvalidCapture {
        /// What was between the braces.
        name: String,
    },
    /// `{id}/{id}`.
    #[error("capture '{{{name}}}' appears twice")]
    DuplicateCapture {
        /// The capture.
        name: String,
    },
}

/// Whether `name` is a valid capture name (a Rust identifier, raw prefix excluded).
fn is_capture_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c == '_' || c.is_alphabetic() => {}
        _ => return false,
    }
    name != "_" && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// Classifies one non-empty pattern segment.
fn parse_segment(segment: &str) -> Result<Segment, PatternError> {
    if !segment.contains(['{', '}']) {
        return Ok(Segment::Literal(segment.to_owned()));
    }
    let mut depth = 0i32;
    for c in segment.chars() {
        depth += match c {
            '{' => 1,
            '}' => -1,
            _ => 0,
        };
        if !(0..=1).contains(&depth) {
            break;
        }
    }
    if depth != 0 {
        return Err(PatternError::UnbalancedBrace {
            segment: segment.to_owned(),
        });
    }
    match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
        Some(inner) if !inner.contains(['{', '}']) => {
            if is_capture_name(inner) {
                Ok(Segment::Capture(inner.to_owned()))
            } else {
                Err(PatternError::InvalidCapture {
                    name: inner.to_owned(),
                })
            }
        }
        _ => Err(PatternError::MixedSegment {
            segment: segment.to_owned(),
        }),
    }
}

impl ChannelPattern {
    /// Parses a pattern.
    ///
    /// ```
    /// use sc_core::channel::{ChannelPattern, Segment};
    /// let p = ChannelPattern::parse("rooms/{id}").unwrap();
    /// assert_eq!(p.segments()[1], Segment::Capture("id".into()));
    /// assert!(ChannelPattern::parse("rooms//{id}").is_err());
    /// ```
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        let mut segments = Vec::new();
        for (i, segment) in pattern.split('/').enumerate() {
            if segment.is_empty() {
                return Err(PatternError::EmptySegment { index: i + 1 });
            }
            let segment = parse_segment(segment)?;
            if let Segment::Capture(name) = &segment {
                if segments.contains(&segment) {
                    return Err(PatternError::DuplicateCapture { name: name.clone() });
                }
            }
            segments.push(segment);
        }
        Ok(Self {
            source: pattern.to_owned(),
            segments,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The capture names, in order.
    pub fn captures(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Capture(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Matches a channel name: `Some` with each capture's name and value, in pattern order.
    ///
    /// ```
    /// use sc_core::channel::ChannelPattern;
    /// let p = ChannelPattern::parse("rooms/{id}/log").unwrap();
    /// assert_eq!(p.match_name("rooms/7/log"), Some(vec![("id", "7")]));
    /// assert_eq!(p.match_name("rooms//log"), None);
    /// ```
    pub fn match_name<'n>(&self, name: &'n str) -> Option<Vec<(&str, &'n str)>> {
        let mut captures = Vec::new();
        let mut parts = name.split('/');
        for segment in &self.segments {
            let part = parts.next()?;
            match segment {
                Segment::Literal(text) if text == part => {}
                Segment::Capture(capture) if !part.is_empty() => {
                    captures.push((capture.as_str(), part))
                }
                _ => return None,
            }
        }
        match parts.next() {
            None => Some(captures),
            Some(_) => None,
        }
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        self.match_name(name).is_some()
    }

    /// When some channel name matches both patterns, one such name (captures filled with `x`).
    ///
    /// ```
    /// use sc_core::channel::ChannelPattern;
    /// let a = ChannelPattern::parse("rooms/{id}").unwrap();
    /// let b = ChannelPattern::parse("rooms/{name}").unwrap();
    /// let c = ChannelPattern::parse("rooms/{id}/log").unwrap();
    /// assert_eq!(a.overlap(&b).as_deref(), Some("rooms/x"));
    /// assert_eq!(a.overlap(&c), None);
    /// ```
    pub fn overlap(&self, other: &ChannelPattern) -> Option<String> {
        if self.segments.len() != other.segments.len() {
            return None;
        }
        let mut example = Vec::with_capacity(self.segments.len());
        for pair in self.segments.iter().zip(&other.segments) {
            example.push(match pair {
                (Segment::Literal(a), Segment::Literal(b)) if a == b => a.as_str(),
                (Segment::Literal(_), Segment::Literal(_)) => return None,
                (Segment::Literal(a), Segment::Capture(_))
                | (Segment::Capture(_), Segment::Literal(a)) => a.as_str(),
                (Segment::Capture(_), Segment::Capture(_)) => "x",
            });
        }
        Some(example.join("/"))
    }
}

impl Display for ChannelPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
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

    fn parse(p: &str) -> ChannelPattern {
        ChannelPattern::parse(p).expect("valid pattern")
    }

    #[test]
    fn parses_literals_and_captures() {
        let p = parse("rooms/{id}/messages/{n}");
        assert_eq!(
            p.segments(),
            &[
                Segment::Literal("rooms".into()),
                Segment::Capture("id".into()),
                Segment::Literal("messages".into()),
                Segment::Capture("n".into()),
            ]
        );
        assert_eq!(p.captures().collect::<Vec<_>>(), ["id", "n"]);
        assert_eq!(p.as_str(), "rooms/{id}/messages/{n}");
        assert_eq!(parse("lobby").captures().count(), 0);
        assert_eq!(parse("{_x1}").captures().collect::<Vec<_>>(), ["_x1"]);
    }

    #[test]
    fn rejects_malformed_patterns() {
        use PatternError::*;
        let err = |p: &str| ChannelPattern::parse(p).expect_err(p);
        assert_eq!(err(""), Empty);
        assert_eq!(err("a//b"), EmptySegment { index: 2 });
        assert_eq!(err("/a"), EmptySegment { index: 1 });
        assert_eq!(err("a/"), EmptySegment { index: 2 });
        assert!(matches!(err("rooms/{id"), UnbalancedBrace { .. }));
        assert!(matches!(err("rooms/id}"), UnbalancedBrace { .. }));
        assert!(matches!(err("rooms/}id{"), UnbalancedBrace { .. }));
        assert!(matches!(err("rooms/{{id}}"), UnbalancedBrace { .. }));
        assert!(matches!(err("rooms/room-{id}"), MixedSegment { .. }));
        assert!(matches!(err("rooms/{a}{b}"), MixedSegment { .. }));
        assert!(matches!(err("rooms/{}"), InvalidCapture { .. }));
        assert!(matches!(err("rooms/{1x}"), InvalidCapture { .. }));
        assert!(matches!(err("rooms/{a-b}"), InvalidCapture { .. }));
        assert!(matches!(err("rooms/{_}"), InvalidCapture { .. }));
        assert_eq!(err("a/{id}/b/{id}"), DuplicateCapture { name: "id".into() });
    }

    #[test]
    fn matches_whole_segments_only() {
        let p = parse("rooms/{id}");
        assert_eq!(p.match_name("rooms/42"), Some(vec![("id", "42")]));
        assert!(p.matches("rooms/a b"));
        assert!(!p.matches("rooms"));
        assert!(!p.matches("rooms/"));
        assert!(!p.matches("rooms/1/2"));
        assert!(!p.matches("room/1"));
        assert!(!p.matches("/rooms/1"));
        assert!(!p.matches(""));
        let lit = parse("lobby");
        assert!(lit.matches("lobby"));
        assert!(!lit.matches("lobby/1"));
    }

    #[test]
    fn detects_overlaps() {
        let overlap = |a: &str, b: &str| {
            let (a, b) = (parse(a), parse(b));
            let one = a.overlap(&b);
            assert_eq!(one, b.overlap(&a), "overlap is symmetric");
            if let Some(example) = &one {
                assert!(a.matches(example) && b.matches(example), "{example}");
            }
            one
        };
        assert_eq!(
            overlap("rooms/{id}", "rooms/{name}").as_deref(),
            Some("rooms/x")
        );
        assert_eq!(
            overlap("rooms/{id}", "rooms/lobby").as_deref(),
            Some("rooms/lobby")
        );
        assert_eq!(overlap("{a}/b", "a/{b}").as_deref(), Some("a/b"));
        assert_eq!(
            overlap("rooms/{id}", "rooms/{id}").as_deref(),
            Some("rooms/x")
        );
        assert_eq!(overlap("rooms/{id}", "users/{id}"), None);
        assert_eq!(overlap("rooms/{id}", "rooms/{id}/log"), None);
        assert_eq!(overlap("a/b", "a/c"), None);
    }

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
