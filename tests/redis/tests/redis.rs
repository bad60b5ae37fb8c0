//! The Redis broker engine with real processes and a real Redis: independent compat-server
//! processes on different ports (`SC_REDIS_URL`) share channels and the key-value store, with
//! exact delivery counts; a Redis the test owns is killed and started again mid-test.
//!
//! Needs `redis-server` (the shared instance on 127.0.0.1:6379, which `.ci/run` starts, and the
//! binary to start a private one). These tests are never skipped: without Redis they fail saying
//! how to start it.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// Shared with the other process-test package (tests/cluster, tests/redis).
#[path = "../../support/mod.rs"]
mod support;

use sc_core::client::{Backoff, Client, ClientEvent, ClientOptions};
use serde_json::{json, Value};
use support::redis::OwnRedis;
use support::{fresh_prefix, kv, take_exactly};

const SHARED_REDIS: &str = "127.0.0.1:6379";

fn require_shared_redis() {
    if std::net::TcpStream::connect(SHARED_REDIS).is_err() {
        panic!(
            "Redis is not running on {SHARED_REDIS}: start it with `redis-server --daemonize yes --port 6379 --save \"\"`"
        );
    }
}

/// One compat-server process (a node); killed on drop.
struct Node {
    child: Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    fn start(redis_url: &str, prefix: &str) -> Self {
        Self::start_with(redis_url, prefix, &[])
    }

    fn start_with(redis_url: &str, prefix: &str, env: &[(&str, &str)]) -> Self {
        // `env` may name a port (`SC_PORT`), to start a node again where it was.
        let mut child = Command::new(env!("CARGO_BIN_EXE_redis-compat-server"))
            .env("SC_PORT", "0")
            .envs(env.iter().copied())
            .env("SC_HOST", "127.0.0.1")
            .env("SC_REDIS_URL", redis_url)
            .env("SC_REDIS_PREFIX", prefix)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a compat-server node");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log").push(line);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("LISTENING ") {
                    let _ = tx.send(port.trim().parse::<u16>().ok());
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .ok()
            .flatten()
            .unwrap_or_else(|| {
                panic!(
                    "the node did not start: {}",
                    log.lock().expect("log").join("\n")
                )
            });
        Self { child, port, log }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/socketcluster/", self.port)
    }

    fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn client(url: &str) -> Client {
    let mut o = ClientOptions::new(url);
    o.ack_timeout = Duration::from_secs(5);
    o.connect_timeout = Duration::from_secs(5);
    Client::connect_with(o).await.expect("client connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_channels_and_the_store_exactly_once() {
    require_shared_redis();
    let prefix = fresh_prefix();
    let url = format!("redis://{SHARED_REDIS}");
    // Two single-process nodes and one cluster of two workers (no broker processes: the
    // workers use Redis too).
    let nodes = [
        Node::start(&url, &prefix),
        Node::start(&url, &prefix),
        Node::start_with(&url, &prefix, &[("SC_WORKERS", "2")]),
    ];

    // Two clients per single node; on the cluster, clients until both workers serve some.
    let mut clients = Vec::new();
    for node in &nodes[..2] {
        for _ in 0..2 {
            clients.push(client(&node.url()).await);
        }
    }
    let mut worker_pids = HashSet::new();
    while worker_pids.len() < 2 || clients.len() < 8 {
        assert!(
            clients.len() < 100,
            "clients reached only one worker of the cluster node"
        );
        let c = client(&nodes[2].url()).await;
        let stats: Value = c.invoke("stats", &()).await.expect("stats");
        worker_pids.insert(stats["pid"].as_i64().expect("pid"));
        clients.push(c);
        if worker_pids.len() < 2 {
            // The kernel hands connections to whichever worker accepts first; a worker still
            // starting (or busy on a loaded machine) gets none until it is back in accept.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let channels = ["lobby", "rooms/7"];
    let mut subs = Vec::new();
    for c in &clients {
        for ch in channels {
            subs.push(c.subscribe(ch).await.expect("subscribe"));
        }
    }
    // Every client publishes 4 messages on each channel.
    for (i, c) in clients.iter().enumerate() {
        for ch in channels {
            for n in 0..4 {
                c.publish(ch, &json!({"from": i, "n": n}))
                    .await
                    .expect("publish");
            }
        }
    }
    let expected = clients.len() * 4;
    for sub in subs.iter_mut() {
        let got = take_exactly(sub, expected).await;
        let distinct: HashSet<String> = got.iter().map(Value::to_string).collect();
        assert_eq!(
            distinct.len(),
            expected,
            "no duplicates on {}",
            sub.channel()
        );
    }

    // Server-side publish on one node reaches the others too.
    let () = clients[0]
        .invoke(
            "serverPublish",
            &json!({"channel": "lobby", "data": "from the server"}),
        )
        .await
        .expect("serverPublish");
    for sub in subs.iter_mut().filter(|s| s.channel() == "lobby") {
        assert_eq!(take_exactly(sub, 1).await, vec![json!("from the server")]);
    }

    // The key-value store, seen from every node.
    kv(
        &clients[0],
        json!({"op": "set", "key": "k", "value": {"a": [1, 2]}}),
    )
    .await;
    for c in &clients {
        assert_eq!(
            kv(c, json!({"op": "get", "key": "k"})).await,
            json!({"a": [1, 2]})
        );
    }
    let mut adds = Vec::new();
    for c in &clients {
        for n in 0..5 {
            adds.push(kv(c, json!({"op": "add", "key": "list", "value": n})));
        }
    }
    let indices = futures_util::future::join_all(adds).await;
    let distinct: HashSet<i64> = indices.iter().filter_map(Value::as_i64).collect();
    assert_eq!(distinct.len(), clients.len() * 5, "atomic appends");
    let list = kv(
        &clients[clients.len() - 1],
        json!({"op": "get", "key": "list"}),
    )
    .await;
    assert_eq!(list.as_array().map(Vec::len), Some(clients.len() * 5));
    // A scalar becomes a list on add; the expiry is kept.
    kv(
        &clients[1],
        json!({"op": "set", "key": "x", "value": "first"}),
    )
    .await;
    kv(
        &clients[1],
        json!({"op": "expire", "keys": ["x"], "ms": 60000}),
    )
    .await;
    assert_eq!(
        kv(
            &clients[2],
            json!({"op": "add", "key": "x", "value": "second"})
        )
        .await,
        json!(1)
    );
    assert_eq!(
        kv(&clients[3], json!({"op": "get", "key": "x"})).await,
        json!(["first", "second"])
    );
    assert_eq!(kv(&clients[4], json!({"op": "count"})).await, json!(3));
    assert_eq!(
        kv(&clients[4], json!({"op": "remove", "key": "x"})).await,
        json!(["first", "second"])
    );
    assert_eq!(
        kv(&clients[0], json!({"op": "hasKey", "key": "x"})).await,
        json!(false)
    );
    assert_eq!(
        kv(
            &clients[0],
            json!({"op": "expire", "keys": ["k", "list", "gone"], "ms": 0})
        )
        .await,
        json!(2)
    );
    assert_eq!(
        kv(&clients[clients.len() - 1], json!({"op": "count"})).await,
        json!(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_keeps_local_delivery_fails_publishes_fast_and_restores_subscriptions() {
    let mut redis = OwnRedis::start();
    let prefix = fresh_prefix();
    let a = Node::start(&redis.url(), &prefix);
    let b = Node::start(&redis.url(), &prefix);
    let on_a = client(&a.url()).await;
    let on_b = client(&b.url()).await;
    let mut sub_a = on_a.subscribe("news").await.expect("subscribe on a");
    let mut sub_b = on_b.subscribe("news").await.expect("subscribe on b");
    on_b.publish("news", &json!("before"))
        .await
        .expect("publish");
    assert_eq!(take_exactly(&mut sub_a, 1).await, vec![json!("before")]);
    assert_eq!(take_exactly(&mut sub_b, 1).await, vec![json!("before")]);

    // Redis goes away.
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Publishing answers with an error promptly (the client's ack timeout is 5 s) ...
    let during = on_a.publish("news", &json!("during")).await;
    let err = during.expect_err("the publish reports that Redis is unavailable");
    assert!(err.to_string().contains("Redis"), "{err}");
    // ... and still reached the local subscriber, exactly once.
    assert_eq!(take_exactly(&mut sub_a, 1).await, vec![json!("during")]);
    assert!(
        a.log_text().contains("lost the connection to Redis")
            || a.log_text().contains("Redis does not answer"),
        "the node logs the lost connection:\n{}",
        a.log_text()
    );

    // Redis comes back (empty): subscriptions are restored by the nodes themselves.
    redis.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut probes = 0;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "subscriptions were not restored:\n{}\n{}",
            a.log_text(),
            b.log_text()
        );
        if on_b
            .publish("news", &json!({"probe": probes}))
            .await
            .is_ok()
        {
            probes += 1;
            if let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(500), sub_a.recv()).await
            {
                break;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Drain the probes, then exact counts in both directions.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for sub in [&mut sub_a, &mut sub_b] {
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
        }
    }
    for n in 0..5 {
        on_b.publish("news", &json!({"after": n}))
            .await
            .expect("publish from b");
        on_a.publish("news", &json!({"back": n}))
            .await
            .expect("publish from a");
    }
    assert_eq!(take_exactly(&mut sub_a, 10).await.len(), 10);
    assert_eq!(take_exactly(&mut sub_b, 10).await.len(), 10);
    assert!(
        a.log_text().contains("reconnected to Redis"),
        "the node logs the recovery:\n{}",
        a.log_text()
    );
}

/// A socket's publishes through Redis do not wait for each other: they are queued for Redis in
/// the socket's order and answered as Redis answers, so 200 at once arrive in order on the other
/// node, and with Redis stopped a call behind a waiting publish is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_goes_on_while_its_publish_waits_for_redis_and_its_publishes_keep_their_order() {
    let redis = OwnRedis::start();
    let prefix = fresh_prefix();
    let a = Node::start(&redis.url(), &prefix);
    let b = Node::start(&redis.url(), &prefix);
    let publisher = client(&a.url()).await;
    let on_b = client(&b.url()).await;
    let mut sub = on_b.subscribe("pipeline").await.expect("subscribe on b");

    let acks = futures_util::future::join_all((0..200u64).map(|n| {
        let publisher = &publisher;
        async move { publisher.publish("pipeline", &n).await }
    }))
    .await;
    assert!(acks.iter().all(Result::is_ok), "{acks:?}");
    let got = take_exactly(&mut sub, 200).await;
    assert_eq!(got, (0..200u64).map(|n| json!(n)).collect::<Vec<_>>());

    // Redis stopped (not gone: the connection stays up, the answer just does not come).
    redis.pause();
    let pending = {
        let publisher = publisher.clone();
        tokio::spawn(async move { publisher.publish("pipeline", &200u64).await })
    };
    // Let the publish reach the node before the call behind it; both well within the Redis
    // engine's 1 s command timeout.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answered = tokio::time::timeout(
        Duration::from_millis(500),
        publisher.invoke::<_, Value>("echo", &json!("behind")),
    )
    .await;
    let publish_waited = !pending.is_finished();
    redis.resume();
    assert_eq!(
        answered
            .expect("the call waited for the publish before it")
            .expect("echo"),
        json!("behind")
    );
    assert!(
        publish_waited,
        "the publish was answered while Redis was stopped"
    );
    pending
        .await
        .expect("join")
        .expect("the publish is acknowledged once Redis goes on");
    assert_eq!(take_exactly(&mut sub, 1).await, vec![json!(200)]);
}

/// The publishes a socket leaves waiting for Redis are bounded by `inbound_queue_limit`: with
/// Redis stopped and a limit of 2, the third publish is awaited before the socket's next call
/// (another socket's call is answered meanwhile), and everything is answered once Redis goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_waiting_for_redis_are_bounded_by_the_inbound_queue_limit() {
    let redis = OwnRedis::start();
    let prefix = fresh_prefix();
    let a = Node::start_with(&redis.url(), &prefix, &[("SC_INBOUND_QUEUE_LIMIT", "2")]);
    let publisher = client(&a.url()).await;
    let bystander = client(&a.url()).await;
    publisher
        .publish("bounded", &json!("warm"))
        .await
        .expect("publish");

    redis.pause();
    let publishes: Vec<_> = (0..3u64)
        .map(|n| {
            let publisher = publisher.clone();
            tokio::spawn(async move { publisher.publish("bounded", &n).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let behind = tokio::time::timeout(
        Duration::from_millis(300),
        publisher.invoke::<_, Value>("echo", &json!("behind")),
    )
    .await;
    let other = tokio::time::timeout(
        Duration::from_millis(300),
        bystander.invoke::<_, Value>("echo", &json!("other")),
    )
    .await;
    redis.resume();
    assert_eq!(
        other.expect("another socket's call waited").expect("echo"),
        json!("other")
    );
    assert!(
        behind.is_err(),
        "the call was answered while a third publish waited: {behind:?}"
    );
    for publish in publishes {
        publish
            .await
            .expect("join")
            .expect("acknowledged once Redis goes on");
    }
    assert_eq!(
        publisher
            .invoke::<_, Value>("echo", &json!("after"))
            .await
            .expect("echo"),
        json!("after")
    );
}

/// Apps on one Redis with prefixes `P` and `P + "app2:"` (as `sc:` and `sc:app2:`): before the
/// `#` separator, app 1's channel `app2:room` was app 2's channel `room` in Redis, so each node
/// received the other app's publications and handed them to its own subscribers of another
/// channel, past its middleware (a client routes a frame by the channel it names, so the leak
/// shows on a subscription to the other app's channel name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_that_extend_each_other_never_share_a_channel() {
    use futures_util::FutureExt;
    require_shared_redis();
    let app1 = fresh_prefix();
    let app2 = format!("{app1}app2:");
    let url = format!("redis://{SHARED_REDIS}");
    let a = Node::start(&url, &app1);
    let a_twin = Node::start(&url, &app1);
    let b = Node::start(&url, &app2);
    let b_twin = Node::start(&url, &app2);
    let (ca, ca_twin) = (client(&a.url()).await, client(&a_twin.url()).await);
    let (cb, cb_twin) = (client(&b.url()).await, client(&b_twin.url()).await);
    let mut sub_b = cb.subscribe("room").await.expect("subscribe");
    let mut leak_b = cb.subscribe("app2:room").await.expect("subscribe");
    let mut sub_a = ca.subscribe("app2:room").await.expect("subscribe");
    let mut leak_a = ca.subscribe("room").await.expect("subscribe");

    // Each publish is acknowledged once Redis accepted it, and Redis delivers in order, so a
    // marker published afterwards by the subscriber's own app arrives after anything leaked.
    ca.publish("app2:room", &json!("from app 1"))
        .await
        .expect("publish");
    cb_twin
        .publish("room", &json!("marker for app 2"))
        .await
        .expect("publish");
    assert_eq!(
        take_exactly(&mut sub_b, 1).await,
        vec![json!("marker for app 2")]
    );
    assert_eq!(
        leak_b.recv().now_or_never(),
        None,
        "app 1's `app2:room` reached app 2"
    );

    cb.publish("room", &json!("from app 2"))
        .await
        .expect("publish");
    ca_twin
        .publish("app2:room", &json!("marker for app 1"))
        .await
        .expect("publish");
    // App 1's own publication on `app2:room` (from the first half) is there, then the marker.
    assert_eq!(
        take_exactly(&mut sub_a, 2).await,
        vec![json!("from app 1"), json!("marker for app 1")]
    );
    assert_eq!(
        leak_a.recv().now_or_never(),
        None,
        "app 2's `room` reached app 1"
    );
    let logs = [a.log_text(), b.log_text()].join("\n");
    assert!(!logs.contains("panicked"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_with_the_separator_is_refused_at_startup() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_redis-compat-server"))
        .env("SC_PORT", "0")
        .env("SC_HOST", "127.0.0.1")
        .env("SC_REDIS_URL", format!("redis://{SHARED_REDIS}"))
        .env("SC_REDIS_PREFIX", "app#2:")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a compat-server node");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    let status = child.wait().expect("exits");
    assert!(!status.success());
    assert!(
        stderr.contains("redis_prefix") && stderr.contains("must not contain '#'"),
        "{stderr}"
    );
}

/// Issue 17 (b): a subscriber (the Rust client) on a channel with history loses nothing while the
/// node it is connected to is killed and started again on the same port, as a publisher on
/// another node goes on: the history is in Redis, so the new process recovers the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_loses_nothing_while_its_node_restarts() {
    require_shared_redis();
    let prefix = fresh_prefix();
    let url = format!("redis://{SHARED_REDIS}");
    let mut a = Node::start(&url, &prefix);
    let b = Node::start(&url, &prefix);
    let mut options = ClientOptions::new(a.url());
    options.ack_timeout = Duration::from_secs(5);
    options.backoff = Backoff {
        initial_delay: Duration::from_millis(100),
        randomness: Duration::from_millis(50),
        multiplier: 1.0,
        max_delay: Duration::from_millis(200),
    };
    let subscriber = Client::connect_with(options).await.expect("connects");
    let mut events = subscriber.events();
    // `hist/{id}` keeps 1000 publications (tests/compat/server).
    let mut sub = subscriber.subscribe("hist/1").await.expect("subscribe");
    let publisher = client(&b.url()).await;
    let total = 400u64;
    let publishing = tokio::spawn(async move {
        for n in 1..=total {
            publisher.publish("hist/1", &n).await.expect("published");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let mut got = Vec::new();
    let mut restarted = false;
    while got.len() < total as usize {
        let next = tokio::time::timeout(Duration::from_secs(10), sub.recv()).await;
        let Ok(Some(n)) = next else {
            panic!("only {} of {total} arrived:\n{}", got.len(), a.log_text());
        };
        got.push(n.as_u64().expect("a number"));
        if got.len() == 50 && !restarted {
            restarted = true;
            let port = a.port.to_string();
            drop(a);
            a = Node::start_with(&url, &prefix, &[("SC_PORT", &port)]);
        }
    }
    publishing.await.expect("publisher");
    assert_eq!(got, (1..=total).collect::<Vec<_>>());
    let mut connects = 0;
    while let Ok(e) = events.try_recv() {
        match e {
            ClientEvent::Connect { .. } => connects += 1,
            ClientEvent::NotRecovered { channel } => panic!("{channel} was not recovered"),
            _ => {}
        }
    }
    assert!(
        connects >= 1,
        "the subscriber reconnected to the new process"
    );
    drop(a);
}

/// Recovery across nodes: a subscriber that saw a channel on one node and comes back on another
/// (with the position it saw, as the official client's `data.recover`) gets what it missed there,
/// in order, then live publications.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_recovers_on_another_node() {
    require_shared_redis();
    let prefix = fresh_prefix();
    let url = format!("redis://{SHARED_REDIS}");
    let (a, b) = (Node::start(&url, &prefix), Node::start(&url, &prefix));
    let publisher = client(&a.url()).await;
    let on_a = client(&a.url()).await;
    let mut sub = on_a.subscribe("hist/9").await.expect("subscribe on a");
    for n in 1..=3 {
        publisher.publish("hist/9", &n).await.expect("published");
    }
    assert_eq!(
        take_exactly(&mut sub, 3).await,
        vec![json!(1), json!(2), json!(3)]
    );
    let (offset, epoch) = sub
        .position()
        .expect("a position on a channel with history");
    assert_eq!(offset, 3);
    drop(sub);
    drop(on_a);
    for n in 4..=6 {
        publisher.publish("hist/9", &n).await.expect("published");
    }
    let on_b = client(&b.url()).await;
    let options = sc_core::client::SubscribeOptions {
        data: Some(json!({"recover": {"offset": offset, "epoch": epoch}})),
        ..Default::default()
    };
    let mut sub = on_b
        .subscribe_with("hist/9", options)
        .await
        .expect("subscribe on b");
    publisher.publish("hist/9", &7).await.expect("published");
    assert_eq!(
        take_exactly(&mut sub, 4).await,
        vec![json!(4), json!(5), json!(6), json!(7)]
    );
    assert_eq!(sub.not_recovered(), 0);
}

/// Presence through Redis: counts asked on either node agree; a leave shows on the other node;
/// a SIGKILLed node's entries stop counting within the bound (`NODE_TTL`, 6 s) and their leaves
/// are announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_agrees_across_nodes_and_a_killed_node_leaves_within_the_bound() {
    require_shared_redis();
    let prefix = fresh_prefix();
    let url = format!("redis://{SHARED_REDIS}");
    let a = Node::start(&url, &prefix);
    let mut b = Node::start(&url, &prefix);
    let on_a = client(&a.url()).await;
    let mut events = on_a.receiver("#presence");
    let _sa = on_a.subscribe("presjl/1").await.expect("subscribed");
    let on_b = client(&b.url()).await;
    let leaver = client(&b.url()).await;
    let _sb = on_b.subscribe("presjl/1").await.expect("subscribed");
    let sl = leaver.subscribe("presjl/1").await.expect("subscribed");
    let within = Duration::from_secs(5);
    support::presence_count_becomes(&on_a, "presjl/1", 3, within).await;
    assert_eq!(support::presence_count(&on_b, "presjl/1").await, 3);
    // Node b's joins reach node a's subscriber through Redis.
    let from_b = HashSet::from([on_b.id().expect("an id"), leaver.id().expect("an id")]);
    support::await_presence(&mut events, "joins", &from_b, within).await;

    sl.unsubscribe();
    support::presence_count_becomes(&on_a, "presjl/1", 2, within).await;
    assert_eq!(support::presence_count(&on_b, "presjl/1").await, 2);

    let gone = on_b.id().expect("an id");
    b.child.kill().expect("SIGKILL node b");
    let _ = b.child.wait();
    let took = support::presence_count_becomes(&on_a, "presjl/1", 1, Duration::from_secs(10)).await;
    assert!(took <= Duration::from_secs(8), "took {took:?}");
    // Its leave is announced (by whichever node swept it).
    let gone = HashSet::from([gone]);
    support::await_presence(&mut events, "leaves", &gone, Duration::from_secs(10)).await;
}

/// Presence on two Redis instances, one of which is away for a moment and comes back with its
/// data (and this node's key still alive): the leaves that failed there are written once it
/// answers, although the other instance answered all along (one dirty flag per instance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_leaves_that_failed_on_one_of_two_instances_are_written_when_it_is_back() {
    require_shared_redis();
    let dir = std::env::temp_dir().join(format!("sc-redis-aof-{}", std::process::id()));
    let mut own = OwnRedis::persistent(&dir);
    let urls = format!("redis://{SHARED_REDIS},{}", own.url());
    let node = Node::start(&urls, &fresh_prefix());
    let stayer = client(&node.url()).await;
    let leaver = client(&node.url()).await;
    // Enough channels that both instances own some.
    let channels: Vec<String> = (0..8).map(|i| format!("pres/{i}")).collect();
    let (mut kept, mut left) = (Vec::new(), Vec::new());
    for c in &channels {
        kept.push(stayer.subscribe(c).await.expect("subscribed"));
        left.push(leaver.subscribe(c).await.expect("subscribed"));
    }
    for c in &channels {
        support::presence_count_becomes(&stayer, c, 2, Duration::from_secs(5)).await;
    }
    own.kill();
    for s in left {
        s.unsubscribe();
    }
    // The leaves are tried (and fail on the killed instance) well within the node key's TTL.
    tokio::time::sleep(Duration::from_millis(800)).await;
    own.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(12);
    for c in &channels {
        loop {
            let asked = stayer
                .invoke_value("#presence", Some(json!({ "channel": c })))
                .await;
            let count = asked.ok().flatten().and_then(|a| a["count"].as_u64());
            if count == Some(1) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{c} still counts {count:?}, not 1: the failed leave stayed a ghost"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    drop(own);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Redis that restarts empty loses every entry: the node writes its entries there again and
/// tells the channel's subscribers to ask again (an event with `"cut": true`), and the count is
/// whole again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_entries_come_back_after_redis_restarts_empty_with_a_cut_event() {
    let mut own = OwnRedis::start();
    let node = Node::start(&own.url(), &fresh_prefix());
    let c = client(&node.url()).await;
    let mut events = c.receiver("#presence");
    let _s = c.subscribe("presjl/7").await.expect("subscribed");
    support::presence_count_becomes(&c, "presjl/7", 1, Duration::from_secs(5)).await;
    let own_join = HashSet::from([c.id().expect("an id")]);
    support::await_presence(&mut events, "joins", &own_join, Duration::from_secs(5)).await;
    own.kill();
    own.restart();
    // The first cut event must already find the entry back (it is written before the event).
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("a cut event after Redis restarted")
        .expect("the stream is open")
        .expect("data");
    assert_eq!(event["channel"], "presjl/7", "{event}");
    assert_eq!(event["cut"], true, "{event}");
    let asked = c
        .invoke_value("#presence", Some(json!({ "channel": "presjl/7" })))
        .await
        .expect("an answer")
        .expect("data");
    assert_eq!(asked["count"], 1, "{asked}");
}

/// Runs one `redis-cli` command on the shared Redis; its output.
fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379"])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A sweeper that claimed a dead node's channels and died before sweeping them leaves their
/// claimed set behind (`prefix#pcx:NODE`): a later round sweeps it, announces the dead entry's
/// leave without anyone asking `#presence`, and forgets the claimed set only then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_channels_claimed_by_a_sweeper_that_died_are_swept_later() {
    require_shared_redis();
    let prefix = fresh_prefix();
    let dead = "00000000deadbeef";
    let claimed = format!("{prefix}#pcx:{dead}");
    let node = Node::start(&format!("redis://{SHARED_REDIS}"), &prefix);
    let c = client(&node.url()).await;
    let mut events = c.receiver("#presence");
    let _s = c.subscribe("presjl/8").await.expect("subscribed");
    // Seeded once there is a subscriber to hear the leave.
    redis_cli(&[
        "HSET",
        &format!("{prefix}#p:presjl/8"),
        "ghost",
        &format!("{dead}1{{\"socket\":\"ghost\",\"user\":null}}"),
    ]);
    redis_cli(&["SADD", &claimed, "presjl/8"]);
    redis_cli(&["SADD", &format!("{prefix}#pclaimed"), dead]);
    // No `#presence` query here: a query would sweep the channel itself.
    let ghost = HashSet::from(["ghost".to_owned()]);
    support::await_presence(&mut events, "leaves", &ghost, Duration::from_secs(8)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while redis_cli(&["EXISTS", &claimed]) != "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "{claimed} still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        redis_cli(&["SISMEMBER", &format!("{prefix}#pclaimed"), dead]),
        "0"
    );
}
