//! The properties the fuzzer checks, one function per target. Each must hold for any input; a
//! violation panics. Shared with `sc-core/tests/fuzz_regressions.rs` (included by path there), so
//! a crash the fuzzer finds is replayed on stable by the normal test run once its input is saved
//! under `fuzz/regressions/<target>/`.

use sc_core::protocol::{self, Inbound, Packet};
use sc_pattern::ChannelPattern;

/// The inbound frame decoder never panics on any text, and every packet it yields survives a
/// round trip through the encoders unchanged.
pub fn decode(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let decoded = protocol::decode(text);
    assert_eq!(decoded, decode_via_value(text), "decode of {text:?}");
    let Inbound::Packets(packets) = decoded else {
        return;
    };
    for packet in packets {
        let encoded = match &packet {
            Packet::Event { event, data, cid } => {
                protocol::encode_client_event(event, data.as_ref(), *cid)
            }
            Packet::Response {
                rid,
                data,
                error: None,
            } => protocol::encode_response(*rid, data.as_ref()),
            Packet::Response { .. } | Packet::Other => continue,
        };
        let encoded = encoded.expect("a decoded packet re-encodes");
        assert_eq!(
            protocol::decode(&encoded),
            Inbound::Packets(vec![packet.clone()]),
            "round trip of {encoded}"
        );
    }
}

/// The decoder's specification, written the obvious way: parse the text into JSON values and
/// pick the packet fields out of them. `protocol::decode` reads the envelope without building
/// that tree and must give the same result for every input.
///
/// Packet objects are parsed as `Map`s, not `Value`s: a `Value` reads an object whose first key
/// is serde_json's private raw-value marker (`$serde_json::private::RawValue`) as that marker and
/// fails, while for `JSON.parse`, and for `protocol::decode`, it is an ordinary key (the fuzzer
/// found the difference).
pub fn decode_via_value(text: &str) -> Inbound {
    use serde_json::{Map, Value};

    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Element {
        Object(Map<String, Value>),
        // Parsed (not skipped) as decode does, so that the same nesting limit applies.
        Other(#[allow(dead_code)] Value),
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Message {
        Object(Map<String, Value>),
        Batch(Vec<Element>),
    }

    fn packet_of(mut map: Map<String, Value>) -> Packet {
        match map.remove("event") {
            Some(Value::String(event)) => Packet::Event {
                event,
                cid: map.get("cid").and_then(Value::as_u64),
                data: map.remove("data"),
            },
            Some(_) => Packet::Other,
            None => match map.get("rid").and_then(Value::as_u64) {
                Some(rid) => Packet::Response {
                    rid,
                    data: map.remove("data"),
                    error: map.remove("error").filter(|e| !e.is_null()),
                },
                None => Packet::Other,
            },
        }
    }
    let trimmed = text.trim_start();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return Inbound::Raw;
    }
    match serde_json::from_str::<Message>(text) {
        Ok(Message::Batch(items)) => Inbound::Packets(
            items
                .into_iter()
                .map(|item| match item {
                    Element::Object(map) => packet_of(map),
                    Element::Other(_) => Packet::Other,
                })
                .collect(),
        ),
        Ok(Message::Object(map)) => Inbound::Packets(vec![packet_of(map)]),
        Err(_) => Inbound::Raw,
    }
}

/// The channel-pattern parser (sc-pattern, shared by sc-core and the `#[channel]` macro) never
/// panics; the macro's all-errors parse agrees with `parse` (both accept the same pattern, or
/// its first error is `parse`'s); a parsed pattern re-parses from its own text to the same
/// pattern, `matches` agrees with `match_name`, and any name `overlap` offers matches both
/// patterns. Input: `pattern\nname-or-second-pattern`.
pub fn channel_pattern(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (first, second) = text.split_once('\n').unwrap_or((text, ""));
    let parsed = ChannelPattern::parse(first);
    match (&parsed, ChannelPattern::parse_with_all_errors(first)) {
        (Ok(one), Ok(all)) => assert_eq!(one, &all, "both parses of {first:?}"),
        (Err(one), Err(all)) => {
            assert_eq!(all.first(), Some(one), "first error of {first:?}");
            for error in &all {
                // The macro's wording of each error is total too.
                let _ = error.in_attribute(first).to_string();
            }
        }
        (one, all) => panic!("parse gives {one:?}, the all-errors parse {all:?} for {first:?}"),
    }
    let Ok(pattern) = parsed else {
        return;
    };
    assert_eq!(
        ChannelPattern::parse(pattern.as_str()).as_ref(),
        Ok(&pattern)
    );
    let captures = pattern.match_name(second);
    assert_eq!(captures.is_some(), pattern.matches(second));
    if let Some(captures) = captures {
        assert_eq!(captures.len(), pattern.captures().count());
    }
    let own = pattern
        .overlap(&pattern)
        .expect("a pattern overlaps itself");
    assert!(pattern.matches(&own), "{own} does not match {pattern:?}");
    if let Ok(other) = ChannelPattern::parse(second) {
        if let Some(name) = pattern.overlap(&other) {
            assert!(pattern.matches(&name) && other.matches(&name), "{name}");
        }
        assert_eq!(
            pattern.overlap(&other).is_some(),
            other.overlap(&pattern).is_some(),
            "overlap is symmetric"
        );
    }
}
