//! Test servers for integration tests (feature `testing`, which also enables [`client`](crate::client)).
//!
//! [`TestServer`] runs a real server in the test's tokio runtime, on 127.0.0.1 and a free port,
//! and stops it when dropped; [`TestServer::client`] connects a [`Client`] with test-friendly
//! options (short timeouts, fast reconnects). Enable it for tests only:
//!
//! ```toml
//! [dev-dependencies]
//! sc-core = { version = "0.1", features = ["testing"] }
//! ```
//!
//! ```
//! use sc_core::prelude::*;
//! use sc_core::testing::TestServer;
//!
//! async fn echo(Json(data): Json<serde_json::Value>) -> Json<serde_json::Value> {
//!     Json(data)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let server = TestServer::start_app(App::new().event("echo", echo)).await;
//! let client = server.client().await;
//! let answer: serde_json::Value = client.invoke("echo", &"hi").await.expect("echo");
//! assert_eq!(answer, "hi");
//! server.stop().await;
//! # }
//! ```
//!
//! For options beyond the app, start from [`builder()`] (the test defaults) and pass it to
//! [`TestServer::start`]:
//!
//! ```no_run
//! # async fn f(app: sc_core::App) {
//! use sc_core::testing::{self, TestServer};
//!
//! let server = TestServer::start(testing::builder().max_payload(1024).app(app)).await;
//! # }
//! ```
//!
//! Everything here panics on failure (a server that does not bind, a client that does not
//! connect): it is meant for tests, where a panic with a message is the failure report.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::client::{Backoff, Client, ClientOptions};
use crate::server::Builder;
use crate::{App, ServerHandle, SocketCluster};

/// The HS256 secret of servers made from [`builder()`]: tests can sign tokens with it.
pub const AUTH_KEY: &str = "test-secret";

/// A builder with the test defaults: `SC_*` environment variables ignored, 127.0.0.1 and a free
/// port (0), the fixed auth key [`AUTH_KEY`]. Every other option keeps its normal default; any
/// of them, these included, can be changed on the returned builder.
pub fn builder() -> Builder {
    SocketCluster::builder()
        .ignore_env()
        .host(Ipv4Addr::LOCALHOST.into())
        .port(0)
        .auth_key(AUTH_KEY)
}

/// A server running in the current tokio runtime. [`stop`](Self::stop) shuts it down gracefully
/// and waits for it; dropping it starts the same shutdown without waiting (sockets get 1001).
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    handle: ServerHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<crate::Result<()>>>,
}

impl TestServer {
    /// Binds `builder` as it is (start from [`builder()`] for the test defaults) and serves it
    /// in a task.
    ///
    /// # Panics
    /// If the server does not start (invalid options, a port in use), with the reason.
    pub async fn start(builder: Builder) -> Self {
        let server = builder
            .bind()
            .await
            .unwrap_or_else(|e| panic!("the test server did not start: {e}"));
        let addr = server.local_addr();
        let admin_addr = server.admin_addr();
        let handle = server.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve_until(async {
            // A dropped sender (the TestServer dropped) stops the server too.
            let _ = stopped.await;
        }));
        Self {
            addr,
            admin_addr,
            handle,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Serves `app` with the test defaults ([`builder()`]).
    ///
    /// # Panics
    /// If the server does not start (e.g. the app registers a reserved event name).
    pub async fn start_app(app: App) -> Self {
        Self::start(builder().app(app)).await
    }

    /// The bound address, e.g. `127.0.0.1:40123`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound admin address (`/health`, `/metrics`), when `admin_addr` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The realtime endpoint: `ws://127.0.0.1:<port>/socketcluster/` (`wss://` with TLS, the
    /// configured path).
    pub fn url(&self) -> String {
        let config = self.handle.config();
        let scheme = if config.tls_cert.is_some() {
            "wss"
        } else {
            "ws"
        };
        format!("{scheme}://{}{}", self.addr, config.path)
    }

    /// The server's handle: its sockets, its exchange, its configuration.
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// [`client_options`] for this server's [`url`](Self::url).
    pub fn client_options(&self) -> ClientOptions {
        client_options(self.url())
    }

    /// A client connected to this server with [`client_options`].
    ///
    /// # Panics
    /// If it does not connect.
    pub async fn client(&self) -> Client {
        connect(self.url()).await
    }

    /// Shuts the server down gracefully (sockets get 1001) and waits for it, at most 10 s.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Client options for tests: invokes and connects time out after 2 s (defaults: 10 s and 20 s),
/// reconnects start after 50 to 100 ms and back off to at most 500 ms (defaults: 10 to 20 s, at
/// most 60 s). Change any field as needed.
pub fn client_options(url: impl Into<String>) -> ClientOptions {
    let mut options = ClientOptions::new(url);
    options.ack_timeout = Duration::from_secs(2);
    options.connect_timeout = Duration::from_secs(2);
    options.backoff = Backoff {
        initial_delay: Duration::from_millis(50),
        randomness: Duration::from_millis(50),
        multiplier: 1.5,
        max_delay: Duration::from_millis(500),
    };
    options
}

/// A client connected to `url` with [`client_options`].
///
/// # Panics
/// If it does not connect.
pub async fn connect(url: impl Into<String>) -> Client {
    let options = client_options(url);
    let url = options.url.clone();
    Client::connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("the test client did not connect to {url}: {e}"))
}
