//! Test support: the Node reference server (`tests/compat/client-refserver.mjs`, which uses the
//! `socketcluster-server@20` installed by `npm ci` in tests/compat) and event helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use sc_core::client::{Backoff, ClientEvent, ClientOptions};
use tokio::sync::broadcast;

/// A running reference server, killed on drop.
pub struct RefServer {
    child: Child,
    _stdout: Option<BufReader<ChildStdout>>,
    pub port: u16,
}

impl RefServer {
    /// Starts the server with default options.
    pub fn start() -> Self {
        Self::start_with("{}")
    }

    /// Starts the server with extra socketcluster-server options (JSON).
    pub fn start_with(options: &str) -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/compat/client-refserver.mjs"
        );
        let child = Command::new("node")
            .arg(script)
            .arg("0")
            .arg(options)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn node refserver/server.mjs (run npm ci in tests/compat/)");
        // Owned by the guard from here on, so the process is killed and reaped on any panic.
        let mut server = Self {
            child,
            _stdout: None,
            port: 0,
        };
        let mut stdout = BufReader::new(server.child.stdout.take().expect("stdout"));
        let mut line = String::new();
        loop {
            line.clear();
            let n = stdout.read_line(&mut line).expect("read server stdout");
            assert!(n > 0, "server exited before listening");
            if let Some(port) = line.trim().strip_prefix("LISTENING ") {
                server.port = port.parse().expect("port");
                server._stdout = Some(stdout);
                return server;
            }
        }
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/socketcluster/", self.port)
    }

    /// Client options for tests: fast backoff, short ack timeout.
    pub fn opts(&self) -> ClientOptions {
        let mut o = ClientOptions::new(self.url());
        o.ack_timeout = Duration::from_secs(3);
        o.connect_timeout = Duration::from_secs(3);
        o.backoff = Backoff {
            initial_delay: Duration::from_millis(50),
            randomness: Duration::from_millis(50),
            multiplier: 1.5,
            max_delay: Duration::from_millis(1000),
        };
        o
    }
}

impl Drop for RefServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (up to 5 s) for the first event matching `pred`, skipping others.
pub async fn wait_event(
    rx: &mut broadcast::Receiver<ClientEvent>,
    pred: impl Fn(&ClientEvent) -> bool,
) -> ClientEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(ev)) if pred(&ev) => return ev,
            Ok(Ok(_)) => {}
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("event stream ended: {e}"),
            Err(_) => panic!("timed out waiting for an event"),
        }
    }
}

/// Collects every event for `dur`.
pub async fn collect_events(
    rx: &mut broadcast::Receiver<ClientEvent>,
    dur: Duration,
) -> Vec<ClientEvent> {
    let deadline = tokio::time::Instant::now() + dur;
    let mut out = Vec::new();
    while let Ok(Ok(ev)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        out.push(ev);
    }
    out
}
