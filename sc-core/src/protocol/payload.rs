//! The fast path for the common inbound message, one app event such as
//! `{"event":"echo","data":{..},"cid":7}`: [`decode_event`] keeps its `data` as the text the
//! client sent ([`RawValue`]), and [`Payload`] parses it into a tree only when something asks
//! (middleware, `Json<Value>`, `Raw`); `Json<T>` deserialises `T` straight from the text and
//! `RawJson` passes it through untouched. A payload a handler passes through never becomes a tree.
//!
//! The fast path takes only messages whose meaning it knows to be exactly [`decode`](super::decode)'s;
//! anything else (a batch, a `#` event, `rid` or unknown keys, `\u` escapes, deep nesting,
//! exponents or very long numbers) goes the general way, so both agree on every message they
//! accept: the materialised tree is the one `decode` would have built.

use std::fmt;
use std::sync::OnceLock;

use serde::de::{Deserialize, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use super::Key;

/// One app event decoded by the fast path.
#[derive(Debug)]
pub(crate) struct RawEvent {
    pub(crate) event: String,
    /// `None` when the packet had no `data` key (`"data":null` is `Some("null")`).
    pub(crate) data: Option<Box<RawValue>>,
    pub(crate) cid: Option<u64>,
}

/// Nesting the fast path takes (serde_json's limit for a tree is 128, the envelope included);
/// deeper data goes the general way, which decides.
const MAX_DEPTH: usize = 100;
/// Longest run of digits the fast path takes: longer numbers go the general way, which decides
/// whether they are in range.
const MAX_DIGITS: usize = 300;

/// `text` as one app event, when it is a single object with a string `event` not starting with
/// `#` and nothing but `data` and `cid` besides; `None` sends it the general way.
pub(crate) fn decode_event(text: &str) -> Option<RawEvent> {
    // `#` events, written with `event` first by every client, go the general way at once.
    if text.starts_with("{\"event\":\"#") {
        return None;
    }
    let envelope = match compact(text) {
        Some(envelope) => envelope,
        None => {
            if !text.trim_start().starts_with('{') {
                return None;
            }
            serde_json::from_str::<Envelope>(text).ok()?.0?
        }
    };
    if !envelope.data.as_deref().is_none_or(plain) {
        return None;
    }
    Some(envelope)
}

/// The layout every client writes (`JSON.stringify({event, data, cid})`):
/// `{"event":"NAME","data":DATA,"cid":N}`, `data` and `cid` each optional, no whitespace, a name
/// without escapes and a cid of plain digits. Only `DATA` goes through the JSON parser; anything
/// else returns `None` for the general parse of the envelope to decide.
fn compact(text: &str) -> Option<RawEvent> {
    let rest = text.strip_prefix("{\"event\":\"")?;
    let end = memchr::memchr(b'"', rest.as_bytes())?;
    let name = &rest[..end];
    if name.starts_with('#') || name.bytes().any(|b| b == b'\\' || b < 0x20) {
        return None;
    }
    let mut rest = &rest[end + 1..];
    let mut data = None;
    if let Some(after) = rest.strip_prefix(",\"data\":") {
        let mut values = serde_json::Deserializer::from_str(after).into_iter::<&RawValue>();
        data = Some(values.next()?.ok()?.to_owned());
        rest = &after[values.byte_offset()..];
    }
    let cid = match rest.strip_prefix(",\"cid\":") {
        Some(after) => Some(cid(after.strip_suffix('}')?)?),
        None if rest == "}" => None,
        None => return None,
    };
    Some(RawEvent {
        event: name.to_owned(),
        data,
        cid,
    })
}

/// A cid written as JSON writes a non-negative integer that fits a `u64`.
fn cid(digits: &str) -> Option<u64> {
    let bytes = digits.as_bytes();
    let plain = !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit);
    // JSON has no leading zeros; `01` is for the general parse to refuse.
    if !plain || (bytes.len() > 1 && bytes[0] == b'0') {
        return None;
    }
    digits.parse().ok()
}

