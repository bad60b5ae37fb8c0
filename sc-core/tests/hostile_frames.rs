//! Hostile frames over a raw WebSocket, one test per row of the hardening table: invalid UTF-8,
//! a reused cid, unknown `#` events, an invoke flood. Each gets its documented answer or close
//! code, and a bystander socket on the same server is untouched.

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
