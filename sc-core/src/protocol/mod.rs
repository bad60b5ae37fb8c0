//! The SocketCluster wire format (`shared/protocol.md` sections 2, 3 and 8): decoding inbound text
//! into packets, encoding outbound packets with the reference's key order, and the close-code table.
//!
//! Both the server and the client use this module. It never panics on input: anything that is not a
//! packet is reported as [`Inbound::Raw`]. The bottom layer of sc-core: it imports nothing from the
//! rest of the crate. [`error`] is the wire shape of errors.

mod encode;
pub mod error;
mod payload;

pub(crate) use payload::{decode_event, Payload, RawEvent};

// The encoders are the server's and the client's own business; sc's tests and fuzzers reach them
// through the `test-util` feature.
#[cfg(feature = "test-util")]
pub use encode::{
    encode_client_event, encode_error_response, encode_event, encode_publish, encode_raw_response,
    encode_response,
};
#[cfg(not(feature = "test-util"))]
#[allow(unused_imports)]
pub(crate) use encode::{
    encode_client_event, encode_error_response, encode_event, encode_publish, encode_raw_response,
    encode_response,
};

pub use error::{IntoReplyError, InvokeError, ScError};

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Which ping/pong tokens are on the wire. Server-wide; there is no negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ProtocolVersion {
    /// socketcluster-server/client <= 14: ping `#1`, pong `#2`.
    V1,
    /// socketcluster-server/client >= 15 (default): ping and pong are empty text messages.
    #[default]
    V2,
}

impl ProtocolVersion {
    /// The server's ping message.
    pub fn ping(self) -> &'static str {
        match self {
            Self::V1 => "#1",
            Self::V2 => "",
        }
    }

    /// The client's pong message.
    pub fn pong(self) -> &'static str {
        match self {
            Self::V1 => "#2",
            Self::V2 => "",
        }
    }
}

/// One decoded packet.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// `{"event":NAME,"data":ANY[,"cid":N]}`: a transmit when `cid` is `None`, else an invoke.
    Event {
        /// Event name.
        event: String,
        /// Payload, `None` when absent.
        data: Option<Value>,
        /// Call id of an invoke.
        cid: Option<u64>,
    },
    /// `{"rid":N,"data":ANY}` or `{"rid":N,"error":E}`.
    Response {
        /// The call id this answers.
        rid: u64,
        /// Success data.
        data: Option<Value>,
        /// Failure, in the error's wire shape.
        error: Option<Value>,
    },
    /// Valid JSON that is not a packet (e.g. `{"event":42}`); the protocol ignores it.
    Other,
}

/// A decoded inbound message.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// One packet or a batch (a JSON array of packets), in order.
    Packets(Vec<Packet>),
    /// Not JSON, or JSON that is neither an object nor an array: kept as text.
    Raw,
}

/// Decodes one WebSocket message like `sc-formatter` does: text that starts (after whitespace)
/// with `{` or `[` and parses as JSON is a packet or a batch; anything else is raw.
///
/// The envelope is read field by field (no JSON tree of its own, no key strings or hash map):
/// only `data`, `error` and unknown keys' values become [`Value`]s. The result is the same as
/// parsing the text into a `Value` and picking the fields out (later duplicate keys win, nesting
/// deeper than serde_json's limit is raw); `fuzz/src/lib.rs` checks exactly that.
pub fn decode(text: &str) -> Inbound {
    let trimmed = text.trim_start();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return Inbound::Raw;
    }
    match serde_json::from_str::<Decoded>(text) {
        Ok(Decoded(packets)) => Inbound::Packets(packets),
        Err(_) => Inbound::Raw,
    }
}

/// Where each lone UTF-16 surrogate escape starts in `text`: a `\ud834` with no low half after
/// it, or a low half with no high half before it. `JSON.parse` accepts such strings and the
/// official client sends them; serde_json refuses them, so [`decode`] reads the message as raw
/// text. Escaped backslashes (`\\ud834`) are skipped.
fn lone_surrogates(text: &str) -> impl Iterator<Item = usize> + '_ {
    let bytes = text.as_bytes();
    let unit = move |at: usize| -> Option<u16> {
        if bytes.get(at) != Some(&b'\\') || bytes.get(at + 1) != Some(&b'u') {
            return None;
        }
        u16::from_str_radix(text.get(at + 2..at + 6)?, 16).ok()
    };
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            if bytes[i] != b'\\' {
                i += 1;
                continue;
            }
            let at = i;
            match unit(at) {
                Some(0xD800..=0xDBFF) if matches!(unit(at + 6), Some(0xDC00..=0xDFFF)) => i += 12,
                Some(0xD800..=0xDFFF) => {
                    i += 6;
                    return Some(at);
                }
                Some(_) => i += 6,
                // Any other escape, skipped whole: `\\u` is no unicode escape.
                None => i += 2,
            }
        }
        None
    })
}

