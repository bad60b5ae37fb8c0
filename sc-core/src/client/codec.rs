//! The client's side of the wire format (`shared/protocol.md` sections 2, 3 and 8): decoding
//! inbound text into packets like `sc-formatter`, and encoding outbound packets with the official
//! client's key order (`{"event","data","cid"}`, `{"rid","data"}` / `{"rid","error"}`).
//!
//! Nothing here panics on input: anything that is not a packet decodes as [`Inbound::Raw`] or
//! [`Packet::Other`].
//!
//! This module is also the client's only door into the rest of sc-core: the items below are the
//! only ones the client takes from outside `client/`, so when they move in the crate only these
//! lines change.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde_json::{Map, Value};

pub(crate) use crate::broker::PresenceEntry;
pub(crate) use crate::channel::TypedChannel;
pub use crate::protocol::ProtocolVersion;
pub(crate) use crate::protocol::ScError;
pub(crate) use crate::protocol::{close_status, decode, Inbound, Packet};
pub(crate) use crate::pubsub::exchange::ChannelTarget;

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
pub(crate) fn subscribe_data(
    channel: &str,
    wait_for_auth: bool,
    data: Option<&Value>,
    recover: Option<&(u64, String)>,
) -> String {
    let mut out = String::from("{\"channel\":");
    out.push_str(&json_string(channel));
    if let Some((offset, epoch)) = recover {
        out.push_str(&format!(
            ",\"recover\":{{\"offset\":{offset},\"epoch\":{}}}",
            json_string(epoch)
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        assert_eq!(
            subscribe_data("room", false, None, None),
            r#"{"channel":"room"}"#
        );
        assert_eq!(
            subscribe_data("s", true, Some(&json!({"hint":1})), None),
            r#"{"channel":"s","waitForAuth":true,"data":{"hint":1}}"#
        );
        assert_eq!(
            subscribe_data("s", false, Some(&json!(0)), None),
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
