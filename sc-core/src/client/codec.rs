//! The client's side of the wire format (`shared/protocol.md` sections 2, 3 and 8): decoding
//! inbound text into packets like `sc-formatter`, and encoding outbound packets with the official
//! client's key order (`{"event","data","cid"}`, `{"rid","data"}` / `{"rid","error"}`).
//!
//! Nothing here panics on input: anything that is not a packet decodes as [`Inbound::Raw`] or
//! [`Packet::Other`].

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::error::ScError;

/// One decoded packet.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Packet {
    /// `{"event":NAME,"data":ANY[,"cid":N]}`: a transmit when `cid` is `None`, else an invoke.
    Event {
        event: String,
        data: Option<Value>,
        cid: Option<u64>,
    },
    /// `{"rid":N,"data":ANY}` or `{"rid":N,"error":E}`.
    Response {
        rid: u64,
        data: Option<Value>,
        error: Option<Value>,
    },
    /// Valid JSON that is not a packet (e.g. `{"event":42}`); ignored by the protocol.
    Other,
}

/// A decoded inbound message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Inbound {
    /// One packet or a batch (a JSON array of packets), in order.
    Packets(Vec<Packet>),
    /// Not JSON, or JSON that is neither an object nor an array.
    Raw,
}

/// Decodes one text message like `sc-formatter`: text that starts (after whitespace) with `{` or
/// `[` and parses as JSON is a packet or a batch; anything else is raw.
pub(crate) fn decode(text: &str) -> Inbound {
    let trimmed = text.trim_start();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return Inbound::Raw;
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => Inbound::Packets(items.into_iter().map(packet_of).collect()),
        Ok(value @ Value::Object(_)) => Inbound::Packets(vec![packet_of(value)]),
        _ => Inbound::Raw,
    }
}

fn packet_of(value: Value) -> Packet {
    let Value::Object(mut map) = value else {
        return Packet::Other;
    };
    if let Some(Value::String(_)) = map.get("event") {
        let Some(Value::String(event)) = map.remove("event") else {
            return Packet::Other;
        };
        // Only a number is a call id (the JS `typeof cid === 'number'`); anything else is a
        // transmit. Non-integral or negative numbers cannot be answered meaningfully: transmit.
        let cid = map.get("cid").and_then(Value::as_u64);
        return Packet::Event {
            event,
            data: map.remove("data"),
            cid,
        };
    }
    if map.contains_key("event") {
        return Packet::Other;
    }
    match map.get("rid").and_then(Value::as_u64) {
        Some(rid) => Packet::Response {
            rid,
            data: map.remove("data"),
            error: map.remove("error").filter(|e| !e.is_null()),
        },
        None => Packet::Other,
    }
}

/// A JSON string literal for `s` (quotes and escapes included).
pub(crate) fn json_string(s: &str) -> String {
    // `Display` for a `Value` cannot fail.
    Value::String(s.to_owned()).to_string()
}

/// A client transmit or invoke, `{"event":E,"data":D,"cid":N}`; `data_json` is already-encoded
/// JSON (omitted when `None`, i.e. undefined), `cid` omitted for a transmit.
pub(crate) fn event_frame(event: &str, data_json: Option<&str>, cid: Option<u64>) -> String {
    let event = json_string(event);
    let mut out = String::with_capacity(
        event.len() + data_json.map_or(0, str::len) + 32, // keys, braces, cid
    );
    out.push_str("{\"event\":");
    out.push_str(&event);
    if let Some(data) = data_json {
        out.push_str(",\"data\":");
        out.push_str(data);
    }
    if let Some(cid) = cid {
        out.push_str(",\"cid\":");
        out.push_str(&cid.to_string());
    }
    out.push('}');
    out
}

/// A response to a server invoke: `{"rid":N}`, `{"rid":N,"data":D}` or `{"rid":N,"error":E}`.
pub(crate) fn response_frame(rid: u64, result: &Result<Option<Value>, ScError>) -> String {
    match result {
        Ok(None) => format!("{{\"rid\":{rid}}}"),
        Ok(Some(data)) => format!("{{\"rid\":{rid},\"data\":{data}}}"),
        Err(error) => match serde_json::to_string(error) {
            Ok(error) => format!("{{\"rid\":{rid},\"error\":{error}}}"),
            // An ScError is strings and JSON values only; this branch is unreachable in practice.
            Err(_) => format!(
                "{{\"rid\":{rid},\"error\":{{\"message\":\"Failed to encode error\",\"name\":\"Error\"}}}}"
            ),
        },
    }
}

/// The `data` of a `#subscribe` invoke, `{"channel":C[,"waitForAuth":true][,"data":D]}`, with
/// the official client's rules: `waitForAuth` only when set, `data` only when truthy.
pub(crate) fn subscribe_data(channel: &str, wait_for_auth: bool, data: Option<&Value>) -> String {
    let mut out = String::from("{\"channel\":");
    out.push_str(&json_string(channel));
    if wait_for_auth {
        out.push_str(",\"waitForAuth\":true");
    }
    if let Some(data) = data.filter(|d| is_truthy(d)) {
        out.push_str(",\"data\":");
        out.push_str(&data.to_string());
    }
    out.push('}');
    out
}