/// The first lone surrogate escape in `text` (`\ud834`), if any.
pub fn lone_surrogate(text: &str) -> Option<&str> {
    let at = lone_surrogates(text).next()?;
    text.get(at..at + 6)
}

/// Decodes a message that [`decode`] read as raw only because of lone surrogate escapes (see
/// [`lone_surrogate`]), each read as U+FFFD: the packets are for answering the client (their
/// events, cids and rids), never for handling, as their data is not what it sent. `None` when
/// the text has no lone surrogate, or is no packet or batch for another reason too.
pub fn decode_lone_surrogates(text: &str) -> Option<Vec<Packet>> {
    let mut fixed = String::new();
    let mut copied = 0;
    for at in lone_surrogates(text) {
        fixed.push_str(&text[copied..at]);
        fixed.push_str("\\ufffd");
        copied = at + 6;
    }
    if copied == 0 {
        return None;
    }
    fixed.push_str(&text[copied..]);
    match decode(&fixed) {
        Inbound::Packets(packets) => Some(packets),
        Inbound::Raw => None,
    }
}

/// A whole message: one packet (an object) or a batch (an array).
struct Decoded(Vec<Packet>);

impl<'de> Deserialize<'de> for Decoded {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MessageVisitor;
        impl<'de> Visitor<'de> for MessageVisitor {
            type Value = Decoded;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a packet or an array of packets")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Decoded, A::Error> {
                Ok(Decoded(vec![packet_of_map(map)?]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Decoded, A::Error> {
                let mut packets = Vec::new();
                while let Some(AnyPacket(packet)) = seq.next_element()? {
                    packets.push(packet);
                }
                Ok(Decoded(packets))
            }
        }
        deserializer.deserialize_any(MessageVisitor)
    }
}

/// One element of a batch: an object is a packet, any other JSON value is [`Packet::Other`].
struct AnyPacket(Packet);

impl<'de> Deserialize<'de> for AnyPacket {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ElementVisitor;
        impl<'de> Visitor<'de> for ElementVisitor {
            type Value = AnyPacket;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AnyPacket, A::Error> {
                packet_of_map(map).map(AnyPacket)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyPacket, A::Error> {
                // Consumed as values (not IgnoredAny) so serde_json's nesting limit still applies.
                while seq.next_element::<Value>()?.is_some() {}
                Ok(AnyPacket(Packet::Other))
            }
            fn visit_bool<E>(self, _: bool) -> Result<AnyPacket, E> {
                Ok(AnyPacket(Packet::Other))
            }
            fn visit_i64<E>(self, _: i64) -> Result<AnyPacket, E> {
                Ok(AnyPacket(Packet::Other))
            }
            fn visit_u64<E>(self, _: u64) -> Result<AnyPacket, E> {
                Ok(AnyPacket(Packet::Other))
            }
            fn visit_f64<E>(self, _: f64) -> Result<AnyPacket, E> {
                Ok(AnyPacket(Packet::Other))
            }
            fn visit_str<E>(self, _: &str) -> Result<AnyPacket, E> {
                Ok(AnyPacket(Packet::Other))
            }
            fn visit_unit<E>(self) -> Result<AnyPacket, E> {
                Ok(AnyPacket(Packet::Other))
            }
        }
        deserializer.deserialize_any(ElementVisitor)
    }
}

/// The envelope keys the protocol reads.
enum Key {
    Event,
    Data,
    Cid,
    Rid,
    Error,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "event" => Key::Event,
                    "data" => Key::Data,
                    "cid" => Key::Cid,
                    "rid" => Key::Rid,
                    "error" => Key::Error,
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// An object as a packet. Like `JSON.parse`, a repeated key keeps its last value.
fn packet_of_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Packet, A::Error> {
    let (mut event, mut data, mut cid, mut rid, mut error) = (None, None, None, None, None);
    while let Some(key) = map.next_key()? {
        match key {
            Key::Event => event = Some(map.next_value::<Value>()?),
            Key::Data => data = Some(map.next_value::<Value>()?),
            Key::Cid => cid = Some(map.next_value::<Value>()?),
            Key::Rid => rid = Some(map.next_value::<Value>()?),
            Key::Error => error = Some(map.next_value::<Value>()?),
            // Parsed, not skipped with IgnoredAny: serde_json's nesting limit applies to them too.
            Key::Other => drop(map.next_value::<Value>()?),
        }
    }
    Ok(match event {
        // Only a number is a call id (the JS `typeof cid === 'number'`); anything else makes a
        // transmit. Non-integral or negative numbers cannot be answered meaningfully: transmit.
        Some(Value::String(event)) => Packet::Event {
            event,
            data,
            cid: cid.as_ref().and_then(Value::as_u64),
        },
        Some(_) => Packet::Other,
        None => match rid.as_ref().and_then(Value::as_u64) {
            Some(rid) => Packet::Response {
                rid,
                data,
                // `error: null` is no error (sc-errors hydrates null to null).
                error: error.filter(|e| !e.is_null()),
            },
            None => Packet::Other,
        },
    })
}

/// The text sc-errors gives a close code (`socketProtocolErrorStatuses` plus RFC texts), used
/// as the reason when a close frame carries none. 1000 has no entry there.
pub fn close_status(code: u16) -> Option<&'static str> {
    Some(match code {
        1001 => "Socket was disconnected",
        1002 => "A WebSocket protocol error was encountered",
        1003 => "Server terminated socket because it received invalid data",
        1005 => "Socket closed without status code",
        1006 => "Socket hung up",
        1007 => "Message format was incorrect",
        1008 => "Encountered a policy violation",
        1009 => "Message was too big to process",
        1010 => "Client ended the connection because the server did not comply with extension requirements",
        1011 => "Server encountered an unexpected fatal condition",
        4000 => "Server ping timed out",
        4001 => "Client pong timed out",
        4002 => "Server failed to sign auth token",
        4003 => "Failed to complete handshake",
        4004 => "Client failed to save auth token",
        4005 => "Did not receive #handshake from client before timeout",
        4006 => "Failed to bind socket to message broker",
        4007 => "Client connection establishment timed out",
        4008 => "Server rejected handshake from client",
        4009 => "Server received a message before the client handshake",
        _ => return None,
    })
}

/// A human reading of any close code, for logs.
pub fn close_reason(code: u16) -> &'static str {
    match code {
        1000 => "Socket closed normally",
        4100 => "Outbound queue full (slow consumer)",
        _ => close_status(code).unwrap_or("Unknown close code"),
    }
}

