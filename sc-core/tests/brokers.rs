//! Broker processes without processes: two `broker::server::serve` tasks on Unix sockets in a
//! temporary directory, and two sc-core servers (workers) in this process, each with its own
//! `ClusterBroker` over both brokers.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use sc_core::broker::cluster::{broker_index, ClusterOptions};
use sc_core::broker::{server, BrokerError, ClusterBroker, HistoryPolicy, Position};
use sc_core::client::{Client, ClientEvent, InvokeError, Subscription};
use sc_core::testing::{self, TestServer};
use sc_core::Exchange;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

/// A fresh directory for socket files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sc-brokers-{}-{}-{:x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two brokers and two workers (servers A and B) on them.
struct Cluster {
    _dir: TempDir,
    paths: Vec<PathBuf>,
    brokers: Vec<JoinHandle<std::io::Result<()>>>,
    a: TestServer,
    b: TestServer,
    engine_a: ClusterBroker,
    engine_b: ClusterBroker,
}

/// `RUST_LOG=sc_core=debug cargo test --test brokers` shows the brokers' and engines' logs.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

impl Cluster {
    async fn start() -> Self {
        Self::start_app(sc_core::App::new()).await
    }

    /// Both workers serve `app`.
    async fn start_app(app: sc_core::App) -> Self {
        init_logs();
        let dir = TempDir::new();
        let paths: Vec<PathBuf> = (0..2).map(|i| dir.0.join(format!("b{i}.sock"))).collect();
        let mut brokers = Vec::new();
        for path in &paths {
            brokers.push(start_broker(path.clone()).await);
        }
        let engine_a = ClusterBroker::new(paths.clone());
        let engine_b = ClusterBroker::new(paths.clone());
        let builder = |engine: &ClusterBroker| {
            testing::builder()
                .broker_engine(engine.clone())
                .app(app.clone())
        };
        let a = TestServer::start(builder(&engine_a)).await;
        let b = TestServer::start(builder(&engine_b)).await;
        let cluster = Self {
            _dir: dir,
            paths,
            brokers,
            a,
            b,
            engine_a,
            engine_b,
        };
        cluster.wait_connected(0).await;
        cluster.wait_connected(1).await;
        cluster
    }

    fn exchanges(&self) -> (Exchange, Exchange) {
        (self.a.handle().exchange(), self.b.handle().exchange())
    }

