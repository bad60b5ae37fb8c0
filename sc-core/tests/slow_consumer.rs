//! Slow consumers: a subscriber that stops reading holds at most `outbound_queue_bytes` on the
//! server. With the default policy it is closed with 4100; with `SlowConsumer::Drop` it stays and
//! loses exactly what did not fit. Either way a fast subscriber of the same channel receives every
//! message, and `/metrics` counts what happened.

#![cfg(feature = "testing")]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::eventually;
use futures_util::{SinkExt, StreamExt};
use sc_core::prelude::*;
use sc_core::testing::{self, TestServer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

const LIMIT: usize = 64 * 1024;
/// 8 MB in all: far beyond the queue limit plus what the kernel buffers on loopback.
const MESSAGES: usize = 1000;
const PAD: usize = 8 * 1024;

/// A raw subscriber to `channel` with a tiny receive buffer, so the server's writes back up fast.
async fn raw_subscriber(addr: SocketAddr, channel: &str) -> Ws {
    let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
    tcp.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = tcp.connect(addr).await.expect("connect");
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/socketcluster/"), stream)
            .await
            .expect("upgrade");
    for (cid, msg) in [
        (1, json!({"event": "#handshake", "data": {}, "cid": 1})),
        (
            2,
            json!({"event": "#subscribe", "data": {"channel": channel}, "cid": 2}),
        ),
    ] {
        ws.send(Message::text(msg.to_string())).await.expect("send");
        let reply = next_json(&mut ws).await.expect("reply");
        assert_eq!(reply["rid"], cid, "{reply}");
        assert!(reply.get("error").is_none(), "{reply}");
    }
    ws
}

/// The next JSON frame (pings skipped); `Err(code)` once the server closed.
async fn next_frame(ws: &mut Ws) -> Result<Value, Option<u16>> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .map_err(|_| None)?
            .ok_or(None)?
            .map_err(|_| None)?;
        match msg {
            Message::Text(t) if t.is_empty() => {}
            Message::Text(t) => return serde_json::from_str(&t).map_err(|_| None),
            Message::Close(frame) => return Err(frame.map(|f| u16::from(f.code))),
            _ => {}
        }
    }
}

async fn next_json(ws: &mut Ws) -> Option<Value> {
    next_frame(ws).await.ok()
}

/// Sum over processes of one counter from `/metrics`.
async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("read");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Publishes `MESSAGES` padded messages, pacing on the fast subscriber so that it is never the
/// slow one; returns once the fast subscriber has every message, in order.
async fn publish_past_a_fast_subscriber(server: &TestServer) {
    let fast = server.client().await;
    let mut sub = fast.subscribe("news").await.expect("subscribe");
    let pad = "x".repeat(PAD);
    let exchange = server.handle().exchange();
    let mut received = 0;
    for i in 0..MESSAGES {
        exchange
            .publish_value("news", Some(json!({"i": i, "pad": pad})))
            .await
            .expect("publish");
        // Four messages (32 KB) in flight at most: the fast queue never nears 64 KB.
        if i % 4 == 3 || i + 1 == MESSAGES {
            while received <= i {
                let msg = tokio::time::timeout(Duration::from_secs(5), sub.recv())
                    .await
                    .expect("the fast subscriber keeps receiving")
                    .expect("subscription open");
                assert_eq!(msg["i"], received, "in order, none lost");
                received += 1;
            }
        }
    }
    assert_eq!(received, MESSAGES);
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_closed_with_4100_and_others_get_everything() {
    let server = TestServer::start(testing::builder().outbound_queue_bytes(LIMIT)).await;
    let mut slow = raw_subscriber(server.addr(), "news").await;

    publish_past_a_fast_subscriber(&server).await;
    assert_eq!(
        metric(server.addr(), "sc_slow_consumer_disconnects_total").await,
        1
    );
    assert_eq!(metric(server.addr(), "sc_outbound_dropped_total").await, 0);

    // Reading again, the slow client gets what was buffered before the limit, then 4100.
    let mut got = 0;
    let code = loop {
        match next_frame(&mut slow).await {
            Ok(_) => got += 1,
            Err(code) => break code,
        }
    };
    assert_eq!(code, Some(4100));
    assert!(got < MESSAGES, "the queue was bounded: {got} of {MESSAGES}");
    eventually(|| server.handle().clients_count() == 0).await;
}

#[tokio::test]
async fn with_the_drop_policy_the_slow_subscriber_stays_and_loses_only_what_did_not_fit() {
    let server = TestServer::start(
        testing::builder()
            .outbound_queue_bytes(LIMIT)
            .slow_consumer(SlowConsumer::Drop),
    )
    .await;
    let mut slow = raw_subscriber(server.addr(), "news").await;

    publish_past_a_fast_subscriber(&server).await;
    let dropped = metric(server.addr(), "sc_outbound_dropped_total").await;
    assert!(
        dropped > 0,
        "8 MB cannot fit into 64 KB plus kernel buffers"
    );
    assert_eq!(
        metric(server.addr(), "sc_slow_consumer_disconnects_total").await,
        0
    );

    // Catching up, the slow client sees every message that was not dropped, in order, then
    // messages published after it caught up: it was never disconnected.
    server
        .handle()
        .exchange()
        .publish_value("news", Some(json!("after")))
        .await
        .expect("publish");
    let mut got = 0u64;
    let mut last = -1i64;
    loop {
        let frame = next_frame(&mut slow).await.expect("still connected");
        let data = &frame["data"]["data"];
        if *data == json!("after") {
            break;
        }
        let i = data["i"].as_i64().expect("a numbered message");
        assert!(i > last, "in order");
        last = i;
        got += 1;
    }
    assert_eq!(
        got + dropped,
        MESSAGES as u64,
        "each one delivered or counted"
    );
}