/// Close codes the server sends, named. Internal closes carry no reason text on the wire, as in
/// the reference; the client fills in [`close_reason`].
pub mod close {
    /// Normal closure: the official client does **not** reconnect.
    pub const NORMAL: u16 = 1000;
    /// Going away (server shutdown or restart): the client reconnects with backoff.
    pub const GOING_AWAY: u16 = 1001;
    /// Message larger than `max_payload`.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server hit an unexpected condition (a middleware panicked) handling this socket.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The peer broke the WebSocket protocol (RFC 6455).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8 (RFC 6455).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Client pong timed out.
    pub const PONG_TIMEOUT: u16 = 4001;
    /// Signing an auth token failed.
    pub const AUTH_SIGN_FAILED: u16 = 4002;
    /// No `#handshake` before `handshake_timeout`.
    pub const HANDSHAKE_TIMEOUT: u16 = 4005;
    /// Handshake rejected (middleware) or malformatted `#handshake` / `#authenticate`.
    pub const HANDSHAKE_REJECTED: u16 = 4008;
    /// A message other than `#handshake` arrived first.
    pub const MESSAGE_BEFORE_HANDSHAKE: u16 = 4009;
    /// The socket's outbound queue overflowed (slow consumer); sc-specific, temporary (reconnects).
    pub const SLOW_CONSUMER: u16 = 4100;
    /// sc: the socket went over its message rate limit with `LimitAction::Disconnect`.
    pub const RATE_LIMITED: u16 = 4429;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use serde_json::value::RawValue;

