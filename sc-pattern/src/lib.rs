//! The channel-name pattern grammar of sc: patterns such as `rooms/{id}` or `users/{id}/inbox`,
//! parsed into a [`ChannelPattern`], matched against channel names, and checked for overlap.
//!
//! A pattern is a `/`-separated list of non-empty segments; each segment is either literal text or
//! a whole capture `{name}`, named like a Rust field (a capture matches one non-empty segment).
//!
//! ```
//! use sc_pattern::{ChannelPattern, PatternError};
//!
//! let room = ChannelPattern::parse("rooms/{id}").unwrap();
//! assert_eq!(room.match_name("rooms/7"), Some(vec![("id", "7")]));
//! assert!(!room.matches("rooms/7/log"));
//!
//! let err = ChannelPattern::parse("rooms/{id}/{id}").unwrap_err();
//! assert_eq!(err, PatternError::DuplicateCapture { name: "id".into() });
//! ```
//!
//! It is its own crate so that there is one grammar, not two that drift: sc-core parses patterns
//! at run time (typed channels, overlap checks at startup) and sc-macros checks
//! `#[channel("...")]` at compile time, but sc-macros is a proc-macro crate and cannot depend on
//! sc-core (sc-core depends on it). So the grammar lives below both, with no dependencies, the
//! way `rocket_http` serves both `rocket` and `rocket_codegen`. Applications use it through
//! `sc_core::channel`, which re-exports it.
//!
//! Each [`PatternError`] has two wordings from the same data: its `Display`, used at run time and
//! in startup errors, and [`PatternError::in_attribute`], the compile error of `#[channel]`, which
//! quotes the whole pattern and says what to write instead. The macro reports every mistake at
//! once ([`ChannelPattern::parse_with_all_errors`]); [`ChannelPattern::parse`] stops at the
//! first, which is always the first of that list.

use std::fmt::{self, Display};

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
///
/// `Display` gives the run-time wording; [`in_attribute`](Self::in_attribute) the compile-time
/// one of `#[channel]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatternError {
    /// `""`.
    Empty,
    /// `a//b`, `/a` or `a/`.
    EmptySegment {
        /// 1-based position of the empty segment.
        index: usize,
    },
    /// `room-{id}`, `{a}{b}`.
    MixedSegment {
        /// The segment.
        segment: String,
    },
    /// `{id`, `id}`, `{{id}}`.
    UnbalancedBrace {
        /// The segment.
        segment: String,
    },
    /// `{}`, `{1x}`, `{a-b}`.
    InvalidCapture {
        /// What was between the braces.
        name: String,
    },
    /// `{id}/{id}`.
    DuplicateCapture {
        /// The capture.
        name: String,
    },
}

impl Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("a channel pattern must not be empty"),
            Self::EmptySegment { index } => write!(
                f,
                "segment {index} is empty: separate segments with a single '/', with none at the start or the end"
            ),
            Self::MixedSegment { segment } => write!(
                f,
                "segment '{segment}' mixes a capture with other text: a capture is a whole segment, like 'rooms/{{id}}'"
            ),
            Self::UnbalancedBrace { segment } => write!(
                f,
                "segment '{segment}' has an unmatched '{{' or '}}': write a capture as '{{name}}'"
            ),
            Self::InvalidCapture { name } => write!(
                f,
                "'{{{name}}}' is not a valid capture: a capture is named like a Rust field (letters, digits, '_'; not starting with a digit)"
            ),
            Self::DuplicateCapture { name } => write!(f, "capture '{{{name}}}' appears twice"),
        }
    }
}

impl std::error::Error for PatternError {}

impl PatternError {
    /// This error as `#[channel(..)]` reports it at compile time for `pattern` (the pattern as
    /// written): it names the whole pattern, quotes in rustc's style and says what to write
    /// instead. `EmptySegment` does not give the position (the macro reports it once).
    ///
    /// ```
    /// use sc_pattern::ChannelPattern;
    /// let err = ChannelPattern::parse("users/user-{id}").unwrap_err();
    /// assert_eq!(
    ///     err.in_attribute("users/user-{id}").to_string(),
    ///     "segment \"user-{id}\" of \"users/user-{id}\" mixes a capture with other text: \
    ///      a capture is a whole segment, like \"rooms/{id}\"",
    /// );
    /// ```
    pub fn in_attribute<'a>(&'a self, pattern: &'a str) -> InAttribute<'a> {
        InAttribute {
            error: self,
            pattern,
        }
    }
}

/// A [`PatternError`] worded for the compile error of `#[channel]`
/// ([`PatternError::in_attribute`]).
#[derive(Clone, Copy, Debug)]
pub struct InAttribute<'a> {
    error: &'a PatternError,
    pattern: &'a str,
}