    /// Waits until both workers are connected to broker `i` with their subscriptions restored.
    async fn wait_connected(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(self.engine_a.is_connected(i) && self.engine_b.is_connected(i)) {
            assert!(
                Instant::now() < deadline,
                "broker {i} not connected within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_disconnected(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.engine_a.is_connected(i) || self.engine_b.is_connected(i) {
            assert!(
                Instant::now() < deadline,
                "broker {i} still connected after 5 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Binds `path` (replacing a stale socket file, as `serve_path` does) and serves it in a task.
async fn start_broker(path: PathBuf) -> JoinHandle<std::io::Result<()>> {
    let listener = server::bind(&path).await.expect("broker binds");
    tokio::spawn(server::serve(listener))
}

/// `n` channel names, checked to be spread over both brokers.
fn channels(prefix: &str, n: usize) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}/{i}")).collect();
    let owners: BTreeSet<usize> = names.iter().map(|c| broker_index(c, 2)).collect();
    assert_eq!(owners.len(), 2, "the channels must use both brokers");
    names
}

/// A channel of `prefix` owned by broker `broker`.
fn channel_on(prefix: &str, broker: usize) -> String {
    (0..)
        .map(|i| format!("{prefix}/{i}"))
        .find(|c| broker_index(c, 2) == broker)
        .expect("some channel maps to each broker")
}

async fn recv(sub: &mut Subscription) -> Value {
    tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .unwrap_or_else(|_| panic!("nothing on {} within 5 s", sub.channel()))
        .unwrap_or_else(|| panic!("subscription to {} ended", sub.channel()))
}

/// Receives exactly `expected` (in any order) on `sub`; a duplicate shows up in `assert_quiet`.
async fn expect_set(sub: &mut Subscription, expected: &[Value]) {
    let mut got = Vec::new();
    for _ in expected {
        got.push(recv(sub).await);
    }
    let mut want = expected.to_vec();
    got.sort_by_key(|v| v.to_string());
    want.sort_by_key(|v| v.to_string());
    assert_eq!(got, want, "on {}", sub.channel());
}

/// After a settling pause, nothing more is queued on any of `subs`.
async fn assert_quiet(subs: &mut [Subscription]) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    for sub in subs {
        assert_silent(sub, 1).await;
    }
}

async fn subscribe_all(client: &Client, names: &[String]) -> Vec<Subscription> {
    let mut subs = Vec::new();
    for name in names {
        subs.push(client.subscribe(name).await.expect("subscribes"));
    }
    subs
}

#[tokio::test]
async fn client_and_server_publishes_reach_both_workers_exactly_once() {
    let cluster = Cluster::start().await;
    let names = channels("room", 16);
    let (ca, cb) = (cluster.a.client().await, cluster.b.client().await);
    // Two clients on A: one channel subscription per worker at the broker, two sockets fed.
    let ca2 = cluster.a.client().await;
    let mut subs_a = subscribe_all(&ca, &names).await;
    let mut subs_a2 = subscribe_all(&ca2, &names).await;
    let mut subs_b = subscribe_all(&cb, &names).await;
    let (ex_a, ex_b) = cluster.exchanges();
    let mut server_sub_b = ex_b.subscribe(&names[0]).await.expect("server subscribes");

    for name in &names {
        ca.publish(name, &json!({"from": "a", "ch": name}))
            .await
            .expect("client publish on A");
        cb.publish(name, &json!({"from": "b", "ch": name}))
            .await
            .expect("client publish on B");
        ex_a.publish(name.as_str(), &json!({"from": "server a", "ch": name}))
            .await
            .expect("server publish on A");
    }
    for subs in [&mut subs_a, &mut subs_a2, &mut subs_b] {
        for (sub, name) in subs.iter_mut().zip(&names) {
            let expected = [
                json!({"from": "a", "ch": name}),
                json!({"from": "b", "ch": name}),
                json!({"from": "server a", "ch": name}),
            ];
            expect_set(sub, &expected).await;
        }
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let v = tokio::time::timeout(Duration::from_secs(5), server_sub_b.recv())
            .await
            .expect("server subscription receives")
            .expect("open");
        got.push(v["from"].clone());
    }
    got.sort_by_key(|v| v.to_string());
    assert_eq!(got, [json!("a"), json!("b"), json!("server a")]);

    for subs in [&mut subs_a, &mut subs_a2, &mut subs_b] {
        assert_quiet(subs).await;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(50), server_sub_b.recv())
            .await
            .is_err(),
        "the server subscription got a duplicate"
    );

    // A worker whose last subscriber leaves stops receiving (the broker drops it): B's client
    // leaves room/0, publishes from A still reach A's clients only.
    let first = names[0].clone();
    let mut sub_b0 = subs_b.remove(0);
    drop(server_sub_b);
    assert_silent(&mut sub_b0, 1).await;
    sub_b0.unsubscribe();
    eventually(|| {
        cluster
            .b
            .handle()
            .clients()
            .iter()
            .all(|s| !s.is_subscribed(&first))
    })
    .await;
    ca.publish(&first, &"after").await.expect("publish");
    assert_eq!(recv(&mut subs_a[0]).await, json!("after"));
    assert_eq!(recv(&mut subs_a2[0]).await, json!("after"));
}

#[tokio::test]
async fn key_value_operations_agree_across_workers() {
    let cluster = Cluster::start().await;
    let (ex_a, ex_b) = cluster.exchanges();
    let keys = channels("user", 10);

    assert_eq!(ex_b.count().await.expect("count"), 0);
    for (i, key) in keys.iter().enumerate() {
        ex_a.set(key, &json!({"n": i})).await.expect("set");
    }
    for (i, key) in keys.iter().enumerate() {
        let v: Option<Value> = ex_b.get(key).await.expect("get");
        assert_eq!(v, Some(json!({"n": i})));
        assert!(ex_b.has_key(key).await.expect("has_key"));
    }
    assert_eq!(ex_b.count().await.expect("count sums both brokers"), 10);
    assert_eq!(ex_a.get::<u32>("missing").await.expect("get"), None);
    assert!(matches!(
        ex_a.get::<u32>(&keys[0]).await,
        Err(BrokerError::Decode(_))
    ));

    // Appends from both workers land on one list, indices in order.
    for i in 0..5u64 {
        assert_eq!(ex_a.add("log", &format!("a{i}")).await.expect("add"), 2 * i);
        assert_eq!(
            ex_b.add("log", &format!("b{i}")).await.expect("add"),
            2 * i + 1
        );
    }
    let log: Vec<String> = ex_a.get("log").await.expect("get").expect("exists");
    assert_eq!(
        log,
        ["a0", "b0", "a1", "b1", "a2", "b2", "a3", "b3", "a4", "b4"]
    );

    // Expire splits its keys over their brokers and adds up the counts.
    assert_eq!(
        ex_a.expire(
            keys.iter().chain([&"missing".to_string()]),
            Duration::from_millis(200)
        )
        .await
        .expect("expire"),
        10
    );
    assert_eq!(
        ex_b.unexpire([&keys[0], &keys[1]]).await.expect("unexpire"),
        2
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(ex_b.has_key(&keys[0]).await.expect("has_key"));
    assert!(!ex_a.has_key(&keys[5]).await.expect("has_key"));
    assert_eq!(ex_a.count().await.expect("count"), 3); // keys[0], keys[1], "log"

    assert_eq!(
        ex_b.remove(&keys[1]).await.expect("remove"),
        Some(json!({"n": 1}))
    );
    assert_eq!(ex_a.remove(&keys[1]).await.expect("remove"), None);
    assert_eq!(ex_a.count().await.expect("count"), 2);
}

#[tokio::test]
async fn a_restarted_broker_fails_fast_while_down_then_gets_every_subscription_back() {
    let cluster = Cluster::start().await;
    let names = channels("feed", 12);
    let (ca, cb) = (cluster.a.client().await, cluster.b.client().await);
    let mut subs_a = subscribe_all(&ca, &names).await;
    let mut subs_b = subscribe_all(&cb, &names).await;
    let (ex_a, ex_b) = cluster.exchanges();
    let mut server_sub = ex_a
        .subscribe(&channel_on("feed", 1))
        .await
        .expect("server subscribes");
    let lost_key = channel_on("key", 1);
    ex_a.set(&lost_key, &1).await.expect("set");

    // Broker 1 dies.
    cluster.brokers[1].abort();
    cluster.wait_disconnected(1).await;

    let down = channel_on("feed", 1);
    let up = channel_on("feed", 0);
    let t = Instant::now();
    let err = ex_a
        .publish(down.as_str(), &"lost")
        .await
        .expect_err("publish to a down broker fails");
    assert!(matches!(err, BrokerError::Unavailable(_)), "{err:?}");
    match ca.publish(&down, &"lost").await {
        Err(InvokeError::Remote(e)) => assert_eq!(e.name(), "BrokerError"),
        other => panic!("expected a BrokerError reply, got {other:?}"),
    }
    assert!(matches!(
        ex_b.get::<u32>(&lost_key).await,
        Err(BrokerError::Unavailable(_))
    ));
    assert!(matches!(
        ex_b.count().await,
        Err(BrokerError::Unavailable(_))
    ));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "failing took {:?}",
        t.elapsed()
    );
    // The other broker carries on.
    ex_b.publish(up.as_str(), &"still up")
        .await
        .expect("publish");
    let up_index = names.iter().position(|n| *n == up).expect("listed");
    assert_eq!(recv(&mut subs_a[up_index]).await, json!("still up"));
    assert_eq!(recv(&mut subs_b[up_index]).await, json!("still up"));
    // A subscription made while its broker is down is remembered.
    let late = channel_on("late", 1);
    let mut late_sub = cb.subscribe(&late).await.expect("subscribes while down");

    // Broker 1 comes back on the same path.
    let _restarted = start_broker(cluster.paths[1].clone()).await;
    cluster.wait_connected(1).await;

    for name in &names {
        ex_b.publish(name.as_str(), &json!({"after": name}))
            .await
            .expect("publish after restart");
    }
    ca.publish(&late, &"late").await.expect("publish");
    for subs in [&mut subs_a, &mut subs_b] {
        for (sub, name) in subs.iter_mut().zip(&names) {
            assert_eq!(recv(sub).await, json!({"after": name}));
        }
        assert_quiet(subs).await;
    }
    assert_eq!(recv(&mut late_sub).await, json!("late"));
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), server_sub.recv())
            .await
            .expect("server subscription restored"),
        Some(json!({"after": down.clone()}))
    );
    // The broker's key-value data went with it.
    assert_eq!(ex_a.get::<u32>(&lost_key).await.expect("get"), None);
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced_and_a_live_one_is_not() {
    let dir = TempDir::new();
    let path = dir.0.join("b.sock");
    let first = start_broker(path.clone()).await;
    let err = server::bind(&path)
        .await
        .expect_err("a live broker keeps its path");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    first.abort();
    let _ = first.await;
    assert!(path.exists(), "the socket file stays behind");
    let _second = start_broker(path.clone()).await;
    let engine = ClusterBroker::new(vec![path]);
    let server = TestServer::start(testing::builder().broker_engine(engine.clone())).await;
    assert!(engine.is_connected(0));
    let ex = server.handle().exchange();
    ex.set("k", &"v").await.expect("set");
    assert_eq!(
        ex.get::<String>("k").await.expect("get").as_deref(),
        Some("v")
    );
}