    #[test]
    fn decodes_invoke_transmit_and_response() {
        assert_eq!(
            decode(r#"{"event":"echo","data":{"b":2},"cid":2}"#),
            Inbound::Packets(vec![Packet::Event {
                event: "echo".into(),
                data: Some(json!({"b":2})),
                cid: Some(2)
            }])
        );
        assert_eq!(
            decode(r#"{"event":"hello","cid":"x"}"#),
            Inbound::Packets(vec![Packet::Event {
                event: "hello".into(),
                data: None,
                cid: None
            }])
        );
        assert_eq!(
            decode(r#"{"rid":1,"error":{"name":"E"}}"#),
            Inbound::Packets(vec![Packet::Response {
                rid: 1,
                data: None,
                error: Some(json!({"name":"E"}))
            }])
        );
    }

    #[test]
    fn a_null_error_is_no_error() {
        assert_eq!(
            decode(r#"{"rid":3,"data":5,"error":null}"#),
            Inbound::Packets(vec![Packet::Response {
                rid: 3,
                data: Some(json!(5)),
                error: None
            }])
        );
    }

    #[test]
    fn decodes_batches_in_order() {
        let Inbound::Packets(p) = decode(r#"[{"event":"a"},{"event":"b","data":1}]"#) else {
            panic!("batch not decoded");
        };
        assert_eq!(p.len(), 2);
        assert!(matches!(&p[1], Packet::Event { event, .. } if event == "b"));
    }

    #[test]
    fn non_packets_are_raw_or_other() {
        assert_eq!(decode(""), Inbound::Raw);
        assert_eq!(decode("plain text"), Inbound::Raw);
        assert_eq!(decode("{not json"), Inbound::Raw);
        assert_eq!(decode("42"), Inbound::Raw);
        assert_eq!(
            decode(r#"{"event":42}"#),
            Inbound::Packets(vec![Packet::Other])
        );
    }

    #[test]
    fn lone_surrogates_are_found_and_pairs_and_escaped_backslashes_are_not() {
        assert_eq!(lone_surrogate(r#"{"data":"\ud834"}"#), Some(r"\ud834"));
        assert_eq!(lone_surrogate(r#"{"data":"a\udd1eb"}"#), Some(r"\udd1e"));
        assert_eq!(
            lone_surrogate(r#"{"data":"\ud834x\udd1e"}"#),
            Some(r"\ud834")
        );
        assert_eq!(lone_surrogate(r#"{"data":"\ud834\udd1e \u00e9"}"#), None);
        assert_eq!(lone_surrogate(r#"{"data":"\\ud834"}"#), None);
        assert_eq!(lone_surrogate(r#"{"data":"\\\ud834"}"#), Some(r"\ud834"));
        assert_eq!(lone_surrogate(r"\ud83"), None);
        assert_eq!(lone_surrogate("\\"), None);
    }

    #[test]
    fn a_message_with_a_lone_surrogate_decodes_for_answering_only() {
        let text = r#"{"event":"echo","data":"\ud834","cid":2}"#;
        assert_eq!(decode(text), Inbound::Raw);
        assert_eq!(
            decode_lone_surrogates(text),
            Some(vec![Packet::Event {
                event: "echo".into(),
                data: Some(json!("\u{fffd}")),
                cid: Some(2)
            }])
        );
        let batch = r#"[{"event":"a","data":"\udfff"},{"rid":4,"data":["\ud800\ud800"]}]"#;
        assert!(matches!(
            decode_lone_surrogates(batch).as_deref(),
            Some([_, Packet::Response { rid: 4, .. }])
        ));
        // Well-formed text, and text that is broken for another reason too, are not for it.
        assert_eq!(
            decode_lone_surrogates(r#"{"event":"echo","data":"\ud834\udd1e"}"#),
            None
        );
        assert_eq!(
            decode_lone_surrogates(r#"{"event":"echo","data":"\ud834"#),
            None
        );
    }

    #[test]
    fn encodes_with_reference_key_order() {
        assert_eq!(
            encode_event("askClient", Some(1), Some(&json!({"q":1}))).expect("encode"),
            r#"{"event":"askClient","cid":1,"data":{"q":1}}"#
        );
        assert_eq!(
            encode_client_event("echo", Some(&json!(1)), Some(3)).expect("encode"),
            r#"{"event":"echo","data":1,"cid":3}"#
        );
        assert_eq!(
            encode_response::<Value>(4, None).expect("encode"),
            r#"{"rid":4}"#
        );
        assert_eq!(
            encode_publish("room", Some(&json!("ip"))).expect("encode"),
            r##"{"event":"#publish","data":{"channel":"room","data":"ip"}}"##
        );
        assert_eq!(
            encode_error_response(
                3,
                &ScError::new("MyError", "custom failure").with("extra", 42)
            ),
            r#"{"rid":3,"error":{"message":"custom failure","name":"MyError","extra":42}}"#
        );
        let raw = RawValue::from_string("[1,2]".into()).expect("raw");
        assert_eq!(
            encode_raw_response(7, Some(&raw)),
            r#"{"rid":7,"data":[1,2]}"#
        );
        // Sized exactly for every number of digits (the debug assertion checks the capacity).
        for rid in [0, 9, 10, 99, 100, 123_456_789, u64::MAX] {
            let frame = encode_raw_response(rid, None);
            assert_eq!(frame, format!(r#"{{"rid":{rid}}}"#));
            assert_eq!(frame.len(), frame.capacity());
            let frame = encode_raw_response(rid, Some(&raw));
            assert_eq!(frame, format!(r#"{{"rid":{rid},"data":[1,2]}}"#));
            assert_eq!(frame.len(), frame.capacity());
        }
    }
}