impl Display for InAttribute<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pattern = self.pattern;
        match self.error {
            PatternError::Empty => f.write_str(
                "the channel pattern must not be empty: write e.g. `#[channel(\"rooms/{id}\", message = ChatMsg)]`",
            ),
            PatternError::EmptySegment { .. } => write!(
                f,
                "empty segment in \"{pattern}\": separate segments with a single `/`, with none at the start or the end"
            ),
            PatternError::MixedSegment { segment } => write!(
                f,
                "segment \"{segment}\" of \"{pattern}\" mixes a capture with other text: a capture is a whole segment, like \"rooms/{{id}}\""
            ),
            PatternError::UnbalancedBrace { segment } => write!(
                f,
                "unmatched brace in segment \"{segment}\" of \"{pattern}\": write a capture as `{{name}}`"
            ),
            PatternError::InvalidCapture { name } => write!(
                f,
                "`{{{name}}}` in \"{pattern}\" is not a valid capture: name it like the field it fills, e.g. `{{id}}`"
            ),
            PatternError::DuplicateCapture { name } => write!(
                f,
                "duplicate capture `{{{name}}}` in \"{pattern}\": each capture fills its own field; rename one"
            ),
        }
    }
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

/// The errors of one parse: the first, then the others in pattern order.
type Errors = (PatternError, Vec<PatternError>);

/// The one parser behind [`ChannelPattern::parse`] (`all == false`: stops at the first error)
/// and [`ChannelPattern::parse_with_all_errors`] (`all == true`).
///
/// Errors come in segment order. Empty segments are reported once, at the first (the rest add
/// nothing). A capture is a duplicate of an earlier valid capture only.
fn parse_segments(pattern: &str, all: bool) -> Result<Vec<Segment>, Errors> {
    if pattern.is_empty() {
        return Err((PatternError::Empty, Vec::new()));
    }
    let mut segments = Vec::new();
    let mut errors: Option<Errors> = None;
    let mut empty_reported = false;
    for (i, segment) in pattern.split('/').enumerate() {
        let parsed = if segment.is_empty() {
            if empty_reported {
                continue;
            }
            empty_reported = true;
            Err(PatternError::EmptySegment { index: i + 1 })
        } else {
            parse_segment(segment).and_then(|segment| match &segment {
                Segment::Capture(name) if segments.contains(&segment) => {
                    Err(PatternError::DuplicateCapture { name: name.clone() })
                }
                _ => Ok(segment),
            })
        };
        match (parsed, &mut errors) {
            (Ok(segment), _) => segments.push(segment),
            (Err(error), None) if !all => return Err((error, Vec::new())),
            (Err(error), None) => errors = Some((error, Vec::new())),
            (Err(error), Some((_, rest))) => rest.push(error),
        }
    }
    match errors {
        None => Ok(segments),
        Some(errors) => Err(errors),
    }
}

