//! Engines stop: a server started and stopped 50 times in one process, with each broker engine
//! (in-process, broker processes, Redis), leaves no task, connection or memory behind. Each round
//! connects a client, subscribes, publishes, reads the message back and uses the key-value store,
//! so every engine task has run; after the stop the engine itself must be dropped (nothing holds
//! it in a cycle) and the runtime's task count and the process's open descriptors return to
//! where they were. One test (own binary): descriptors and tasks are process-wide.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sc_core::broker::{BrokerEngine, ClusterBroker, LocalBroker, Redis};
use sc_core::testing::{builder, TestServer};

const ROUNDS: usize = 50;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits (at most 5 s) until `cond` holds; false if it never did.
async fn settles(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// One server life with `engine`: connect, subscribe, publish, read back, KV, stop.
async fn round<E: BrokerEngine>(engine: Arc<E>, round: usize) -> Weak<E> {
    let weak = Arc::downgrade(&engine);
    let server = TestServer::start(builder().broker_engine(engine)).await;
    let client = server.client().await;
    let mut sub = client.subscribe("ch").await.expect("subscribes");
    let exchange = server.handle().exchange();
    exchange.publish("ch", &round).await.expect("publishes");
    let got = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("delivered in time")
        .expect("subscription open");
    assert_eq!(got, serde_json::json!(round));
    exchange.set("k", &round).await.expect("kv set");
    assert_eq!(
        exchange.get::<usize>("k").await.expect("kv get"),
        Some(round)
    );
    drop(exchange);
    drop(sub);
    client.disconnect().await;
    drop(client);
    server.stop().await;
    weak
}

/// Runs the rounds and checks what is left after each and at the end.
async fn check_engine<E: BrokerEngine>(name: &str, make: impl Fn() -> E) {
    let tasks_before = alive_tasks();
    let fds_before = open_fds();
    let mut rss_warm = 0;
    for i in 0..ROUNDS {
        let weak = round(Arc::new(make()), i).await;
        assert!(
            settles(|| weak.strong_count() == 0).await,
            "{name}: round {i}: the stopped server still holds its engine ({} references)",
            weak.strong_count()
        );
        if i == 4 {
            rss_warm = rss_kib();
        }
    }
    assert!(
        settles(|| alive_tasks() <= tasks_before).await,
        "{name}: {} tasks alive after {ROUNDS} rounds, {tasks_before} before",
        alive_tasks()
    );
    assert!(
        settles(|| open_fds() <= fds_before).await,
        "{name}: {} descriptors open after {ROUNDS} rounds, {fds_before} before",
        open_fds()
    );
    let grown = rss_kib().saturating_sub(rss_warm);
    assert!(
        grown < 16 * 1024,
        "{name}: RSS grew by {grown} KiB over {} rounds",
        ROUNDS - 5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_engine_stops_with_its_server() {
    check_engine("in-process", LocalBroker::new).await;

    // Broker processes: two brokers served in this process (their own tasks are the baseline).
    let dir = std::env::temp_dir().join(format!("sc-engine-shutdown-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let paths: Vec<_> = (0..2).map(|i| dir.join(format!("b{i}.sock"))).collect();
    let brokers: Vec<_> = paths
        .iter()
        .map(|p| tokio::spawn(sc_core::broker::server::serve_path(p.clone())))
        .collect();
    assert!(
        settles(|| paths.iter().all(|p| p.exists())).await,
        "brokers listen"
    );
    check_engine("broker processes", || ClusterBroker::new(paths.clone())).await;
    for b in brokers {
        b.abort();
    }
    let _ = std::fs::remove_dir_all(&dir);

    // Redis (the real one on 127.0.0.1:6379), with a prefix of its own.
    let prefix = format!("sc-test-shutdown-{}:", std::process::id());
    check_engine("Redis", || {
        Redis::new("redis://127.0.0.1:6379").prefix(prefix.clone())
    })
    .await;
}