/// Connects, writes `bytes`, and expects the broker to hang up.
async fn expect_dropped(path: &std::path::Path, bytes: &[u8]) {
    let mut raw = UnixStream::connect(path).await.expect("connects");
    raw.write_all(bytes).await.expect("writes");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{bytes:?}: the broker kept the connection"));
    // EOF, or a reset when the broker closed with our bytes unread.
    assert!(matches!(read, Ok(0) | Err(_)), "{bytes:?}: got {read:?}");
}

#[tokio::test]
async fn a_peer_that_breaks_the_protocol_is_dropped_and_others_carry_on() {
    init_logs();
    let dir = TempDir::new();
    let path = dir.0.join("b.sock");
    let _broker = start_broker(path.clone()).await;
    let engine = ClusterBroker::new(vec![path.clone()]);
    let server = TestServer::start(testing::builder().broker_engine(engine.clone())).await;
    let ex = server.handle().exchange();
    ex.set("k", &1).await.expect("set");

    const HELLO: &[u8] = b"\0\0\0\x05\0SCB\x01";
    let cases: Vec<Vec<u8>> = vec![
        b"\0\0\0\x03xyz".to_vec(),                               // no hello
        b"\0\0\0\x05\0SCB\x63".to_vec(),                         // another protocol version
        [HELLO, b"\0\0\0\x01\xff"].concat(),                     // unknown op
        [HELLO, b"\0\0\0\x03\x03\0\0"].concat(),                 // truncated publish
        [HELLO, b"\0\0\0\x09\x07\0\0\0\0\0\0\0\x01"].concat(),   // an ack: brokers send those
        [HELLO, b"\x7f\xff\xff\xff"].concat(),                   // a 2 GiB frame announced
        [HELLO, b"\0\0\0\x0b\x05\0\0\0\0\0\0\0\x01{}"].concat(), // a key-value op without op
    ];
    for bytes in &cases {
        expect_dropped(&path, bytes).await;
    }
    // The well-behaved worker never noticed.
    assert!(engine.is_connected(0));
    assert_eq!(ex.get::<u32>("k").await.expect("get"), Some(1));
}