/// JavaScript truthiness of a JSON value.
pub(crate) fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// The JWT payload (middle segment) of a signed token, decoded but **not verified**, like the
/// official client's `authToken`. `None` if the token has no middle segment or it is not a JSON
/// object.
pub(crate) fn token_claims(signed_token: &str) -> Option<Map<String, Value>> {
    let segment = signed_token.split('.').nth(1)?;
    let indifferent = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    // JWTs use URL-safe base64; Node's Buffer decoder accepts both alphabets, so do we.
    let bytes = GeneralPurpose::new(&alphabet::URL_SAFE, indifferent)
        .decode(segment)
        .or_else(|_| GeneralPurpose::new(&alphabet::STANDARD, indifferent).decode(segment))
        .ok()?;
    match serde_json::from_slice::<Value>(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The text sc-errors gives a close code (`socketProtocolErrorStatuses`), used as the reason when
/// the close frame carried none. 1000 has no entry there, so it keeps an empty reason.
pub(crate) fn close_status(code: u16) -> Option<&'static str> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        // A non-number cid makes a transmit.
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
        // `error: null` is no error (sc-errors hydrates null to null).
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
        let Inbound::Packets(p) = decode(r#" [{"event":"a"},{"rid":7},{"event":"b","data":1}]"#)
        else {
            panic!("batch not decoded");
        };
        assert_eq!(p.len(), 3);
        assert!(matches!(&p[0], Packet::Event { event, .. } if event == "a"));
        assert!(matches!(
            &p[1],
            Packet::Response {
                rid: 7,
                data: None,
                error: None
            }
        ));
        assert!(
            matches!(&p[2], Packet::Event { event, data: Some(d), .. } if event == "b" && d == &json!(1))
        );
    }

    #[test]
    fn non_packets_are_raw_or_other() {
        assert_eq!(decode(""), Inbound::Raw);
        assert_eq!(decode("#1"), Inbound::Raw);
        assert_eq!(decode("plain text"), Inbound::Raw);
        assert_eq!(decode("{not json"), Inbound::Raw);
        assert_eq!(decode("42"), Inbound::Raw);
        assert_eq!(
            decode(r#"{"event":42}"#),
            Inbound::Packets(vec![Packet::Other])
        );
        assert_eq!(
            decode(r#"{"rid":"1"}"#),
            Inbound::Packets(vec![Packet::Other])
        );
        assert_eq!(
            decode(r#"{"rid":-1}"#),
            Inbound::Packets(vec![Packet::Other])
        );
        assert_eq!(
            decode(r#"[1,"x",null]"#),
            Inbound::Packets(vec![Packet::Other, Packet::Other, Packet::Other])
        );
    }

    #[test]
    fn encodes_with_the_official_clients_key_order() {
        assert_eq!(
            event_frame("#handshake", Some(r#"{"authToken":null}"#), Some(1)),
            r##"{"event":"#handshake","data":{"authToken":null},"cid":1}"##
        );
        assert_eq!(
            event_frame("#removeAuthToken", None, None),
            r##"{"event":"#removeAuthToken"}"##
        );
        assert_eq!(
            event_frame("a\"b", Some("1"), None),
            r#"{"event":"a\"b","data":1}"#
        );
        assert_eq!(response_frame(4, &Ok(None)), r#"{"rid":4}"#);
        assert_eq!(
            response_frame(5, &Ok(Some(json!({"a":1})))),
            r#"{"rid":5,"data":{"a":1}}"#
        );
        assert_eq!(
            response_frame(2, &Err(ScError::new("ClientErr", "client says no"))),
            r#"{"rid":2,"error":{"message":"client says no","name":"ClientErr"}}"#
        );
        assert_eq!(subscribe_data("room", false, None), r#"{"channel":"room"}"#);
        assert_eq!(
            subscribe_data("s", true, Some(&json!({"hint":1}))),
            r#"{"channel":"s","waitForAuth":true,"data":{"hint":1}}"#
        );
        assert_eq!(
            subscribe_data("s", false, Some(&json!(0))),
            r#"{"channel":"s"}"#
        );
    }

    #[test]
    fn truthiness_is_javascripts() {
        for v in [json!(null), json!(false), json!(0), json!(0.0), json!("")] {
            assert!(!is_truthy(&v), "{v} should be falsy");
        }
        for v in [json!(true), json!(1), json!("x"), json!([]), json!({})] {
            assert!(is_truthy(&v), "{v} should be truthy");
        }
    }

    #[test]
    fn decodes_token_claims_without_verifying() {
        // {"alg":"HS256","typ":"JWT"}.{"username":"alice","iat":1,"exp":2}.sig
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VybmFtZSI6ImFsaWNlIiwiaWF0IjoxLCJleHAiOjJ9.c2ln";
        let claims = token_claims(token).expect("claims");
        assert_eq!(claims.get("username"), Some(&json!("alice")));
        assert_eq!(claims.get("exp"), Some(&json!(2)));
        assert_eq!(token_claims("abc"), None);
        assert_eq!(token_claims("a.!!!.c"), None);
        assert_eq!(token_claims("a.MQ.c"), None); // "1": JSON but not an object
    }

    #[test]
    fn close_statuses_follow_sc_errors() {
        assert_eq!(close_status(1000), None);
        assert_eq!(close_status(1006), Some("Socket hung up"));
        assert_eq!(close_status(4000), Some("Server ping timed out"));
        assert_eq!(close_status(4123), None);
    }
}
