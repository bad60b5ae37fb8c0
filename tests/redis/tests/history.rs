//! Channel history on the Redis engine, with two engines (two nodes) on the shared Redis
//! (127.0.0.1:6379) and a fresh prefix per test: positions are the same on every node, history
//! is read from any node, an exact MAXLEN makes an overflowed gap unrecoverable, and an expired
//! channel keeps its position for the tombstone ttl, then starts a new epoch; publishes are queued
//! in call order on their first poll, a script Redis forgot is loaded again, and what is queued behind
//! a pipeline that timed out fails with it.

#[path = "../../support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sc_core::broker::{
    BoxFuture, BrokerEngine, DeliverySink, HistoryPolicy, Position, Publication, Redis,
};
use serde_json::{json, Value};
use support::fresh_prefix;
use support::redis::OwnRedis;

const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

/// What a node's sockets would receive: (channel, position, data).
type Received = Arc<Mutex<Vec<(String, Option<Position>, Option<Value>)>>>;

struct Collect(Received);

impl DeliverySink for Collect {
    fn deliver(&self, publication: Arc<Publication>) -> BoxFuture<'_, ()> {
        self.0.lock().expect("lock").push((
            publication.channel.to_string(),
            publication.position().cloned(),
            publication.data().cloned(),
        ));
        Box::pin(async {})
    }
}

/// A started engine and what it delivered; the sink is kept alive here (engines hold it weakly).
struct Node {
    engine: Redis,
    received: Received,
    _sink: Arc<dyn DeliverySink>,
}

async fn node(prefix: &str) -> Node {
    node_with(prefix, Redis::new(SHARED_REDIS)).await
}

async fn node_with(prefix: &str, engine: Redis) -> Node {
    if std::net::TcpStream::connect("127.0.0.1:6379").is_err() {
        panic!("Redis is not running on 127.0.0.1:6379: start it with `redis-server --daemonize yes --port 6379 --save \"\"`");
    }
    let received = Received::default();
    let sink: Arc<dyn DeliverySink> = Arc::new(Collect(received.clone()));
    let engine = engine.prefix(prefix);
    engine
        .start(Arc::downgrade(&sink) as Weak<dyn DeliverySink>)
        .await
        .expect("the engine starts");
    Node {
        engine,
        received,
        _sink: sink,
    }
}

async fn publish(node: &Node, channel: &str, data: Value, policy: HistoryPolicy) -> Position {
    let publication = Publication::new(channel, Some(data)).expect("encodes");
    node.engine
        .publish_with_history(Arc::new(publication), policy)
        .await
        .expect("publishes")
}