/// Whether raw JSON is free of what only the general parse can judge: deep nesting, exponents
/// (out-of-range floats), very long numbers and `\u` escapes (a lone surrogate is kept by
/// the raw text but refused by a tree).
fn plain(raw: &RawValue) -> bool {
    let bytes = raw.get().as_bytes();
    // Most payloads at once: short, no backslash, nothing like an exponent even inside strings,
    // few brackets. One pass without branches to mispredict; anything else is scanned exactly.
    if bytes.len() <= MAX_DIGITS {
        let (mut opens, mut suspect, mut previous) = (0usize, false, b' ');
        for &b in bytes {
            opens += usize::from(b == b'{' || b == b'[');
            suspect |= b == b'\\'
                || ((b | 0x20) == b'e' && (previous.is_ascii_digit() || previous == b'.'));
            previous = b;
        }
        if !suspect && opens <= MAX_DEPTH {
            return true;
        }
    }
    let (mut depth, mut digits, mut previous) = (0usize, 0usize, b' ');
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        if b == b'"' {
            // A string: to its closing quote, looking only at escapes.
            loop {
                let Some(next) = memchr::memchr2(b'"', b'\\', &bytes[i..]) else {
                    return false;
                };
                let at = i + next;
                if bytes[at] == b'"' {
                    i = at + 1;
                    break;
                }
                if bytes.get(at + 1) == Some(&b'u') {
                    return false;
                }
                i = at + 2;
            }
            digits = 0;
            previous = b'"';
            continue;
        }
        match b {
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return false;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'e' | b'E' if previous.is_ascii_digit() || previous == b'.' => return false,
            _ => {}
        }
        digits = if b.is_ascii_digit() { digits + 1 } else { 0 };
        if digits > MAX_DIGITS {
            return false;
        }
        previous = b;
    }
    true
}

/// The envelope of one event; `None` inside when it has keys the fast path leaves alone.
struct Envelope(Option<RawEvent>);

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EnvelopeVisitor;
        impl<'de> Visitor<'de> for EnvelopeVisitor {
            type Value = Envelope;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an event")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
                let (mut event, mut data, mut cid) = (None, None, None);
                // Like `JSON.parse`, a repeated key keeps its last value.
                // Keys read without allocating (the general decoder's own key visitor).
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        // A `#` event (the usual first key) ends the fast path before its data
                        // is scanned: `#publish` and the rest go the general way.
                        Key::Event => match map.next_value::<Value>()? {
                            Value::String(e) if !e.starts_with('#') => event = Some(e),
                            _ => return Ok(Envelope(None)),
                        },
                        // A repeated `data` goes the general way: only the last value would be
                        // checked by `plain`, and the general decoder judges every one.
                        Key::Data if data.is_some() => return Ok(Envelope(None)),
                        Key::Data => data = Some(map.next_value::<Box<RawValue>>()?),
                        // Only a whole non-negative number is a call id (see `packet_of_map`).
                        Key::Cid => {
                            cid = map.next_value::<Value>()?.as_u64().map(Some).or(Some(None))
                        }
                        _ => return Ok(Envelope(None)),
                    }
                }
                Ok(Envelope(event.map(|event| RawEvent {
                    event,
                    data,
                    cid: cid.flatten(),
                })))
            }
        }
        deserializer.deserialize_map(EnvelopeVisitor)
    }
}

/// A packet's `data`, as decoded or as text still to be parsed. Trees are boxed: a payload is
/// moved with its request through every handler's futures, and the common one is text.
#[derive(Debug)]
pub(crate) enum Payload {
    /// A tree (the general decoder's, or middleware's replacement); `None`: no `data`.
    Value(Option<Box<Value>>),
    /// The client's text (always valid JSON the general decoder accepts), and its tree once
    /// something asked for it.
    Raw(Box<RawValue>, OnceLock<Box<Value>>),
}

impl From<Option<Value>> for Payload {
    fn from(value: Option<Value>) -> Self {
        Self::Value(value.map(Box::new))
    }
}