#[tokio::test]
async fn oversized_messages_fail_alone() {
    init_logs();
    let dir = TempDir::new();
    let path = dir.0.join("b.sock");
    let _broker = start_broker(path.clone()).await;
    let server =
        TestServer::start(testing::builder().broker_engine(ClusterBroker::new(vec![path]))).await;
    let ex = server.handle().exchange();
    let c = server.client().await;
    let mut sub = c.subscribe("big").await.expect("subscribes");

    // Over the 16 MiB frame limit: refused by this worker before it reaches the socket.
    let big = "x".repeat(17 * 1024 * 1024);
    let err = ex.publish("big", &big).await.expect_err("too big");
    assert!(matches!(err, BrokerError::Encode(_)), "{err:?}");
    // A result the broker cannot send back is refused by the broker.
    let half = "y".repeat(9 * 1024 * 1024);
    assert_eq!(ex.add("list", &half).await.expect("add"), 0);
    assert_eq!(ex.add("list", &half).await.expect("add"), 1);
    drop(half);
    let err = ex.get::<Value>("list").await.expect_err("too big to send");
    assert!(matches!(err, BrokerError::Refused(_)), "{err:?}");
    // The connection carries on.
    assert!(ex.has_key("list").await.expect("has_key"));
    ex.publish("big", &"small").await.expect("publish");
    assert_eq!(recv(&mut sub).await, json!("small"));
}

