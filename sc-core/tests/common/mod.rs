//! Shared test fixtures: a real server on 127.0.0.1 with an ephemeral port, and clients with
//! test-friendly timeouts.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use sc_core::client::{Backoff, Client, ClientEvent, ClientOptions};
use sc_core::server::Builder;
use sc_core::{ServerHandle, SocketCluster};
use tokio::sync::{broadcast, oneshot};

/// A running server; dropping it shuts it down (sockets get 1001).
pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub fn url(&self) -> String {
        format!("ws://{}/socketcluster/", self.addr)
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A builder with test defaults: ignores `SC_*`, binds 127.0.0.1:0, a fixed auth key.
pub fn builder() -> Builder {
    SocketCluster::builder()
        .ignore_env()
        .port(0)
        .host([127, 0, 0, 1].into())
        .auth_key("test-secret")
}

pub async fn start(builder: Builder) -> TestServer {
    let server = builder.bind().await.expect("server binds");
    let addr = server.local_addr();
    let handle = server.handle();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        let _ = server
            .serve_until(async {
                let _ = rx.await;
            })
            .await;
    });
    TestServer {
        addr,
        handle,
        stop: Some(tx),
        task: Some(task),
    }
}

pub fn options(url: &str) -> ClientOptions {
    let mut o = ClientOptions::new(url);
    o.ack_timeout = Duration::from_secs(2);
    o.connect_timeout = Duration::from_secs(2);
    o.backoff = Backoff {
        initial_delay: Duration::from_millis(50),
        randomness: Duration::from_millis(50),
        multiplier: 1.5,
        max_delay: Duration::from_millis(500),
    };
    o
}

pub async fn client(server: &TestServer) -> Client {
    Client::connect_with(options(&server.url()))
        .await
        .expect("client connects")
}

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