impl ChannelPattern {
    /// Parses a pattern; fails with its first error.
    ///
    /// ```
    /// use sc_pattern::{ChannelPattern, Segment};
    /// let p = ChannelPattern::parse("rooms/{id}").unwrap();
    /// assert_eq!(p.segments()[1], Segment::Capture("id".into()));
    /// assert!(ChannelPattern::parse("rooms//{id}").is_err());
    /// ```
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        match parse_segments(pattern, false) {
            Ok(segments) => Ok(Self {
                source: pattern.to_owned(),
                segments,
            }),
            Err((first, _)) => Err(first),
        }
    }

    /// Parses a pattern like [`parse`](Self::parse), but fails with every error, in pattern order
    /// (never an empty list; the first is the one `parse` gives). An empty segment is reported
    /// once, however many there are.
    ///
    /// ```
    /// use sc_pattern::{ChannelPattern, PatternError};
    /// let errors = ChannelPattern::parse_with_all_errors("a//{b/{c}{d}").unwrap_err();
    /// assert_eq!(errors.len(), 3);
    /// assert_eq!(errors[0], PatternError::EmptySegment { index: 2 });
    /// ```
    pub fn parse_with_all_errors(pattern: &str) -> Result<Self, Vec<PatternError>> {
        match parse_segments(pattern, true) {
            Ok(segments) => Ok(Self {
                source: pattern.to_owned(),
                segments,
            }),
            Err((first, rest)) => {
                let mut errors = Vec::with_capacity(1 + rest.len());
                errors.push(first);
                errors.extend(rest);
                Err(errors)
            }
        }
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
    /// use sc_pattern::ChannelPattern;
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

    /// Whether `name` matches. Allocates nothing: the server asks this of every declared
    /// pattern on each publish to a channel with history, or through a contract.
    pub fn matches(&self, name: &str) -> bool {
        let mut parts = name.split('/');
        self.segments
            .iter()
            .all(|segment| match (segment, parts.next()) {
                (Segment::Literal(text), Some(part)) => text == part,
                (Segment::Capture(_), Some(part)) => !part.is_empty(),
                (_, None) => false,
            })
            && parts.next().is_none()
    }

    /// When some channel name matches both patterns, one such name (captures filled with `x`).
    ///
    /// ```
    /// use sc_pattern::ChannelPattern;
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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
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
        assert_eq!(p.to_string(), "rooms/{id}/messages/{n}");
        assert_eq!(parse("lobby").captures().count(), 0);
        assert_eq!(parse("{_x1}").captures().collect::<Vec<_>>(), ["_x1"]);
        assert_eq!(
            ChannelPattern::parse_with_all_errors("rooms/{id}/messages/{n}"),
            Ok(p)
        );
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
    fn reports_every_error_in_order_the_first_as_parse_does() {
        use PatternError::*;
        let all = |p: &str| ChannelPattern::parse_with_all_errors(p).expect_err(p);
        assert_eq!(
            all("a//{b/{c}{d}"),
            [
                EmptySegment { index: 2 },
                UnbalancedBrace {
                    segment: "{b".into()
                },
                MixedSegment {
                    segment: "{c}{d}".into()
                },
            ]
        );
        // Empty segments once; a duplicate only of a valid capture.
        assert_eq!(all("/a//b/"), [EmptySegment { index: 1 }]);
        assert_eq!(
            all("{1}/{1}/{x}/{x}"),
            [
                InvalidCapture { name: "1".into() },
                InvalidCapture { name: "1".into() },
                DuplicateCapture { name: "x".into() },
            ]
        );
        assert_eq!(all(""), [Empty]);
        for p in ["", "a//b", "{x}/{x}/{", "a/{1}/", "x{y}/{}"] {
            assert_eq!(
                ChannelPattern::parse(p).as_ref().err(),
                all(p).first(),
                "{p}"
            );
        }
    }

    /// The run-time wording: sc-core's tests and its clients see these exact texts.
    #[test]
    fn displays_each_error() {
        let err = |p: &str| ChannelPattern::parse(p).expect_err(p).to_string();
        assert_eq!(err(""), "a channel pattern must not be empty");
        assert_eq!(
            err("a//b"),
            "segment 2 is empty: separate segments with a single '/', with none at the start or the end"
        );
        assert_eq!(
            err("a/x{id}"),
            "segment 'x{id}' mixes a capture with other text: a capture is a whole segment, like 'rooms/{id}'"
        );
        assert_eq!(
            err("a/{id"),
            "segment '{id' has an unmatched '{' or '}': write a capture as '{name}'"
        );
        assert_eq!(
            err("a/{1x}"),
            "'{1x}' is not a valid capture: a capture is named like a Rust field (letters, digits, '_'; not starting with a digit)"
        );
        assert_eq!(err("{id}/{id}"), "capture '{id}' appears twice");
    }

    /// The compile-time wording of `#[channel]` (its UI tests compare these exact texts).
    #[test]
    fn words_each_error_for_the_attribute() {
        let first = |p: &str| {
            ChannelPattern::parse(p)
                .expect_err(p)
                .in_attribute(p)
                .to_string()
        };
        assert_eq!(
            first(""),
            "the channel pattern must not be empty: write e.g. `#[channel(\"rooms/{id}\", message = ChatMsg)]`"
        );
        assert_eq!(
            first("rooms//{id}"),
            "empty segment in \"rooms//{id}\": separate segments with a single `/`, with none at the start or the end"
        );
        assert!(first("/a").starts_with("empty segment"));
        assert!(first("a/").starts_with("empty segment"));
        assert_eq!(
            first("rooms/{id"),
            "unmatched brace in segment \"{id\" of \"rooms/{id\": write a capture as `{name}`"
        );
        assert!(first("a/id}").starts_with("unmatched brace"));
        assert!(first("a/{{id}}").starts_with("unmatched brace"));
        assert_eq!(
            first("users/user-{id}"),
            "segment \"user-{id}\" of \"users/user-{id}\" mixes a capture with other text: a capture is a whole segment, like \"rooms/{id}\""
        );
        assert!(first("a/{a}{b}").contains("mixes a capture with other text"));
        assert_eq!(
            first("a/{}"),
            "`{}` in \"a/{}\" is not a valid capture: name it like the field it fills, e.g. `{id}`"
        );
        assert!(first("a/{1}").contains("is not a valid capture"));
        assert_eq!(
            first("rooms/{id}/replies/{id}"),
            "duplicate capture `{id}` in \"rooms/{id}/replies/{id}\": each capture fills its own field; rename one"
        );
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
        // `matches` and `match_name` agree.
        for pattern in ["rooms/{id}", "lobby", "a/{x}/b/{y}", "{any}"] {
            let p = parse(pattern);
            for name in [
                "rooms/1",
                "rooms//",
                "a/1/b/2",
                "a/1/b/",
                "lobby",
                "x",
                "",
                "/",
                "a/1/b/2/c",
            ] {
                assert_eq!(
                    p.matches(name),
                    p.match_name(name).is_some(),
                    "{pattern} {name}"
                );
            }
        }
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
}
