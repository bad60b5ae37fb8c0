//! Channel history and recovery end to end, in process: our server on 127.0.0.1, the Rust
//! client as subscriber, its TCP connection cut by a proxy in between while a numbered stream
//! is published.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::Proxy;

use sc_core::app::contract::ChannelContract;
use sc_core::broker::{HistoryPolicy, Position};
use sc_core::client::{Client, ClientEvent};
use sc_core::prelude::*;
use sc_core::testing::{self, TestServer};
use serde_json::{json, Value};

fn app(size: usize) -> App {
    App::new().channel_contract(
        ChannelContract::new("feed/{id}")
            .publish(sc_core::app::contract::Access::Anyone)
            .history(HistoryPolicy::new(size, Duration::from_secs(60))),
    )
}

async fn client_via(proxy: &Proxy, server: &TestServer) -> Client {
    testing::connect(proxy.url_of(server)).await
}

async fn next(sub: &mut sc_core::client::Subscription) -> Value {
    tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("a publication in time")
        .expect("the subscription is open")
}

async fn wait_for_event(
    events: &mut tokio::sync::broadcast::Receiver<ClientEvent>,
    want: &ClientEvent,
) {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.recv().await {
                Ok(e) if &e == want => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("events ended: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {want:?} in time"));
}

#[tokio::test]
async fn a_cut_subscriber_gets_every_number_once_in_order() {
    let server = TestServer::start_app(app(1000)).await;
    let proxy = Proxy::start(server.addr()).await;
    let subscriber = client_via(&proxy, &server).await;
    let mut events = subscriber.events();
    let mut sub = subscriber.subscribe("feed/1").await.expect("subscribes");
    let publisher = testing::connect(server.url()).await;
    let total = 300u64;
    let publishing = tokio::spawn(async move {
        for n in 1..=total {
            publisher.publish("feed/1", &n).await.expect("published");
            if n % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let mut got = Vec::new();
    let mut not_recovered = 0;
    while got.len() < total as usize {
        got.push(next(&mut sub).await.as_u64().expect("a number"));
        if got.len() % 75 == 0 && got.len() < total as usize {
            proxy.cut();
            // Each cut is a reconnect of its own: the next cut waits until this one has
            // reconnected (two cuts during one reconnect would test one recovery, not two).
            tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match events.recv().await {
                        Ok(ClientEvent::Connect { .. }) => return,
                        Ok(ClientEvent::NotRecovered { .. }) => not_recovered += 1,
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(e) => panic!("events ended: {e}"),
                    }
                }
            })
            .await
            .expect("a reconnect after the cut");
        }
    }
    publishing.await.expect("publisher");
    assert_eq!(got, (1..=total).collect::<Vec<_>>());
    // None of the three reconnects lost anything.
    while let Ok(e) = events.try_recv() {
        if let ClientEvent::NotRecovered { .. } = e {
            not_recovered += 1;
        }
    }
    assert_eq!(not_recovered, 0);
    assert_eq!(sub.not_recovered(), 0);
    assert_eq!(sub.position().map(|(offset, _)| offset), Some(total));
    server.stop().await;
}

#[tokio::test]
async fn a_gap_bigger_than_the_history_is_not_recovered_and_nothing_partial_is_sent() {
    let server = TestServer::start_app(app(5)).await;
    let proxy = Proxy::start(server.addr()).await;
    let subscriber = client_via(&proxy, &server).await;
    let mut events = subscriber.events();
    let mut sub = subscriber.subscribe("feed/2").await.expect("subscribes");
    let publisher = testing::connect(server.url()).await;
    publisher.publish("feed/2", &1).await.expect("published");
    assert_eq!(next(&mut sub).await, json!(1));
    // The network stays down while 20 (more than the 5 kept) are published.
    proxy.down.store(true, Ordering::SeqCst);
    proxy.cut();
    let unsubscribed = ClientEvent::Unsubscribe {
        channel: "feed/2".into(),
    };
    wait_for_event(&mut events, &unsubscribed).await;
    for n in 2..=21 {
        publisher.publish("feed/2", &n).await.expect("published");
    }
    proxy.down.store(false, Ordering::SeqCst);
    let not_recovered = ClientEvent::NotRecovered {
        channel: "feed/2".into(),
    };
    wait_for_event(&mut events, &not_recovered).await;
    publisher.publish("feed/2", &22).await.expect("published");
    // Nothing of the gap (17..=21 are still kept): the next one is live.
    assert_eq!(next(&mut sub).await, json!(22));
    assert_eq!(sub.not_recovered(), 1);
    assert_eq!(sub.position().map(|(offset, _)| offset), Some(22));
    server.stop().await;
}

