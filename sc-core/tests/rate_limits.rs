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

/// An RS256 server and a valid token for it.
async fn rs256_server(builder: sc_core::server::Builder) -> (TestServer, String) {
    let private = include_str!("keys/rs256-private.pem");
    let public = include_str!("keys/rs256-public.pem");
    let engine = sc_core::auth::AuthEngine::new(sc_core::auth::AuthOptions {
        key: sc_core::auth::AuthKey::KeyPair {
            private_pem: private.into(),
            public_pem: public.into(),
        },
        algorithm: Some(jsonwebtoken::Algorithm::RS256),
        ..sc_core::auth::AuthOptions::default()
    })
    .expect("RS256 engine");
    let claims = json!({"user": "flood"});
    let (token, _) = engine
        .sign(claims.as_object().expect("object"), None)
        .expect("sign");
    let server = TestServer::start(
        builder
            .auth_key_pair(jsonwebtoken::Algorithm::RS256, private, public)
            .app(App::new().event("echo", echo)),
    )
    .await;
    (server, token)
}

/// Sends `n` `#authenticate` at once; returns how many were answered and checks the rest got
/// `RateLimitError`.
async fn authenticate_flood(client: &sc_core::client::Client, token: &str, n: usize) -> usize {
    let calls = (0..n).map(|_| client.authenticate(token));
    let results = futures_util::future::join_all(calls).await;
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(r.to_string().contains("RateLimitError"), "{r}");
    }
    results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|s| s.is_authenticated))
        .count()
}

#[tokio::test]
async fn an_authenticate_flood_with_rs256_is_limited_by_default_and_others_go_on() {
    let (server, token) = rs256_server(testing::builder()).await;
    let flooder = server.client().await;
    let calm = server.client().await;
    // The other socket is answered while the flood is being verified, not only after it.
    let calm_echo = async {
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            calm.invoke::<_, Value>("echo", &json!("answered")),
        )
        .await
    };
    let (ok, echoed) = tokio::join!(authenticate_flood(&flooder, &token, 60), calm_echo);
    // The default: 10/s, bursts of 20.
    assert!((20..=22).contains(&ok), "{ok} of 60 passed a burst of 20");
    let v = echoed
        .expect("echo answered during the flood")
        .expect("echo");
    assert_eq!(v, json!("answered"));
    assert!(
        calm.authenticate(&token)
            .await
            .expect("own bucket")
            .is_authenticated
    );
}

#[tokio::test]
async fn the_authenticate_limit_is_configurable_and_the_app_overrides_it() {
    let (server, token) = rs256_server(
        testing::builder().auth_rate_limit(Some(RateLimit::per_second(1.0).burst(4.0))),
    )
    .await;
    let ok = authenticate_flood(&server.client().await, &token, 10).await;
    assert!((4..=5).contains(&ok), "{ok} of 10 passed a burst of 4");

    let (server, token) = rs256_server(
        testing::builder()
            .app(App::new().rate_limit("#authenticate", RateLimit::per_second(1.0).burst(2.0))),
    )
    .await;
    let ok = authenticate_flood(&server.client().await, &token, 10).await;
    assert!(
        (2..=3).contains(&ok),
        "{ok} of 10 passed the app's burst of 2"
    );

    let (server, token) = rs256_server(testing::builder().auth_rate_limit(None)).await;
    assert_eq!(
        authenticate_flood(&server.client().await, &token, 30).await,
        30
    );
}