impl From<Option<Box<RawValue>>> for Payload {
    fn from(raw: Option<Box<RawValue>>) -> Self {
        match raw {
            Some(raw) => Self::Raw(raw, OnceLock::new()),
            None => Self::Value(None),
        }
    }
}

/// The tree of text [`decode_event`] accepted (so it parses; `null` would only hide a bug).
fn tree(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).unwrap_or(Value::Null)
}

impl Payload {
    /// The payload as a tree, parsed on first use.
    pub(crate) fn value(&self) -> Option<&Value> {
        match self {
            Self::Value(v) => v.as_deref(),
            Self::Raw(raw, parsed) => Some(parsed.get_or_init(|| Box::new(tree(raw)))),
        }
    }

    /// The payload as a tree.
    pub(crate) fn into_value(self) -> Option<Value> {
        match self {
            Self::Value(v) => v.map(|v| *v),
            Self::Raw(raw, parsed) => Some(parsed.into_inner().map_or_else(|| tree(&raw), |v| *v)),
        }
    }

    /// The payload as JSON text (a tree is serialised; text is passed on as it came).
    pub(crate) fn into_raw(self) -> Option<Box<RawValue>> {
        match self {
            Self::Value(v) => v.and_then(|v| serde_json::value::to_raw_value(&v).ok()),
            Self::Raw(raw, _) => Some(raw),
        }
    }

