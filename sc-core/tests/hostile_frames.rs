//! Hostile frames over a raw WebSocket, one test per row of the hardening table: invalid UTF-8,
//! a reused cid, unknown `#` events, an invoke flood, lone surrogates, large messages behind a
//! blocked handler, an oversized frame still being streamed. Each gets its documented answer or
//! close code, and a bystander socket on the same server is untouched.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sc_core::prelude::*;
use sc_core::testing::TestServer;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn echo(Raw(data): Raw) -> Option<Value> {
    data
}

async fn start() -> TestServer {
    TestServer::start_app(App::new().event("echo", echo)).await
}

/// A raw socket that completed `#handshake`.
async fn handshaken(server: &TestServer) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url())
        .await
        .expect("WebSocket connects");
    send(
        &mut ws,
        json!({"event": "#handshake", "data": {}, "cid": 1}),
    )
    .await;
    let reply = next_json(&mut ws).await.expect("handshake reply");
    assert_eq!(reply["rid"], 1);
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// The next JSON frame within 2 s (server pings are answered and skipped); `None` on close.
async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(2), ws.next())
            .await
            .ok()??
            .ok()?;
        match msg {
            Message::Text(t) if t.is_empty() => {
                let _ = ws.send(Message::text("")).await;
            }
            Message::Text(t) => return serde_json::from_str(&t).ok(),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// Waits for the close frame; its code.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .ok()??;
        match msg {
            Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// Sends `rounds` rounds of the frames `frames(round)` makes, as fast as the socket takes them,
/// while watching for the server's close frame; its code (`None` when none came within 10 s).
async fn close_code_under_flood(
    ws: Ws,
    rounds: usize,
    frames: impl Fn(usize) -> Vec<String>,
) -> Option<u16> {
    let (mut sink, mut stream) = ws.split();
    let flood = async move {
        for round in 0..rounds {
            for frame in frames(round) {
                if sink.feed(Message::text(frame)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    };
    let watch = async move {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
                _ => return None,
            }
        }
    };
    let ((), code) = tokio::join!(flood, watch);
    code
}

async fn bystander_still_served(bystander: &mut Ws) {
    send(
        bystander,
        json!({"event": "echo", "data": "ok?", "cid": 99}),
    )
    .await;
    assert_eq!(
        next_json(bystander).await,
        Some(json!({"rid": 99, "data": "ok?"}))
    );
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_1007() {
    let server = start().await;
    let mut bystander = handshaken(&server).await;
    let mut ws = handshaken(&server).await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(frame)).await.expect("send");
    assert_eq!(close_code(&mut ws).await, Some(1007));
    bystander_still_served(&mut bystander).await;
}

#[tokio::test]
async fn a_frame_breaking_the_websocket_rules_closes_1002() {
    let server = start().await;
    let mut bystander = handshaken(&server).await;
    let mut ws = handshaken(&server).await;
    // RSV1 set without a negotiated extension (RFC 6455 section 5.2).
    let mut frame = Frame::message(b"{}".to_vec(), OpCode::Data(Data::Text), true);
    frame.header_mut().rsv1 = true;
    ws.send(Message::Frame(frame)).await.expect("send");
    assert_eq!(close_code(&mut ws).await, Some(1002));
    bystander_still_served(&mut bystander).await;
}

#[tokio::test]
async fn a_reused_cid_is_answered_once_per_invoke() {
    let server = start().await;
    let mut ws = handshaken(&server).await;
    send(&mut ws, json!({"event": "echo", "data": "a", "cid": 5})).await;
    send(&mut ws, json!({"event": "echo", "data": "b", "cid": 5})).await;
    // Replies keep the order of the invokes (one socket's messages are handled in order).
    assert_eq!(
        next_json(&mut ws).await,
        Some(json!({"rid": 5, "data": "a"}))
    );
    assert_eq!(
        next_json(&mut ws).await,
        Some(json!({"rid": 5, "data": "b"}))
    );
}

#[tokio::test]
async fn unknown_hash_events_are_refused_with_an_error_and_the_socket_stays_open() {
    let server = start().await;
    let mut ws = handshaken(&server).await;
    send(&mut ws, json!({"event": "#nope", "data": 1, "cid": 7})).await;
    let reply = next_json(&mut ws).await.expect("a reply");
    assert_eq!(reply["rid"], 7);
    assert!(reply["error"]["name"].is_string(), "{reply}");
    // A transmit of an unknown # event is ignored.
    send(&mut ws, json!({"event": "#nope", "data": 1})).await;
    send(&mut ws, json!({"event": "echo", "data": "alive", "cid": 8})).await;
    assert_eq!(
        next_json(&mut ws).await,
        Some(json!({"rid": 8, "data": "alive"}))
    );
}

#[tokio::test]
async fn an_invoke_flood_over_the_default_limit_is_disconnected_with_4429() {
    let server = start().await;
    let mut bystander = handshaken(&server).await;
    let ws = handshaken(&server).await;
    // Far more than the default burst of 10000, as fast as the socket takes them (batched).
    let code = close_code_under_flood(ws, 300, |chunk| {
        let batch: Vec<Value> = (0..100)
            .map(|i| json!({"event": "echo", "data": i, "cid": 2 + chunk * 100 + i}))
            .collect();
        vec![Value::Array(batch).to_string()]
    })
    .await;
    assert_eq!(code, Some(4429));
    bystander_still_served(&mut bystander).await;
}

#[tokio::test]
async fn a_flood_of_objects_that_are_not_packets_is_disconnected_with_4429() {
    // `{}` is valid JSON but no packet: the protocol ignores it, and the socket-wide limit must
    // still count it, or a client could send such messages without bound.
    let server = start().await;
    let mut bystander = handshaken(&server).await;
    let ws = handshaken(&server).await;
    let code = close_code_under_flood(ws, 300, |_| vec!["{}".to_owned(); 100]).await;
    assert_eq!(code, Some(4429));
    bystander_still_served(&mut bystander).await;
}

#[tokio::test]
async fn a_lone_surrogate_gets_an_error_reply_with_its_cid_and_the_socket_goes_on() {
    let server = start().await;
    let mut ws = handshaken(&server).await;
    // Valid JSON for JSON.parse (the official client sends it); serde_json refuses it.
    ws.send(Message::text(r#"{"event":"echo","data":"\ud834","cid":2}"#))
        .await
        .expect("send");
    let reply = next_json(&mut ws).await.expect("an answer, not a timeout");
    assert_eq!(reply["rid"], 2);
    assert_eq!(reply["error"]["name"], "InvalidMessageError");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(r"lone UTF-16 surrogate (\ud834)"),
        "{message}"
    );
    // A transmit has no one to answer: refused (logged), and the socket goes on in order.
    ws.send(Message::text(r#"{"event":"echo","data":"\udd1e"}"#))
        .await
        .expect("send");
    ws.send(Message::text(
        r#"{"event":"echo","data":"\ud834\udd1e","cid":3}"#,
    ))
    .await
    .expect("send");
    assert_eq!(
        next_json(&mut ws).await,
        Some(json!({"rid": 3, "data": "\u{1d11e}"})),
        "a surrogate pair is well-formed and echoed"
    );
}

#[tokio::test]
async fn a_handshake_with_a_lone_surrogate_is_answered_and_closed_4008() {
    let server = start().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url())
        .await
        .expect("WebSocket connects");
    ws.send(Message::text(
        r##"{"event":"#handshake","data":{"authToken":"\udfff"},"cid":1}"##,
    ))
    .await
    .expect("send");
    let reply = next_json(&mut ws).await.expect("an answer");
    assert_eq!(reply["rid"], 1);
    assert_eq!(reply["error"]["name"], "InvalidMessageError");
    assert_eq!(close_code(&mut ws).await, Some(4008));
}

#[tokio::test]
async fn a_handler_that_blocks_stops_the_reading_of_its_socket_at_inbound_queue_bytes() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let gate = Arc::new(tokio::sync::Notify::new());
    let sunk = Arc::new(AtomicUsize::new(0));
    let app = {
        let (gate, sunk) = (gate.clone(), sunk.clone());
        App::new()
            .event("echo", echo)
            .event("block", move || {
                let gate = gate.clone();
                async move { gate.notified().await }
            })
            .event("sink", move || {
                let sunk = sunk.clone();
                async move {
                    sunk.fetch_add(1, Ordering::SeqCst);
                }
            })
    };
    let server = TestServer::start(
        sc_core::testing::builder()
            .app(app)
            .inbound_queue_bytes(64 * 1024),
    )
    .await;
    let mut bystander = handshaken(&server).await;
    let mut ws = handshaken(&server).await;
    send(&mut ws, json!({"event": "block", "cid": 2})).await;
    // 64 messages of 512 KiB: 32 MiB, more than the kernel buffers of both ends hold, and fewer
    // messages than inbound_queue_limit (256), which alone let the server read them all.
    let big = json!({"event": "sink", "data": "x".repeat(512 * 1024)}).to_string();
    let mut sent = 0;
    while sent < 64 {
        let write = ws.send(Message::text(big.clone()));
        if tokio::time::timeout(Duration::from_millis(500), write)
            .await
            .is_err()
        {
            break;
        }
        sent += 1;
    }
    assert!(
        sent < 64,
        "the server kept reading a socket whose handler is blocked"
    );
    bystander_still_served(&mut bystander).await;
    assert_eq!(sunk.load(Ordering::SeqCst), 0, "the blocker runs first");

    // Released, the socket catches up: nothing was dropped or closed, only slowed.
    gate.notify_one();
    ws.flush().await.expect("the rest is read");
    send(&mut ws, json!({"event": "echo", "data": "after", "cid": 3})).await;
    assert_eq!(next_json(&mut ws).await, Some(json!({"rid": 2})));
    assert_eq!(
        next_json(&mut ws).await,
        Some(json!({"rid": 3, "data": "after"}))
    );
    assert!(sunk.load(Ordering::SeqCst) >= sent);
}

#[tokio::test]
async fn a_client_still_sending_an_oversized_frame_reads_its_1009_not_a_reset() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start().await;
    let mut bystander = handshaken(&server).await;
    let ws = handshaken(&server).await;
    let tokio_tungstenite::MaybeTlsStream::Plain(mut tcp) = ws.into_inner() else {
        panic!("a plain TCP connection");
    };
    // A 10 MB text frame (max_payload is 1 MiB), masked with a zero key, written whole before
    // reading anything, as a simple blocking client does: the server must read and discard
    // the rest after its close frame, or the write fails with a reset.
    let len: u64 = 10 * 1024 * 1024;
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]);
    tcp.write_all(&header).await.expect("header written");
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..len / chunk.len() as u64 {
        tcp.write_all(&chunk)
            .await
            .expect("the server reads what follows its close frame, no reset");
    }
    // The server's frames: skip pings and find the close frame.
    let mut read = Vec::new();
    let code = loop {
        if let Some(code) = close_code_in(&read) {
            break code;
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("a close frame in time")
            .expect("no reset before the close frame");
        assert!(n > 0, "the connection ended without a close frame");
        read.extend_from_slice(&buf[..n]);
    };
    assert_eq!(code, 1009);
    bystander_still_served(&mut bystander).await;
}

/// The code of the first close frame among the unmasked server frames in `bytes`, once whole.
fn close_code_in(mut bytes: &[u8]) -> Option<u16> {
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let (len, start) = match bytes[1] & 0x7f {
            126 => (
                u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]) as usize,
                4,
            ),
            127 => return None,
            n => (n as usize, 2),
        };
        let payload = bytes.get(start..start + len)?;
        if opcode == 0x8 {
            return Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]));
        }
        bytes = &bytes[start + len..];
    }
    None
}
