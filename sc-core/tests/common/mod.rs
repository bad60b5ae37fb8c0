//! Shared waits and checks of the integration tests. The server and client fixtures are public
//! API: `sc_core::testing` (`TestServer`, `testing::builder()`, `TestServer::client`).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

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

/// A TCP proxy to `target` whose connections can all be cut at once (both sockets dropped, no
/// close frame: what a network drop looks like to both ends).
pub struct Proxy {
    pub addr: SocketAddr,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
    /// While set, new connections are dropped at once (the network stays down).
    pub down: Arc<AtomicBool>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("addr");
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let kept = links.clone();
        let down: Arc<AtomicBool> = Arc::default();
        let is_down = down.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if is_down.load(Ordering::SeqCst) {
                    continue;
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                kept.lock().expect("lock").push(link);
            }
        });
        Self {
            addr,
            links,
            accept,
            down,
        }
    }

    /// `server`'s URL through this proxy.
    pub fn url_of(&self, server: &sc_core::testing::TestServer) -> String {
        server
            .url()
            .replace(&server.addr().to_string(), &self.addr.to_string())
    }

    pub fn cut(&self) {
        for link in self.links.lock().expect("lock").drain(..) {
            link.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// The methods every engine must have, forwarded to the `LocalBroker` in field 0, inside an
/// `impl BrokerEngine for ..` of a test engine.
macro_rules! forward_required_engine_methods {
    () => {
        fn start(
            &self,
            sink: std::sync::Weak<dyn sc_core::broker::DeliverySink>,
        ) -> sc_core::broker::BoxFuture<'_, Result<(), sc_core::broker::BrokerError>> {
            self.0.start(sink)
        }
        fn subscribe(
            &self,
            channel: &str,
        ) -> sc_core::broker::BoxFuture<'_, Result<(), sc_core::broker::BrokerError>> {
            self.0.subscribe(channel)
        }
        fn unsubscribe(
            &self,
            channel: &str,
        ) -> sc_core::broker::BoxFuture<'_, Result<(), sc_core::broker::BrokerError>> {
            self.0.unsubscribe(channel)
        }
        fn publish(
            &self,
            publication: std::sync::Arc<sc_core::broker::Publication>,
        ) -> sc_core::broker::BoxFuture<'_, Result<(), sc_core::broker::BrokerError>> {
            self.0.publish(publication)
        }
    };
}
#[allow(unused_imports)]
pub(crate) use forward_required_engine_methods;

/// An engine with only the required methods (the in-process engine's): no history, no presence,
/// like a custom engine written before either existed.
#[derive(Default)]
pub struct PlainEngine(pub sc_core::broker::LocalBroker);

impl sc_core::broker::BrokerEngine for PlainEngine {
    forward_required_engine_methods!();
}

/// A raw WebSocket to a test server (no SocketCluster client in between).
pub type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends `text` on a raw WebSocket and returns the next text frame as it came (the server's
/// empty pings skipped), within 2 s.
pub async fn raw_call(ws: &mut RawWs, text: &str) -> String {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(text)).await.expect("send");
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(2), ws.next())
            .await
            .expect("an answer in time")
            .expect("open")
            .expect("a frame");
        match msg {
            Message::Text(t) if t.is_empty() => {}
            Message::Text(t) => return t.to_string(),
            other => panic!("unexpected {other:?}"),
        }
    }
}