    /// `T` from the payload (a missing payload is `null`): from the text when there is text, so
    /// no tree is built. When the text does not give a `T`, the tree decides, so the answer is
    /// the general decoder's, error message included (a repeated key is the last value there,
    /// as in `JSON.parse`, but a duplicate field for a struct read from text).
    pub(crate) fn deserialize<T: DeserializeOwned>(self) -> Result<T, String> {
        let result = match self {
            Self::Value(v) => T::deserialize(v.map_or(Value::Null, |v| *v)),
            Self::Raw(raw, parsed) => serde_json::from_str(raw.get()).or_else(|_| {
                T::deserialize(parsed.into_inner().map_or_else(|| tree(&raw), |v| *v))
            }),
        };
        result.map_err(|e| {
            let text = e.to_string();
            let at = format!(" at line {} column {}", e.line(), e.column());
            match text.strip_suffix(&at) {
                Some(message) if e.line() > 0 => message.to_owned(),
                _ => text,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode, Inbound, Packet};

    /// The fast path agrees with `decode` on everything it takes.
    fn agrees(text: &str) -> bool {
        let Some(fast) = decode_event(text) else {
            return false;
        };
        let Inbound::Packets(packets) = decode(text) else {
            panic!("the fast path took what decode refuses: {text}");
        };
        let [Packet::Event { event, data, cid }] = &packets[..] else {
            panic!("the fast path took what is not one event: {text}");
        };
        assert_eq!(&fast.event, event, "{text}");
        assert_eq!(&fast.cid, cid, "{text}");
        assert_eq!(Payload::from(fast.data).into_value(), *data, "{text}");
        true
    }

    #[test]
    fn the_fast_path_takes_plain_app_events_exactly_as_decode_reads_them() {
        for text in [
            r#"{"event":"echo","data":{"t":1,"p":"xx"},"cid":7}"#,
            r#"{"event":"echo","data":null,"cid":7}"#,
            r#"{"event":"echo","cid":7}"#,
            r#"{"event":"echo","data":[1,2.5,-3,true,false,null,"e1"]}"#,
            r#"{"event":"echo","data":"a \"quoted\" \\ string with e5"}"#,
            r#"  {"data":{"b":1,"a":2},"event":"x","cid":1.5}"#,
            r#"{"event":"x","cid":-1,"data":1}"#,
            r#"{"event":"x","cid":"7","data":1}"#,
            r#"{"event":"x","data":1,"cid":1,"cid":2}"#,
            r#"{"event":"x","data":12345678901234567890123}"#,
        ] {
            assert!(agrees(text), "the fast path should take {text}");
        }
    }

    #[test]
    fn everything_else_goes_the_general_way() {
        let deep = format!(
            r#"{{"event":"x","data":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let long = format!(r#"{{"event":"x","data":1{}}}"#, "0".repeat(400));
        for text in [
            r#"[{"event":"echo","data":1,"cid":1}]"#,
            r##"{"event":"#publish","data":{"channel":"a","data":1},"cid":1}"##,
            r#"{"event":"x","data":"\ud834"}"#,
            r#"{"event":"x","data":"\u0041"}"#,
            r#"{"event":"x","data":1e400}"#,
            r#"{"event":"x","data":1.5E3}"#,
            r#"{"event":"x","data":1,"other":2}"#,
            r#"{"event":"x","data":1e400,"data":1,"cid":1}"#,
            r#"{"event":"x","data":[],"data":1}"#,
            r#"{"event":"x","data":1,"data":{"later":"wins"},"cid":1}"#,
            r#"{"rid":1,"data":1}"#,
            r#"{"event":42,"data":1}"#,
            r#"{"data":1}"#,
            r#"{"event":"x","data":1"#,
            "#1",
            "",
            &deep,
            &long,
        ] {
            assert!(decode_event(text).is_none(), "{text}");
        }
    }

    /// JSON-ish text: punctuation, keys, numbers and escapes the two decoders might read apart.
    fn jsonish() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let atoms = prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"",
            "\\",
            "\"event\"",
            "\"data\"",
            "\"cid\"",
            "\"rid\"",
            "\"#x\"",
            "\"e\"",
            "1",
            "-1",
            "1.50",
            "1e5",
            "2E-3",
            "0.0",
            "null",
            "true",
            "false",
            "\"\\n\"",
            "\"\\u0041\"",
            " ",
            "é",
            "99999999999999999999",
        ]);
        prop::collection::vec(atoms, 0..24).prop_map(|parts| parts.concat())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// Whatever the fast path takes, it reads exactly as `decode` does.
        #[test]
        fn the_fast_path_never_disagrees_with_decode(data in jsonish(), cid in jsonish()) {
            agrees(&format!(r#"{{"event":"e","data":{data},"cid":{cid}}}"#));
            agrees(&format!(r#"{{"event":"e","data":{data}}}"#));
            agrees(&format!(r#"{{"data":{data},"event":"e"{cid}}}"#));
            agrees(&data);
        }
    }

    #[test]
    fn a_repeated_key_in_the_payload_is_its_last_value_as_from_a_tree() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Point {
            x: u32,
        }
        let text = r#"{"x":1,"x":2}"#;
        let raw = Payload::from(serde_json::value::RawValue::from_string(text.into()).ok());
        let tree = Payload::from(serde_json::from_str::<Option<Value>>(text).expect("JSON"));
        assert_eq!(raw.deserialize::<Point>(), Ok(Point { x: 2 }));
        assert_eq!(tree.deserialize::<Point>(), Ok(Point { x: 2 }));
    }

    #[test]
    fn a_payload_deserialises_from_its_text_with_the_same_error_as_from_a_tree() {
        let raw = || Payload::from(serde_json::value::RawValue::from_string("\"a\"".into()).ok());
        let tree = || Payload::from(Some(Value::String("a".into())));
        let from_raw = raw().deserialize::<u32>().expect_err("not a number");
        assert_eq!(
            from_raw,
            tree().deserialize::<u32>().expect_err("not a number")
        );
        assert_eq!(from_raw, "invalid type: string \"a\", expected u32");
        assert_eq!(raw().deserialize::<String>().as_deref(), Ok("a"));
        assert_eq!(
            raw().into_raw().map(|r| r.get().to_owned()).as_deref(),
            Some("\"a\"")
        );
        assert_eq!(
            tree().into_raw().map(|r| r.get().to_owned()).as_deref(),
            Some("\"a\"")
        );
        assert_eq!(raw().value(), Some(&Value::String("a".into())));
        assert_eq!(
            Payload::from(None::<Value>).deserialize::<Option<u8>>(),
            Ok(None)
        );
    }
}
