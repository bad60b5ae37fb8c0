//! Presence with broker processes, without processes: a `broker::server::serve` task on a Unix
//! socket and two sc-core servers (workers) in this process, each with its own `ClusterBroker`.
//! Counts agree on both workers; a worker whose link to the broker drops loses all its entries at
//! once (with leave events); a restarted broker gets every live entry back.

mod common;
// The process tests' helpers (tests/support), shared with these.
#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sc_core::app::contract::{ChannelContract, PresencePolicy};
use sc_core::broker::{server, BrokerEngine, ClusterBroker};
use sc_core::client::Client;
use sc_core::testing::{self, TestServer};
use sc_core::App;
use tokio::task::JoinHandle;

fn app() -> App {
    App::new()
        .channel_contract(ChannelContract::new("rooms/{id}").presence(PresencePolicy::new()))
        .channel_contract(
            ChannelContract::new("live/{id}").presence(PresencePolicy::new().join_leave(true)),
        )
}

struct Workers {
    dir: PathBuf,
    broker: JoinHandle<std::io::Result<()>>,
    a: TestServer,
    b: TestServer,
    engine_a: ClusterBroker,
    engine_b: ClusterBroker,
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.broker.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start_broker(path: &std::path::Path) -> JoinHandle<std::io::Result<()>> {
    let listener = server::bind(path).await.expect("broker binds");
    tokio::spawn(server::serve(listener))
}

impl Workers {
    async fn start() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("sc-presence-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("b0.sock");
        let broker = start_broker(&path).await;
        let engine_a = ClusterBroker::new(vec![path.clone()]);
        let engine_b = ClusterBroker::new(vec![path]);
        let start = |engine: &ClusterBroker| {
            TestServer::start(testing::builder().broker_engine(engine.clone()).app(app()))
        };
        let a = start(&engine_a).await;
        let b = start(&engine_b).await;
        let workers = Self {
            dir,
            broker,
            a,
            b,
            engine_a,
            engine_b,
        };
        workers.wait_connected().await;
        workers
    }

    /// Stops the broker, waits until both workers see it gone, and starts it again (empty).
    async fn restart_broker(&mut self) {
        self.broker.abort();
        let _ = (&mut self.broker).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.engine_a.is_connected(0) || self.engine_b.is_connected(0) {
            assert!(Instant::now() < deadline, "still connected after 5 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let path = self.dir.join("b0.sock");
        self.broker = start_broker(&path).await;
        self.wait_connected().await;
    }

    async fn wait_connected(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(self.engine_a.is_connected(0) && self.engine_b.is_connected(0)) {
            assert!(Instant::now() < deadline, "not connected within 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn count(client: &Client, channel: &str) -> u64 {
    support::presence_count(client, channel).await
}

async fn count_becomes(client: &Client, channel: &str, want: u64) {
    support::presence_count_becomes(client, channel, want, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn both_workers_see_the_same_members_and_a_restarted_broker_gets_them_back() {
    let mut w = Workers::start().await;
    let on_a = w.a.client().await;
    let on_b = w.b.client().await;
    let more_b = w.b.client().await;
    let _s1 = on_a.subscribe("rooms/1").await.expect("subscribed");
    let _s2 = on_b.subscribe("rooms/1").await.expect("subscribed");
    let _s3 = more_b.subscribe("rooms/1").await.expect("subscribed");
    assert_eq!(count(&on_a, "rooms/1").await, 3);
    assert_eq!(count(&on_b, "rooms/1").await, 3);
    let stats =
        w.a.handle()
            .exchange()
            .presence_stats("rooms/1")
            .await
            .expect("stats");
    assert_eq!(stats.sockets, 3);

    more_b.disconnect().await;
    count_becomes(&on_a, "rooms/1", 2).await;

    // The broker restarts empty; each worker sends its entries again.
    w.restart_broker().await;
    count_becomes(&on_a, "rooms/1", 2).await;
    assert_eq!(count(&on_b, "rooms/1").await, 2);
}

#[tokio::test]
async fn a_worker_whose_link_drops_leaves_at_once_with_leave_events() {
    let w = Workers::start().await;
    let watcher = w.a.client().await;
    let mut events = watcher.receiver("#presence");
    let _w = watcher.subscribe("live/1").await.expect("subscribed");
    let mut on_b = Vec::new();
    for _ in 0..3 {
        let c = w.b.client().await;
        let sub = c.subscribe("live/1").await.expect("subscribed");
        on_b.push((c, sub));
    }
    let ids: std::collections::HashSet<String> =
        on_b.iter().map(|(c, _)| c.id().expect("an id")).collect();
    count_becomes(&watcher, "live/1", 4).await;
    // B's joins reach A's subscriber through the broker.
    let within = Duration::from_secs(5);
    support::await_presence(&mut events, "joins", &ids, within).await;

    // Worker B's link to the broker is gone (what a SIGKILLed worker looks like to the broker);
    // its sockets are still open, but their entries must not outlive the link.
    w.engine_b.shutdown().await;
    count_becomes(&watcher, "live/1", 1).await;
    support::await_presence(&mut events, "leaves", &ids, within).await;
}

/// Entries sent again to a restarted broker come back without join events: the subscribers of
/// a channel with join/leave events get an event with `"cut": true` (ask again).
#[tokio::test]
async fn a_restarted_broker_makes_subscribers_ask_again() {
    let mut w = Workers::start().await;
    let on_a = w.a.client().await;
    let on_b = w.b.client().await;
    let mut events = on_a.receiver("#presence");
    let _s1 = on_a.subscribe("live/3").await.expect("subscribed");
    let _s2 = on_b.subscribe("live/3").await.expect("subscribed");
    count_becomes(&on_a, "live/3", 2).await;

    w.restart_broker().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("an event with cut after the broker restarted")
            .expect("the stream is open")
            .expect("data");
        if event["channel"] == "live/3" && event["cut"] == true {
            break;
        }
    }
    count_becomes(&on_a, "live/3", 2).await;
}
