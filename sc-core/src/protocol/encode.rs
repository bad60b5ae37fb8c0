//! Encoding outbound packets with the reference's key order: server and client events,
//! responses (with data as a value or as raw JSON text), error responses and `#publish`
//! deliveries.

use serde::Serialize;
use serde_json::value::RawValue;

use super::ScError;

#[derive(Serialize)]
struct EventOut<'a, D: Serialize + ?Sized> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a D>,
}

#[cfg_attr(not(feature = "test-util"), allow(dead_code))]
#[derive(Serialize)]
struct ClientEventOut<'a, D: Serialize + ?Sized> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a D>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cid: Option<u64>,
}

#[derive(Serialize)]
struct ResponseOut<'a, D: Serialize + ?Sized> {
    rid: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a D>,
}

#[derive(Serialize)]
struct ErrorResponseOut<'a> {
    rid: u64,
    error: &'a ScError,
}

#[derive(Serialize)]
struct PublishData<'a, D: Serialize + ?Sized> {
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a D>,
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    serde_json::to_string(value)
}

/// A server transmit or invoke: `{"event","cid","data"}` (the server's key order).
pub fn encode_event<D: Serialize + ?Sized>(
    event: &str,
    cid: Option<u64>,
    data: Option<&D>,
) -> Result<String, serde_json::Error> {
    to_json(&EventOut { event, cid, data })
}

/// A client transmit or invoke: `{"event","data","cid"}` (the client's key order).
#[cfg_attr(not(feature = "test-util"), allow(dead_code))]
pub fn encode_client_event<D: Serialize + ?Sized>(
    event: &str,
    data: Option<&D>,
    cid: Option<u64>,
) -> Result<String, serde_json::Error> {
    to_json(&ClientEventOut { event, data, cid })
}

/// A success response `{"rid":N}` or `{"rid":N,"data":D}`.
pub fn encode_response<D: Serialize + ?Sized>(
    rid: u64,
    data: Option<&D>,
) -> Result<String, serde_json::Error> {
    to_json(&ResponseOut { rid, data })
}

/// A success response whose data is already JSON text (no re-serialisation).
pub fn encode_raw_response(rid: u64, data: Option<&RawValue>) -> String {
    // Exactly sized: one allocation, and a frame whose capacity is its length becomes `Bytes`
    // without a second allocation for a shared header.
    let data = data.map(RawValue::get);
    let mut digits = itoa::Buffer::new();
    let rid = digits.format(rid);
    let len = r#"{"rid":}"#.len() + rid.len() + data.map_or(0, |d| r#","data":"#.len() + d.len());
    let mut frame = String::with_capacity(len);
    frame.push_str("{\"rid\":");
    frame.push_str(rid);
    if let Some(data) = data {
        frame.push_str(",\"data\":");
        frame.push_str(data);
    }
    frame.push('}');
    debug_assert_eq!(frame.len(), frame.capacity());
    frame
}

/// An error response `{"rid":N,"error":{"message","name",...}}`.
pub fn encode_error_response(rid: u64, error: &ScError) -> String {
    // Serialising an ScError cannot fail: it is strings and JSON values only.
    to_json(&ErrorResponseOut { rid, error }).unwrap_or_else(|_| format!("{{\"rid\":{rid}}}"))
}

/// The `#publish` delivery `{"event":"#publish","data":{"channel":C,"data":D}}`, encoded once per
/// publication and shared by every subscriber.
pub fn encode_publish<D: Serialize + ?Sized>(
    channel: &str,
    data: Option<&D>,
) -> Result<String, serde_json::Error> {
    to_json(&EventOut {
        event: "#publish",
        cid: None,
        data: Some(&PublishData { channel, data }),
    })
}
