//! Shared waits and checks of the integration tests. The server and client fixtures are public
//! API: `sc_core::testing` (`TestServer`, `testing::builder()`, `TestServer::client`).
#![allow(dead_code)]

use std::time::Duration;

use sc_core::client::ClientEvent;
use tokio::sync::broadcast;

/// Waits (at most 5 s) for the first event matching `pred`.
pub async fn wait_for(
    events: &mut broadcast::Receiver<ClientEvent>,
    pred: impl Fn(&ClientEvent) -> bool,
) -> ClientEvent {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => panic!("event stream closed"),
            }
        }
    })
    .await
    .expect("event did not arrive within 5 s")
}

/// Waits until `cond` holds (polling), at most 5 s.
pub async fn eventually(mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that nothing arrives on the subscription within `ms`.
pub async fn assert_silent(sub: &mut sc_core::client::Subscription, ms: u64) {
    if let Ok(Some(v)) = tokio::time::timeout(Duration::from_millis(ms), sub.recv()).await {
        panic!("unexpected message {v}");
    }
}
