//! Property tests over what a client controls: every inbound frame goes through
//! `protocol::decode`, every channel name through the typed-channel matcher, every token through
//! `AuthEngine::verify`. Whatever the input, nothing panics; well-formed input round-trips; a token
//! that was tampered with in any byte never verifies.

use proptest::prelude::*;
use sc_core::auth::{AuthEngine, AuthKey, AuthOptions};
use sc_core::channel::ChannelPattern;
use sc_core::protocol::{decode, Inbound};
use serde_json::{json, Map, Value};

/// Text shaped like frames: JSON-ish punctuation, keys the protocol knows, numbers, escapes.
fn frameish() -> impl Strategy<Value = String> {
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
        "\"error\"",
        "\"#handshake\"",
        "\"#publish\"",
        "\"#subscribe\"",
        "\"channel\"",
        "1",
        "-1",
        "1e400",
        "null",
        "true",
        "\"\\u0000\"",
        "\"\\ud800\"",
        " ",
        "é",
        "\u{feff}",
    ]);
    prop::collection::vec(atoms, 0..64).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_never_panics_on_any_text(text in ".{0,256}") {
        let _ = decode(&text);
    }

    #[test]
    fn decode_never_panics_on_frame_shaped_text(text in frameish()) {
        let _ = decode(&text);
    }

    #[test]
    fn well_formed_invokes_decode_to_one_packet(
        event in "[a-zA-Z#][a-zA-Z0-9_/]{0,20}",
        cid in 1u64..u64::from(u32::MAX),
        n in any::<i64>(),
        s in ".{0,40}",
    ) {
        let frame = json!({"event": event, "data": {"n": n, "s": s}, "cid": cid}).to_string();
        match decode(&frame) {
            Inbound::Packets(p) => prop_assert_eq!(p.len(), 1),
            Inbound::Raw => prop_assert!(false, "a valid frame decoded as raw: {}", frame),
        }
    }

    #[test]
    fn channel_patterns_never_panic_and_match_what_they_describe(
        segments in prop::collection::vec(("[a-z]{1,6}", any::<bool>()), 1..6),
        values in prop::collection::vec("[^/]{1,8}", 6),
        junk in ".{0,40}",
    ) {
        // A valid pattern from literal and capture segments (unique capture names).
        let pattern: Vec<String> = segments
            .iter()
            .enumerate()
            .map(|(i, (text, capture))| if *capture { format!("{{{text}{i}}}") } else { text.clone() })
            .collect();
        let pattern = pattern.join("/");
        let parsed = ChannelPattern::parse(&pattern).expect("a valid pattern");
        // A name built from it matches, with each capture's value.
        let name: Vec<&str> = segments
            .iter()
            .enumerate()
            .map(|(i, (text, capture))| if *capture { values[i].as_str() } else { text.as_str() })
            .collect();
        let name = name.join("/");
        let captured = parsed.match_name(&name);
        prop_assert!(captured.is_some(), "{} does not match {}", name, pattern);
        let expected: Vec<&str> = segments
            .iter()
            .enumerate()
            .filter(|(_, (_, capture))| *capture)
            .map(|(i, _)| values[i].as_str())
            .collect();
        let got: Vec<&str> = captured.unwrap_or_default().into_iter().map(|(_, v)| v).collect();
        prop_assert_eq!(got, expected);
        // Arbitrary names and patterns: an answer, never a panic.
        let _ = parsed.match_name(&junk);
        let _ = ChannelPattern::parse(&junk);
    }
}

fn engine() -> AuthEngine {
    AuthEngine::new(AuthOptions::new(AuthKey::Secret(
        b"property-secret".to_vec(),
    )))
    .expect("engine")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn garbage_tokens_never_verify_or_panic(token in ".{0,300}") {
        prop_assert!(engine().verify(&token).is_err());
    }

    #[test]
    fn a_token_changed_in_any_byte_never_verifies(
        user in "[a-z]{1,12}",
        position in any::<prop::sample::Index>(),
        replacement in prop::sample::select(b"ABCxyz019-_.=".to_vec()),
    ) {
        let engine = engine();
        let mut claims = Map::new();
        claims.insert("user".into(), Value::String(user));
        let (token, _) = engine.sign(&claims, None).expect("sign");
        prop_assert!(engine.verify(&token).is_ok());
        let mut bytes = token.into_bytes();
        let i = position.index(bytes.len());
        prop_assume!(bytes[i] != replacement);
        bytes[i] = replacement;
        let tampered = String::from_utf8(bytes).expect("ascii");
        // A change in the last character of the signature can keep its decoded bytes (base64
        // padding bits); anything that still verifies must then be the very same claims.
        if let Ok(verified) = engine.verify(&tampered) {
            prop_assert_eq!(verified.get("user"), claims.get("user"));
            prop_assert!(i >= tampered.len() - 2, "tampered byte {} verified: {}", i, tampered);
        }
    }
}

#[test]
fn deeply_nested_json_is_refused_without_exhausting_the_stack() {
    for depth in [200, 10_000, 1_000_000] {
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        // Past serde_json's depth limit (128) the text is not a packet: raw, ignored.
        assert_eq!(decode(&arrays), Inbound::Raw, "depth {depth}");
        let objects = format!(
            "{{\"event\":\"x\",\"data\":{}1{},\"cid\":1}}",
            "{\"a\":".repeat(depth),
            "}".repeat(depth)
        );
        assert_eq!(decode(&objects), Inbound::Raw, "depth {depth}");
    }
}
