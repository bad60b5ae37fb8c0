//! What presence costs (issue 18), measured, not asserted: per engine, the time of one join and
//! one leave (10,000 of each on one channel, one after the other, as a worker's presence task
//! sends them) and of a query of 10,000 members; end to end, a `#subscribe` + `#unsubscribe`
//! round trip on a channel with presence against one without, and a `#presence` answer over
//! 10,000 members. Run: `cargo run --release -p sc-core --example presence_cost` (Redis on
//! 127.0.0.1:6379 is measured when it answers). Prints one line per measurement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sc_core::app::contract::{ChannelContract, PresencePolicy};
use sc_core::broker::{server, BrokerEngine, ClusterBroker, LocalBroker, PresenceEntry, Redis};
use sc_core::testing::{self, TestServer};
use sc_core::App;

const MEMBERS: usize = 10_000;

fn entry(i: usize) -> PresenceEntry {
    PresenceEntry {
        socket: format!("socket-{i:06}-abcdefgh"),
        user: Some(format!("user-{}", i % 5000)),
        info: None,
    }
}

async fn engine_cost(name: &str, engine: &dyn BrokerEngine) {
    let channel = format!("cost/{}", rand_suffix());
    let start = Instant::now();
    for i in 0..MEMBERS {
        engine
            .presence_join(&channel, entry(i), true)
            .await
            .expect("join");
    }
    let join = start.elapsed() / MEMBERS as u32;
    let mut query = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let entries = engine.presence(&channel).await.expect("query");
        query = query.min(start.elapsed());
        assert_eq!(entries.len(), MEMBERS);
    }
    let start = Instant::now();
    for i in 0..MEMBERS {
        engine
            .presence_leave(&channel, &entry(i).socket)
            .await
            .expect("leave");
    }
    let leave = start.elapsed() / MEMBERS as u32;
    println!(
        "{name}: join {:.1} µs, leave {:.1} µs, query of {MEMBERS} {:.2} ms (best of 5)",
        join.as_secs_f64() * 1e6,
        leave.as_secs_f64() * 1e6,
        query.as_secs_f64() * 1e3
    );
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

struct NullSink;
impl sc_core::broker::DeliverySink for NullSink {
    fn deliver(&self, _: Arc<sc_core::broker::Publication>) -> sc_core::broker::BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

async fn end_to_end() {
    let engine = Arc::new(LocalBroker::new());
    let app = App::new()
        .channel_contract(ChannelContract::new("with/{id}").presence(PresencePolicy::new()));
    let server = TestServer::start(testing::builder().broker_engine(engine.clone()).app(app)).await;
    let client = server.client().await;
    for (label, channel) in [("without presence", "plain/1"), ("with presence", "with/1")] {
        let rounds = 2000;
        let start = Instant::now();
        for _ in 0..rounds {
            let sub = client.subscribe(channel).await.expect("subscribed");
            sub.unsubscribe();
        }
        let each = start.elapsed() / rounds;
        println!(
            "end to end, #subscribe ack + #unsubscribe {label}: {:.1} µs per round",
            each.as_secs_f64() * 1e6
        );
    }
    let _member = client.subscribe("with/2").await.expect("subscribed");
    for i in 0..MEMBERS {
        engine
            .presence_join("with/2", entry(i), false)
            .await
            .expect("join");
    }
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let answer = client.presence("with/2").await.expect("answered");
        best = best.min(start.elapsed());
        assert_eq!(answer.count, MEMBERS + 1);
        tokio::time::sleep(Duration::from_millis(200)).await; // the default #presence rate limit
    }
    println!(
        "end to end, #presence over {} members (1000 listed): {:.2} ms (best of 5)",
        MEMBERS + 1,
        best.as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    let local = LocalBroker::new();
    let sink: Arc<dyn sc_core::broker::DeliverySink> = Arc::new(NullSink);
    local.start(Arc::downgrade(&sink)).await.expect("starts");
    engine_cost("in-process", &local).await;

    let dir = std::env::temp_dir().join(format!("sc-presence-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("b.sock");
    let listener = server::bind(&path).await.expect("broker binds");
    let broker = tokio::spawn(server::serve(listener));
    let cluster = ClusterBroker::new(vec![path]);
    cluster.start(Arc::downgrade(&sink)).await.expect("starts");
    engine_cost(
        "broker process (in this process, over a Unix socket)",
        &cluster,
    )
    .await;
    cluster.shutdown().await;
    broker.abort();
    let _ = std::fs::remove_dir_all(&dir);

    if std::net::TcpStream::connect("127.0.0.1:6379").is_ok() {
        let redis =
            Redis::new("redis://127.0.0.1:6379").prefix(format!("sccost{}:", rand_suffix()));
        redis.start(Arc::downgrade(&sink)).await.expect("starts");
        engine_cost("Redis (127.0.0.1)", &redis).await;
        redis.shutdown().await;
    }

    end_to_end().await;
}