/// Waits until `node` delivered `n` publications, and answers them.
async fn delivered(node: &Node, n: usize) -> Vec<(String, Option<Position>, Option<Value>)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = node.received.lock().expect("lock").clone();
        if got.len() >= n {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let got = node.received.lock().expect("lock").clone();
            assert_eq!(got.len(), n, "exactly {n} deliveries: {got:?}");
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} publications were delivered: {got:?}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn offsets(since: &sc_core::broker::HistorySince) -> Option<Vec<u64>> {
    since.publications.as_ref().map(|p| {
        p.iter()
            .map(|p| p.position().expect("positioned").offset)
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_see_the_same_positions_and_the_same_history() {
    let prefix = fresh_prefix();
    let (a, b) = (node(&prefix).await, node(&prefix).await);
    let policy = HistoryPolicy::new(10, Duration::from_secs(60));
    a.engine.subscribe("rooms/1").await.expect("subscribe");
    b.engine.subscribe("rooms/1").await.expect("subscribe");

    // Publications from both nodes, interleaved: one sequence of offsets in one epoch.
    let mut positions = Vec::new();
    for n in 0..4 {
        let from = if n % 2 == 0 { &a } else { &b };
        positions.push(publish(from, "rooms/1", json!({"n": n}), policy).await);
    }
    let epoch = positions[0].epoch.clone();
    assert_eq!(
        positions,
        (1..=4)
            .map(|offset| Position {
                offset,
                epoch: epoch.clone()
            })
            .collect::<Vec<_>>()
    );
    // Every node, the publishing one included, delivers each once, positioned, in order.
    for node in [&a, &b] {
        let got = delivered(node, 4).await;
        for (i, (channel, position, data)) in got.iter().enumerate() {
            assert_eq!(channel, "rooms/1");
            assert_eq!(position.as_ref(), Some(&positions[i]));
            assert_eq!(data, &Some(json!({"n": i})));
        }
    }

    // History from either node: everything, or what followed a position.
    let all = b
        .engine
        .history("rooms/1", None, policy)
        .await
        .expect("history");
    assert_eq!(all.top, positions[3]);
    assert_eq!(offsets(&all), Some(vec![1, 2, 3, 4]));
    let kept = all.publications.expect("complete");
    assert_eq!(kept[2].data(), Some(&json!({"n": 2})));
    let since = a
        .engine
        .history("rooms/1", Some(positions[1].clone()), policy)
        .await
        .expect("history");
    assert_eq!(offsets(&since), Some(vec![3, 4]));
    let up_to_date = a
        .engine
        .history("rooms/1", Some(positions[3].clone()), policy)
        .await
        .expect("history");
    assert_eq!(offsets(&up_to_date), Some(vec![]));
    let other_epoch = Position {
        offset: 2,
        epoch: "not-this-one".into(),
    };
    let lost = a
        .engine
        .history("rooms/1", Some(other_epoch), policy)
        .await
        .expect("history");
    assert_eq!(lost.top, positions[3]);
    assert_eq!(offsets(&lost), None);
    let ahead = Position {
        offset: 9,
        epoch: epoch.clone(),
    };
    let future = a
        .engine
        .history("rooms/1", Some(ahead), policy)
        .await
        .expect("history");
    assert_eq!(offsets(&future), None);

    // A quiet channel gets an epoch when first read, and keeps it for its first publication,
    // so a subscriber that saw "offset 0" recovers the first publications.
    let quiet = a
        .engine
        .history("quiet", None, policy)
        .await
        .expect("history");
    assert_eq!(quiet.top.offset, 0);
    assert_eq!(offsets(&quiet), Some(vec![]));
    let first = publish(&b, "quiet", json!("first"), policy).await;
    assert_eq!(first.epoch, quiet.top.epoch);
    let caught_up = a
        .engine
        .history("quiet", Some(quiet.top.clone()), policy)
        .await
        .expect("history");
    assert_eq!(offsets(&caught_up), Some(vec![1]));
    // Not subscribed to `quiet`: nothing delivered beyond the four above.
    assert_eq!(delivered(&a, 4).await.len(), 4);
    a.engine.shutdown().await;
    b.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowed_gap_is_not_recovered_partially() {
    let prefix = fresh_prefix();
    let a = node(&prefix).await;
    let policy = HistoryPolicy::new(3, Duration::from_secs(60));
    let mut positions = Vec::new();
    for n in 0..5 {
        positions.push(publish(&a, "c", json!(n), policy).await);
    }
    let all = a.engine.history("c", None, policy).await.expect("history");
    assert_eq!(offsets(&all), Some(vec![3, 4, 5]), "exactly `size` kept");
    // Since 2: 3, 4, 5 are all kept. Since 1: 2 is gone, so nothing.
    let since_2 = a
        .engine
        .history("c", Some(positions[1].clone()), policy)
        .await
        .expect("history");
    assert_eq!(offsets(&since_2), Some(vec![3, 4, 5]));
    let since_1 = a
        .engine
        .history("c", Some(positions[0].clone()), policy)
        .await
        .expect("history");
    assert_eq!(since_1.top, positions[4]);
    assert_eq!(offsets(&since_1), None);
    a.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_channel_keeps_its_position_for_the_tombstone_ttl_then_starts_a_new_epoch() {
    let prefix = fresh_prefix();
    // The position (the meta hash) outlives the stream by 800 ms.
    let tombstone = Duration::from_millis(800);
    let (a, b) = (
        node_with(
            &prefix,
            Redis::new(SHARED_REDIS).history_tombstone_ttl(tombstone),
        )
        .await,
        node_with(
            &prefix,
            Redis::new(SHARED_REDIS).history_tombstone_ttl(tombstone),
        )
        .await,
    );
    let policy = HistoryPolicy::new(10, Duration::from_millis(600));
    let old = publish(&a, "c", json!("old"), policy).await;
    assert_eq!(old.offset, 1);
    // Within the ttl, publications keep the epoch (each one renews the expiry).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = publish(&b, "c", json!("second"), policy).await;
    assert_eq!((second.offset, &second.epoch), (2, &old.epoch));
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The first is past its ttl (800 ms old), the second is not: a read since 0 is incomplete,
    // a read since 1 is not.
    let since_1 = a
        .engine
        .history("c", Some(old.clone()), policy)
        .await
        .expect("history");
    assert_eq!(offsets(&since_1), Some(vec![2]));
    let since_0 = Position {
        offset: 0,
        epoch: old.epoch.clone(),
    };
    let from_start = a
        .engine
        .history("c", Some(since_0), policy)
        .await
        .expect("history");
    assert_eq!(offsets(&from_start), None);

    // Nothing published for longer than the ttl: the stream is gone, the position is not. A
    // client at the top missed nothing; one behind it is not recovered.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let at_top = a
        .engine
        .history("c", Some(second.clone()), policy)
        .await
        .expect("history");
    assert_eq!((offsets(&at_top), &at_top.top), (Some(vec![]), &second));
    let behind = a
        .engine
        .history("c", Some(old.clone()), policy)
        .await
        .expect("history");
    assert_eq!(offsets(&behind), None);
    // The next publication continues the epoch, so live subscribers see no gap.
    let third = publish(&b, "c", json!("third"), policy).await;
    assert_eq!((third.offset, &third.epoch), (3, &old.epoch));

    // Past the ttl and the tombstone ttl: the epoch is lost too.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let new = publish(&b, "c", json!("new"), policy).await;
    assert_eq!(new.offset, 1);
    assert_ne!(new.epoch, old.epoch);
    let since_old = a
        .engine
        .history("c", Some(third), policy)
        .await
        .expect("history");
    assert_eq!(since_old.top, new);
    assert_eq!(offsets(&since_old), None);
    a.engine.shutdown().await;
    b.engine.shutdown().await;
}

/// A publish is queued for Redis on its first poll, in call order (what lets a socket's next
/// message start while its publish waits for Redis): publishes polled once and dropped still
/// reach the other node, in order, and positioned ones take their offsets in call order. More
/// of them than the Redis connection's own queue holds (50).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_are_queued_in_call_order_on_their_first_poll() {
    use futures_util::FutureExt;
    let prefix = fresh_prefix();
    let (a, b) = (node(&prefix).await, node(&prefix).await);
    let policy = HistoryPolicy::new(1000, Duration::from_secs(60));
    b.engine.subscribe("plain").await.expect("subscribe");
    b.engine.subscribe("kept").await.expect("subscribe");
    const N: u64 = 300;
    for n in 0..N {
        let plain = Publication::new("plain", Some(json!(n))).expect("encodes");
        let kept = Publication::new("kept", Some(json!(n))).expect("encodes");
        // Polled once: not answered yet (that takes a round trip), then dropped.
        assert!(a.engine.publish(Arc::new(plain)).now_or_never().is_none());
        assert!(a
            .engine
            .publish_with_history(Arc::new(kept), policy)
            .now_or_never()
            .is_none());
    }
    let got = delivered(&b, 2 * N as usize).await;
    let plain: Vec<_> = got.iter().filter(|(c, ..)| c == "plain").collect();
    let kept: Vec<_> = got.iter().filter(|(c, ..)| c == "kept").collect();
    let in_order: Vec<Option<Value>> = (0..N).map(|n| Some(json!(n))).collect();
    assert_eq!(
        plain.iter().map(|(_, _, d)| d.clone()).collect::<Vec<_>>(),
        in_order
    );
    assert!(plain.iter().all(|(_, p, _)| p.is_none()));
    assert_eq!(
        kept.iter().map(|(_, _, d)| d.clone()).collect::<Vec<_>>(),
        in_order
    );
    assert_eq!(
        kept.iter()
            .map(|(_, p, _)| p.as_ref().expect("positioned").offset)
            .collect::<Vec<_>>(),
        (1..=N).collect::<Vec<_>>()
    );
    let history = b
        .engine
        .history("kept", None, policy)
        .await
        .expect("history");
    assert_eq!(offsets(&history), Some((1..=N).collect()));
    a.engine.shutdown().await;
    b.engine.shutdown().await;
}

/// Positioned publications run the history script by its hash; Redis forgets scripts (a
/// restart, `SCRIPT FLUSH`). The engine then loads it again and sends the refused publications
/// once more, in their order, so none fails and the offsets go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_history_script_is_loaded_again_and_publishing_goes_on() {
    use futures_util::FutureExt;
    // Its own Redis: a flush of the shared one could land in the middle of another test's
    // pipeline, and that test's publications would then fail, by design.
    let redis = OwnRedis::start();
    let a = node_with(&fresh_prefix(), Redis::new(redis.url())).await;
    let policy = HistoryPolicy::new(100, Duration::from_secs(60));
    let first = publish(&a, "c", json!(0), policy).await;
    assert_eq!(first.offset, 1);
    assert_eq!(redis.cli(&["SCRIPT", "FLUSH"]), "OK");
    let second = publish(&a, "c", json!(1), policy).await;
    assert_eq!((second.offset, &second.epoch), (2, &first.epoch));
    // Several in one pipeline, all refused with NOSCRIPT, then sent again together.
    assert_eq!(redis.cli(&["SCRIPT", "FLUSH"]), "OK");
    let mut answers = Vec::new();
    for n in 2..12 {
        let publication = Publication::new("c", Some(json!(n))).expect("encodes");
        let mut publishing = a.engine.publish_with_history(Arc::new(publication), policy);
        assert!((&mut publishing).now_or_never().is_none());
        answers.push(publishing);
    }
    let positions = futures_util::future::join_all(answers).await;
    assert_eq!(
        positions
            .into_iter()
            .map(|p| p.expect("publishes").offset)
            .collect::<Vec<_>>(),
        (3..=12).collect::<Vec<_>>()
    );
    let all = a.engine.history("c", None, policy).await.expect("history");
    let data: Vec<_> = all
        .publications
        .expect("complete")
        .iter()
        .map(|p| p.data().cloned())
        .collect();
    assert_eq!(data, (0..12).map(|n| Some(json!(n))).collect::<Vec<_>>());
    a.engine.shutdown().await;
}

/// Redis stopped: a publication fails after the engine's timeout, and those queued behind it
/// fail with it (not a timeout each per pipeline, which would take seconds for thousands); once
/// Redis goes on, publishing works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_queued_behind_a_pipeline_that_timed_out_fail_with_it() {
    let redis = OwnRedis::start();
    let timeout = Duration::from_millis(300);
    let a = node_with(&fresh_prefix(), Redis::new(redis.url()).timeout(timeout)).await;
    let publish = |n: u64| {
        let publication = Publication::new("c", Some(json!(n))).expect("encodes");
        a.engine.publish(Arc::new(publication))
    };
    redis.pause();
    let started = tokio::time::Instant::now();
    // Well over the 512 one pipeline carries.
    let answers = futures_util::future::join_all((0..3000).map(publish)).await;
    let took = started.elapsed();
    redis.resume();
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, Err(sc_core::broker::BrokerError::Unavailable(_)))),
        "every one fails as unavailable: {:?}",
        answers.iter().find(|a| a.is_ok())
    );
    assert!(
        took < 5 * timeout,
        "the queued publications waited {took:?}, not one timeout ({timeout:?})"
    );
    // Back: publishing works again once the engine sees Redis answer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while publish(3000).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishing did not recover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.engine.shutdown().await;
}
