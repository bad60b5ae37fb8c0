//! Rate limits: a per-event limit that rejects (the caller gets `RateLimitError`, other events
//! and other sockets are untouched) and a socket-wide limit that disconnects with 4429.

#![cfg(feature = "testing")]

mod common;

use common::wait_for;
use sc_core::client::ClientEvent;
use sc_core::prelude::*;
use sc_core::testing::{self, TestServer};
use serde_json::{json, Value};

async fn echo(Raw(data): Raw) -> Option<Value> {
    data
}

#[tokio::test]
async fn a_per_event_limit_rejects_the_excess_and_nothing_else() {
    let app = App::new()
        .event("chat", echo)
        .event("echo", echo)
        .rate_limit("chat", RateLimit::per_second(1.0).burst(5.0));
    let server = TestServer::start_app(app).await;
    let flooder = server.client().await;
    let calm = server.client().await;

    let payloads: Vec<Value> = (0..20).map(|i| json!(i)).collect();
    let calls = payloads
        .iter()
        .map(|p| flooder.invoke::<_, Value>("chat", p));
    let results = futures_util::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(
        (5..=6).contains(&ok),
        "{ok} of 20 passed a burst of 5 at 1/s"
    );
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(r.to_string().contains("RateLimitError"), "{r}");
    }
    // Other events of the same socket, and the same event on another socket, go on.
    let v: Value = flooder
        .invoke("echo", &json!("still here"))
        .await
        .expect("echo");
    assert_eq!(v, json!("still here"));
    let v: Value = calm
        .invoke("chat", &json!("mine"))
        .await
        .expect("own bucket");
    assert_eq!(v, json!("mine"));
}

#[tokio::test]
async fn a_socket_over_the_message_limit_is_disconnected_with_4429() {
    let limit = RateLimit::per_second(10.0)
        .burst(20.0)
        .action(LimitAction::Disconnect);
    let server = TestServer::start(
        testing::builder()
            .message_rate_limit(Some(limit))
            .app(App::new().event("echo", echo)),
    )
    .await;
    let flooder = server.client().await;
    let calm = server.client().await;
    let mut events = flooder.events();
    for i in 0..100 {
        let _ = flooder.transmit("echo", &json!(i));
    }
    let closed = wait_for(&mut events, |e| matches!(e, ClientEvent::Disconnect { .. })).await;
    match closed {
        ClientEvent::Disconnect { code, .. } => assert_eq!(code, 4429),
        other => panic!("{other:?}"),
    }
    let v: Value = calm.invoke("echo", &json!(1)).await.expect("others go on");
    assert_eq!(v, json!(1));
}