#[tokio::test]
async fn the_ack_carries_the_top_and_handlers_read_history() {
    let server = TestServer::start_app(app(3)).await;
    let publisher = testing::connect(server.url()).await;
    for n in 1..=4 {
        publisher.publish("feed/3", &n).await.expect("published");
    }
    let top: Option<Value> = publisher
        .invoke("#subscribe", &json!({"channel": "feed/3"}))
        .await
        .expect("acked");
    let top = top.expect("with data");
    assert_eq!(top["offset"], 4);
    assert!(top.get("recovered").is_none());
    let epoch = top["epoch"].as_str().expect("an epoch").to_owned();
    let exchange = server.handle().exchange();
    let since = Position {
        offset: 2,
        epoch: epoch.clone(),
    };
    let answer = exchange
        .history("feed/3", Some(since))
        .await
        .expect("history");
    let kept: Vec<Value> = answer
        .publications
        .expect("recoverable")
        .iter()
        .map(|p| p.data().cloned().unwrap_or(Value::Null))
        .collect();
    assert_eq!(kept, [json!(3), json!(4)]);
    let too_old = Position {
        offset: 0,
        epoch: epoch.clone(),
    };
    assert!(exchange
        .history("feed/3", Some(too_old))
        .await
        .expect("history")
        .publications
        .is_none());
    assert!(
        exchange.history("other", None).await.is_err(),
        "no history declared"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_history_of_zero_publications_fails_at_startup() {
    let app = App::new().channel_contract(
        ChannelContract::new("feed/{id}").history(HistoryPolicy::new(0, Duration::from_secs(1))),
    );
    let error = testing::builder()
        .app(app)
        .bind()
        .await
        .expect_err("refused");
    assert!(
        error
            .to_string()
            .contains("keeps a history of 0 publications"),
        "{error}"
    );
    let app = App::new().channel_contract(
        ChannelContract::new("feed/{id}").history(HistoryPolicy::new(5, Duration::ZERO)),
    );
    let error = testing::builder()
        .app(app)
        .bind()
        .await
        .expect_err("refused");
    assert!(error.to_string().contains("less than a second"), "{error}");
}

// An engine that keeps no history (like a custom one written before history existed).
use common::PlainEngine as NoHistory;

#[tokio::test]
async fn an_engine_without_history_refuses_to_start_when_history_is_configured() {
    let mut config = sc_core::config::Config::default();
    config.history_size = 10;
    let error = testing::builder()
        .config(config)
        .broker_engine(NoHistory(Default::default()))
        .bind()
        .await
        .expect_err("refused");
    assert!(error.to_string().contains("SC_HISTORY_SIZE"), "{error}");
    let error = testing::builder()
        .app(app(10))
        .broker_engine(NoHistory(Default::default()))
        .bind()
        .await
        .expect_err("refused");
    assert!(
        error.to_string().contains("channel 'feed/{id}'")
            && error.to_string().contains("does not keep history"),
        "{error}"
    );
    // Without history the same engine starts.
    let server =
        TestServer::start(testing::builder().broker_engine(NoHistory(Default::default()))).await;
    server.stop().await;
}

#[tokio::test]
async fn a_replay_bigger_than_the_outbound_queue_is_not_recovered_instead_of_a_4100_loop() {
    let builder = testing::builder().app(app(1000)).outbound_queue_bytes(4096);
    let server = TestServer::start(builder).await;
    let proxy = Proxy::start(server.addr()).await;
    let subscriber = client_via(&proxy, &server).await;
    let mut events = subscriber.events();
    let mut sub = subscriber.subscribe("feed/4").await.expect("subscribes");
    let publisher = testing::connect(server.url()).await;
    publisher.publish("feed/4", &0).await.expect("published");
    assert_eq!(next(&mut sub).await, json!(0));
    proxy.down.store(true, Ordering::SeqCst);
    proxy.cut();
    let unsubscribed = ClientEvent::Unsubscribe {
        channel: "feed/4".into(),
    };
    wait_for_event(&mut events, &unsubscribed).await;
    // 100 publications of ~100 bytes: more than the 4 KiB queue takes at once.
    let padding = "x".repeat(100);
    for n in 1..=100 {
        publisher
            .publish("feed/4", &json!({ "n": n, "pad": padding }))
            .await
            .expect("published");
    }
    proxy.down.store(false, Ordering::SeqCst);
    let not_recovered = ClientEvent::NotRecovered {
        channel: "feed/4".into(),
    };
    wait_for_event(&mut events, &not_recovered).await;
    publisher.publish("feed/4", &101).await.expect("published");
    assert_eq!(next(&mut sub).await, json!(101));
    // One reconnect, not a loop of 4100 closes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut disconnects = 0;
    while let Ok(e) = events.try_recv() {
        if matches!(e, ClientEvent::Disconnect { .. }) {
            disconnects += 1;
        }
    }
    assert_eq!(disconnects, 0, "no disconnect after the resubscribe");
    server.stop().await;
}

#[tokio::test]
async fn a_duplicate_subscribe_answers_where_the_socket_is_not_a_fresh_top() {
    let server = TestServer::start_app(app(100)).await;
    let client = testing::connect(server.url()).await;
    let first: Option<Value> = client
        .invoke("#subscribe", &json!({"channel": "feed/5"}))
        .await
        .expect("acked");
    let first = first.expect("a position");
    assert_eq!(first["offset"], 0);
    let epoch = first["epoch"].clone();
    // Publications the socket already got; the repeated subscribe says so.
    let publisher = testing::connect(server.url()).await;
    for n in 1..=3 {
        publisher.publish("feed/5", &n).await.expect("published");
    }
    let again: Option<Value> = client
        .invoke(
            "#subscribe",
            &json!({"channel": "feed/5", "recover": {"offset": 0, "epoch": epoch}}),
        )
        .await
        .expect("acked");
    let again = again.expect("a position");
    assert_eq!(again["offset"], 3, "{again}");
    assert_eq!(again["epoch"], epoch);
    assert_eq!(again["recovered"], true);
    server.stop().await;
}

/// The events received so far: how many `NotRecovered`.
fn not_recovered_so_far(events: &mut tokio::sync::broadcast::Receiver<ClientEvent>) -> usize {
    let mut n = 0;
    while let Ok(e) = events.try_recv() {
        n += usize::from(matches!(e, ClientEvent::NotRecovered { .. }));
    }
    n
}

async fn subscribe_both(
    a: &Client,
    b: &Client,
    channel: &str,
) -> (sc_core::client::Subscription, sc_core::client::Subscription) {
    (
        a.subscribe(channel).await.expect("subscribes"),
        b.subscribe(channel).await.expect("subscribes"),
    )
}

#[tokio::test]
async fn a_quiet_channel_past_its_ttl_keeps_its_position_so_nobody_gets_a_false_gap() {
    let app = App::new().channel_contract(
        ChannelContract::new("quiet/{id}")
            .publish(sc_core::app::contract::Access::Anyone)
            .history(HistoryPolicy::new(10, Duration::from_secs(1))),
    );
    let server = TestServer::start_app(app).await;
    let proxy = Proxy::start(server.addr()).await;
    let away = client_via(&proxy, &server).await;
    let live = testing::connect(server.url()).await;
    let (mut away_events, mut live_events) = (away.events(), live.events());
    let (mut away_sub, mut live_sub) = subscribe_both(&away, &live, "quiet/1").await;
    let publisher = testing::connect(server.url()).await;
    publisher.publish("quiet/1", &1).await.expect("published");
    assert_eq!(next(&mut away_sub).await, json!(1));
    assert_eq!(next(&mut live_sub).await, json!(1));
    proxy.down.store(true, Ordering::SeqCst);
    proxy.cut();
    let unsubscribed = ClientEvent::Unsubscribe {
        channel: "quiet/1".into(),
    };
    wait_for_event(&mut away_events, &unsubscribed).await;
    // Past the ttl and the store's sweep: the history is gone, the position is not.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let kept = server
        .handle()
        .exchange()
        .history("quiet/1", None)
        .await
        .expect("history");
    assert_eq!(kept.top.offset, 1, "the position outlives the history");
    assert_eq!(kept.publications.map(|p| p.len()), Some(0), "nothing kept");
    // The one that was away saw everything: recovered, nothing missed.
    proxy.down.store(false, Ordering::SeqCst);
    let subscribed = ClientEvent::Subscribe {
        channel: "quiet/1".into(),
    };
    wait_for_event(&mut away_events, &subscribed).await;
    // The next publication continues the epoch: no "not recovered" for anyone.
    publisher.publish("quiet/1", &2).await.expect("published");
    assert_eq!(next(&mut away_sub).await, json!(2));
    assert_eq!(next(&mut live_sub).await, json!(2));
    assert_eq!(not_recovered_so_far(&mut away_events), 0);
    assert_eq!(not_recovered_so_far(&mut live_events), 0);
    assert_eq!(away_sub.position(), live_sub.position());
    assert_eq!(live_sub.position().map(|(offset, _)| offset), Some(2));
    server.stop().await;
}

#[tokio::test]
async fn a_channel_evicted_by_the_memory_cap_recovers_a_client_at_its_top_and_not_one_behind() {
    let builder = testing::builder()
        .app(app(1000))
        .history_max_bytes(64 * 1024);
    let server = TestServer::start(builder).await;
    let (proxy_top, proxy_behind) = (
        Proxy::start(server.addr()).await,
        Proxy::start(server.addr()).await,
    );
    let top = client_via(&proxy_top, &server).await;
    let behind = client_via(&proxy_behind, &server).await;
    let (mut top_events, mut behind_events) = (top.events(), behind.events());
    let (mut top_sub, mut behind_sub) = subscribe_both(&top, &behind, "feed/e").await;
    let publisher = testing::connect(server.url()).await;
    for n in 1..=2 {
        publisher.publish("feed/e", &n).await.expect("published");
        assert_eq!(next(&mut top_sub).await, json!(n));
        assert_eq!(next(&mut behind_sub).await, json!(n));
    }
    proxy_behind.down.store(true, Ordering::SeqCst);
    proxy_behind.cut();
    let unsubscribed = ClientEvent::Unsubscribe {
        channel: "feed/e".into(),
    };
    wait_for_event(&mut behind_events, &unsubscribed).await;
    publisher.publish("feed/e", &3).await.expect("published");
    assert_eq!(next(&mut top_sub).await, json!(3));
    // 100 other channels of 1 KB each pass the 64 KiB cap: feed/e, the least recently
    // published, goes first.
    let kilobyte = "k".repeat(1000);
    for i in 0..100 {
        publisher
            .publish(&format!("feed/other-{i}"), &kilobyte)
            .await
            .expect("published");
    }
    let exchange = server.handle().exchange();
    let evicted = exchange.history("feed/e", None).await.expect("history");
    assert_eq!(evicted.top.offset, 3, "its position stays");
    assert_eq!(evicted.publications.map(|p| p.len()), Some(0), "evicted");
    // At the top: recovered, nothing missed.
    proxy_top.cut();
    wait_for_event(&mut top_events, &unsubscribed).await;
    let subscribed = ClientEvent::Subscribe {
        channel: "feed/e".into(),
    };
    wait_for_event(&mut top_events, &subscribed).await;
    // Behind it (it saw 2, 3 is gone): not recovered, and nothing partial.
    proxy_behind.down.store(false, Ordering::SeqCst);
    let not_recovered = ClientEvent::NotRecovered {
        channel: "feed/e".into(),
    };
    wait_for_event(&mut behind_events, &not_recovered).await;
    publisher.publish("feed/e", &4).await.expect("published");
    assert_eq!(next(&mut top_sub).await, json!(4));
    assert_eq!(next(&mut behind_sub).await, json!(4));
    assert_eq!(not_recovered_so_far(&mut top_events), 0);
    assert_eq!(top_sub.not_recovered(), 0);
    assert_eq!(behind_sub.not_recovered(), 1);
    server.stop().await;
}

/// `sc dev` swaps the server process; with the in-process engine the history goes with it.
/// What a swap does to a recovering client, without `sc dev`'s build: a new server on the same
/// port.
#[tokio::test]
async fn a_restart_on_the_same_port_is_not_recovered_not_a_silent_gap() {
    let first = TestServer::start_app(app(100)).await;
    let port = first.addr().port();
    let subscriber = testing::connect(first.url()).await;
    let mut events = subscriber.events();
    let mut sub = subscriber.subscribe("feed/swap").await.expect("subscribes");
    let publisher = testing::connect(first.url()).await;
    publisher.publish("feed/swap", &1).await.expect("published");
    assert_eq!(next(&mut sub).await, json!(1));
    let old_epoch = sub.position().map(|(_, epoch)| epoch);
    first.stop().await;
    let mut second = None;
    for _ in 0..50 {
        match testing::builder().app(app(100)).port(port).bind().await {
            Ok(bound) => {
                second = Some(bound);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let second = second.expect("the port is free again");
    let serving = tokio::spawn(second.serve_until(std::future::pending::<()>()));
    let not_recovered = ClientEvent::NotRecovered {
        channel: "feed/swap".into(),
    };
    wait_for_event(&mut events, &not_recovered).await;
    let url = format!("ws://127.0.0.1:{port}/socketcluster/");
    let publisher = testing::connect(url).await;
    publisher.publish("feed/swap", &2).await.expect("published");
    assert_eq!(next(&mut sub).await, json!(2));
    assert_eq!(sub.not_recovered(), 1);
    let new_epoch = sub.position().map(|(_, epoch)| epoch);
    assert_ne!(new_epoch, old_epoch, "the new process has its own epochs");
    assert_eq!(sub.position().map(|(offset, _)| offset), Some(1));
    serving.abort();
}