/// What a worker sees while the master holds a broker's socket and the broker process is not up
/// yet: connections are accepted by the kernel, nobody answers.
#[tokio::test]
async fn a_broker_socket_nobody_serves_yet_fails_fast_until_the_broker_is_up() {
    init_logs();
    let dir = TempDir::new();
    let path = dir.0.join("b.sock");
    let listener = server::bind(&path).await.expect("binds");
    let mut options = ClusterOptions::default();
    options.request_timeout = Duration::from_millis(300);
    let engine = ClusterBroker::with_options(vec![path], options);
    let server = TestServer::start(testing::builder().broker_engine(engine.clone())).await;
    assert!(!engine.is_connected(0));
    let ex = server.handle().exchange();
    let c = server.client().await;
    let mut sub = c.subscribe("ch").await.expect("remembered");

    let t = Instant::now();
    let err = ex.publish("ch", &1).await.expect_err("nobody answers");
    assert!(matches!(err, BrokerError::Unavailable(_)), "{err:?}");
    assert!(matches!(ex.count().await, Err(BrokerError::Unavailable(_))));
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );

    let _broker = tokio::spawn(server::serve(listener));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !engine.is_connected(0) {
        assert!(Instant::now() < deadline, "not connected within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ex.publish("ch", &"hello").await.expect("publish");
    assert_eq!(recv(&mut sub).await, json!("hello"));
    assert_quiet(std::slice::from_mut(&mut sub)).await;
}

/// Issue 16: a broker given the run's secret serves a worker whose hello carries it, and closes
/// the connection of one with another secret (it never connects, its requests fail).
#[tokio::test]
async fn a_broker_with_a_secret_serves_only_workers_that_send_it() {
    let dir = TempDir::new();
    let path = dir.0.join("b0.sock");
    let listener = server::bind(&path).await.expect("broker binds");
    let _broker = tokio::spawn(server::serve_with(listener, "s3cret".into(), 64 << 20));
    let mut options = ClusterOptions::default();
    options.request_timeout = Duration::from_millis(500);
    let right = ClusterBroker::with_secret(vec![path.clone()], options.clone(), "s3cret".into());
    let wrong = ClusterBroker::with_secret(vec![path], options, "guess".into());
    let a = TestServer::start(testing::builder().broker_engine(right.clone())).await;
    let b = TestServer::start(testing::builder().broker_engine(wrong.clone())).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !right.is_connected(0) {
        assert!(Instant::now() < deadline, "not connected within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.handle().exchange().set("k", &1).await.expect("set");
    assert_eq!(a.handle().exchange().count().await.expect("count"), 1);
    let err = b.handle().exchange().count().await.expect_err("refused");
    assert!(matches!(err, BrokerError::Unavailable(_)), "{err:?}");
    assert!(!wrong.is_connected(0));
}

/// Every channel of `feed/...` keeps 1000 publications for a minute; clients may publish.
fn history_app() -> sc_core::App {
    use sc_core::app::contract::{Access, ChannelContract};
    sc_core::App::new().channel_contract(
        ChannelContract::new("feed/{id}")
            .publish(Access::Anyone)
            .history(HistoryPolicy::new(1000, Duration::from_secs(60))),
    )
}

#[tokio::test]
async fn history_lives_with_the_broker_shared_by_workers_and_lost_with_it() {
    let cluster = Cluster::start_app(history_app()).await;
    let (ex_a, ex_b) = cluster.exchanges();
    let channel = channel_on("feed", 1);
    for n in 1..=5 {
        ex_a.publish(channel.as_str(), &n).await.expect("publish");
    }
    let publisher = cluster.b.client().await;
    publisher
        .publish(&channel, &6)
        .await
        .expect("client publish");
    // Both workers read the one history its broker keeps.
    let on_a = ex_a.history(&channel, None).await.expect("history");
    let on_b = ex_b.history(&channel, None).await.expect("history");
    assert_eq!(on_a.top, on_b.top);
    assert_eq!(on_a.top.offset, 6);
    let numbers = |h: &sc_core::broker::HistorySince| -> Vec<(u64, Value)> {
        h.publications
            .as_ref()
            .expect("kept")
            .iter()
            .map(|p| {
                let at = p.position().expect("positioned").offset;
                (at, p.data().cloned().unwrap_or(Value::Null))
            })
            .collect()
    };
    let expected: Vec<(u64, Value)> = (1..=6).map(|n| (n, json!(n))).collect();
    assert_eq!(numbers(&on_a), expected);
    assert_eq!(numbers(&on_b), expected);
    let since = Position {
        offset: 4,
        epoch: on_a.top.epoch.clone(),
    };
    let after = ex_b
        .history(&channel, Some(since.clone()))
        .await
        .expect("history");
    assert_eq!(numbers(&after), expected[4..]);

    // The broker dies and comes back: its history and epoch are gone.
    cluster.brokers[1].abort();
    cluster.wait_disconnected(1).await;
    // Subscribing while the history cannot be read still subscribes (as without history).
    let late = cluster.a.client().await;
    let mut late_sub = late
        .subscribe(&channel)
        .await
        .expect("subscribes while down");
    let _restarted = start_broker(cluster.paths[1].clone()).await;
    cluster.wait_connected(1).await;
    ex_b.publish(channel.as_str(), &7).await.expect("publish");
    assert_eq!(recv(&mut late_sub).await, json!(7));
    let lost = ex_a.history(&channel, Some(since)).await.expect("history");
    assert!(
        lost.publications.is_none(),
        "not recovered after a broker restart"
    );
    assert_ne!(lost.top.epoch, on_a.top.epoch);
}

#[tokio::test]
async fn a_subscriber_cut_from_its_worker_recovers_from_the_broker_exactly_once() {
    let cluster = Cluster::start_app(history_app()).await;
    let proxy = Proxy::start(cluster.a.addr()).await;
    let subscriber = testing::connect(proxy.url_of(&cluster.a)).await;
    let mut events = subscriber.events();
    let channels = [channel_on("feed", 0), channel_on("feed", 1)];
    let mut subs = subscribe_all(&subscriber, &channels).await;
    let publisher = cluster.b.client().await;
    let total = 200u64;
    let publishing = tokio::spawn(async move {
        for n in 1..=total {
            for channel in &channels {
                publisher.publish(channel, &n).await.expect("published");
            }
            if n % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let mut got = vec![Vec::new(), Vec::new()];
    while got[1].len() < total as usize {
        for (i, sub) in subs.iter_mut().enumerate() {
            got[i].push(recv(sub).await.as_u64().expect("a number"));
        }
        if got[1].len() % 50 == 0 {
            proxy.cut();
        }
    }
    publishing.await.expect("publisher");
    for numbers in &got {
        assert_eq!(*numbers, (1..=total).collect::<Vec<_>>());
    }
    assert_quiet(&mut subs).await;
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, ClientEvent::NotRecovered { .. }),
            "{event:?}"
        );
    }
}

#[tokio::test]
async fn a_subscriber_that_stays_connected_through_a_broker_restart_is_told_of_the_gap() {
    let cluster = Cluster::start_app(history_app()).await;
    let (_, ex_b) = cluster.exchanges();
    let channel = channel_on("feed", 1);
    let subscriber = cluster.a.client().await;
    let mut events = subscriber.events();
    let mut sub = subscriber.subscribe(&channel).await.expect("subscribes");
    for n in 1..=3 {
        ex_b.publish(channel.as_str(), &n).await.expect("publish");
    }
    for n in 1..=3 {
        assert_eq!(recv(&mut sub).await, json!(n));
    }
    // The broker (and the history, and whatever was in flight) goes while the subscriber
    // stays connected to its worker; publications go on in a new epoch.
    cluster.brokers[1].abort();
    cluster.wait_disconnected(1).await;
    let _restarted = start_broker(cluster.paths[1].clone()).await;
    cluster.wait_connected(1).await;
    ex_b.publish(channel.as_str(), &4).await.expect("publish");
    assert_eq!(recv(&mut sub).await, json!(4));
    // Nothing is known of what the old epoch had after 3: the server says so.
    let mut not_recovered = 0;
    while let Ok(event) = events.try_recv() {
        if event
            == (ClientEvent::NotRecovered {
                channel: channel.clone(),
            })
        {
            not_recovered += 1;
        }
    }
    assert_eq!(not_recovered, 1);
    assert_eq!(sub.not_recovered(), 1);
    assert_eq!(sub.position().map(|(offset, _)| offset), Some(1));
}
