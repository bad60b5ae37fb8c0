//! `SC_HISTORY_SIZE` / `SC_HISTORY_TTL` turn history on for every channel of the echo server
//! (issue 17): the #subscribe ack carries the channel's position, and a resubscription recovers
//! from a kept position or says it cannot. Without them, no channel has history.
//! `SC_PRESENCE=1` does the same for presence (issue 18).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sc_core::client::Client;
use serde_json::{json, Value};

struct Echo(Child, u16);

impl Echo {
    fn start(env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new(env!("CARGO_BIN_EXE_echo"))
            .envs(env.iter().copied())
            .env("SC_PORT", port.to_string())
            .env("SC_HOST", "127.0.0.1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starts the echo server");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "echo did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self(child, port)
    }

    async fn client(&self) -> Client {
        let url = format!("ws://127.0.0.1:{}/socketcluster/", self.1);
        Client::connect(&url).await.expect("connects")
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A raw `#subscribe` (the Rust client's `subscribe` hides the ack): its answer.
async fn subscribe_ack(client: &Client, request: Value) -> Option<Value> {
    client
        .invoke("#subscribe", &request)
        .await
        .expect("subscribed")
}

#[tokio::test]
async fn the_history_variables_turn_history_on_for_every_channel() {
    let echo = Echo::start(&[("SC_HISTORY_SIZE", "3"), ("SC_HISTORY_TTL", "60")]);
    let publisher = echo.client().await;
    for n in 1..=5 {
        publisher.publish("any/name", &n).await.expect("published");
    }
    let first = echo.client().await;
    let top = subscribe_ack(&first, json!({"channel": "any/name"}))
        .await
        .expect("a position");
    assert_eq!(top["offset"], 5);
    let epoch = top["epoch"].clone();
    // 3..=5 are kept: from 2 it recovers, from 1 it cannot.
    let kept = echo.client().await;
    let ack = subscribe_ack(
        &kept,
        json!({"channel": "any/name", "recover": {"offset": 2, "epoch": epoch}}),
    )
    .await;
    assert_eq!(ack.map(|a| a["recovered"].clone()), Some(json!(true)));
    let lost = echo.client().await;
    let ack = subscribe_ack(
        &lost,
        json!({"channel": "any/name", "recover": {"offset": 1, "epoch": epoch}}),
    )
    .await;
    assert_eq!(ack.map(|a| a["recovered"].clone()), Some(json!(false)));
}

#[tokio::test]
async fn without_them_no_channel_has_history() {
    let echo = Echo::start(&[]);
    let client = echo.client().await;
    client.publish("any/name", &1).await.expect("published");
    assert_eq!(
        subscribe_ack(&client, json!({"channel": "any/name"})).await,
        None
    );
}

#[tokio::test]
async fn sc_presence_turns_presence_on_for_every_channel() {
    let echo = Echo::start(&[("SC_PRESENCE", "1"), ("SC_PRESENCE_JOIN_LEAVE", "1")]);
    let a = echo.client().await;
    let b = echo.client().await;
    let mut events = a.events();
    let _sa = a.subscribe("any/room").await.expect("subscribed");
    let _sb = b.subscribe("any/room").await.expect("subscribed");
    let answer = a.presence("any/room").await.expect("answered");
    assert_eq!(answer.count, 2);
    let b_id = b.id().expect("an id");
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(sc_core::client::ClientEvent::Presence { joins, .. }) = events.recv().await {
                if joins.iter().any(|j| j.socket == b_id) {
                    return;
                }
            }
        }
    })
    .await
    .expect("b's join reported");
}

#[tokio::test]
async fn without_it_no_channel_has_presence() {
    let echo = Echo::start(&[]);
    let client = echo.client().await;
    let _s = client.subscribe("any/room").await.expect("subscribed");
    let refused = client.presence("any/room").await.expect_err("no presence");
    assert!(
        format!("{refused:?}").contains("has no presence"),
        "{refused:?}"
    );
}
