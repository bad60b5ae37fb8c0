//! Presence end to end, in process: our server on 127.0.0.1, Rust clients as subscribers (one
//! behind a proxy whose TCP connections can be cut), `#presence` queries and the exchange's
//! view agreeing, leaves on unsubscribe, close and a cut connection, and batched join/leave
//! events.

mod common;
// The process tests' helpers (tests/support), shared with these.
#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use common::Proxy;

use sc_core::app::contract::{ChannelContract, PresencePolicy};
use sc_core::client::{Client, InvokeError};
use sc_core::prelude::*;
use sc_core::testing::{self, TestServer};
use serde_json::{json, Value};

async fn login(socket: Socket, Json(user): Json<String>) -> Result<(), ScError> {
    socket.set_auth_token(&json!({ "sub": user })).await?;
    Ok(())
}

async fn set_info(socket: Socket, Json(info): Json<Value>) -> Result<(), ScError> {
    socket.set_presence_info(&info)?;
    Ok(())
}

fn app() -> App {
    App::new()
        .event("login", login)
        .event("info", set_info)
        .channel_contract(ChannelContract::new("rooms/{id}").presence(PresencePolicy::new()))
        .channel_contract(
            ChannelContract::new("live/{id}").presence(PresencePolicy::new().join_leave(true)),
        )
}

async fn ask(client: &Client, channel: &str) -> Result<Value, InvokeError> {
    client
        .invoke_value("#presence", Some(json!({ "channel": channel })))
        .await
        .map(|v| v.unwrap_or(Value::Null))
}

async fn count(client: &Client, channel: &str) -> u64 {
    support::presence_count(client, channel).await
}

async fn count_becomes(client: &Client, channel: &str, want: u64, within: Duration) {
    support::presence_count_becomes(client, channel, want, within).await;
}

fn error_of(e: InvokeError) -> ScError {
    match e {
        InvokeError::Remote(e) => e,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[tokio::test]
async fn subscribers_are_counted_by_socket_and_user_and_the_exchange_agrees() {
    let server = TestServer::start_app(app()).await;
    let ann1 = server.client().await;
    let ann2 = server.client().await;
    let guest = server.client().await;
    for (c, user) in [(&ann1, Some("ann")), (&ann2, Some("ann")), (&guest, None)] {
        if let Some(user) = user {
            let () = c.invoke("login", user).await.expect("logged in");
        }
    }
    let () = ann1
        .invoke("info", &json!({"nick": "Ann"}))
        .await
        .expect("info set");
    let _s1 = ann1.subscribe("rooms/1").await.expect("subscribed");
    let _s2 = ann2.subscribe("rooms/1").await.expect("subscribed");
    let _s3 = guest.subscribe("rooms/1").await.expect("subscribed");

    let answer = ask(&guest, "rooms/1").await.expect("answered");
    assert_eq!(answer["count"], 3, "{answer}");
    assert_eq!(answer["users"], 1, "{answer}");
    let entries = answer["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 3);
    assert!(answer.get("cut").is_none(), "{answer}");
    let ann1_entry = entries
        .iter()
        .find(|e| e["socket"] == json!(ann1.id().expect("an id")))
        .expect("ann1 listed");
    assert_eq!(ann1_entry["user"], "ann");
    assert_eq!(ann1_entry["info"], json!({"nick": "Ann"}));
    let guest_entry = entries
        .iter()
        .find(|e| e["socket"] == json!(guest.id().expect("an id")))
        .expect("the guest listed");
    assert_eq!(guest_entry["user"], Value::Null);

    // The Rust client's own API says the same.
    let typed = ann2.presence("rooms/1").await.expect("answered");
    assert_eq!((typed.count, typed.users, typed.cut), (3, 1, false));
    assert_eq!(typed.entries.len(), 3);

    let exchange = server.handle().exchange();
    let stats = exchange.presence_stats("rooms/1").await.expect("stats");
    assert_eq!((stats.sockets, stats.users), (3, 1));
    assert_eq!(
        exchange.presence("rooms/1").await.expect("entries").len(),
        3
    );
    // Presence is per channel.
    assert!(exchange
        .presence("rooms/2")
        .await
        .expect("entries")
        .is_empty());
}

#[tokio::test]
async fn only_subscribers_may_ask_and_a_channel_without_presence_says_so() {
    let server = TestServer::start_app(app()).await;
    let member = server.client().await;
    let stranger = server.client().await;
    let _s = member.subscribe("rooms/1").await.expect("subscribed");
    let _t = stranger.subscribe("plain").await.expect("subscribed");

    let refused = error_of(ask(&stranger, "rooms/1").await.expect_err("refused"));
    assert_eq!(refused.name(), "InvalidActionError");
    assert!(
        refused.message().contains("only its subscribers may"),
        "{refused:?}"
    );
    let none = error_of(ask(&stranger, "plain").await.expect_err("refused"));
    assert_eq!(none.name(), "InvalidActionError");
    assert!(none.message().contains("has no presence"), "{none:?}");
    for bad in [json!("rooms/1"), json!({"channel": 5}), Value::Null] {
        let e = error_of(
            stranger
                .invoke_value("#presence", Some(bad.clone()))
                .await
                .expect_err("malformed"),
        );
        assert_eq!(e.name(), "InvalidActionError", "{bad}");
    }
    assert!(server.handle().exchange().presence("plain").await.is_err());
    // The refused socket is still fine.
    assert_eq!(count(&member, "rooms/1").await, 1);
}

#[tokio::test]
async fn unsubscribe_close_and_a_cut_connection_leave_presence() {
    let server = TestServer::start_app(app()).await;
    let proxy = Proxy::start(server.addr()).await;
    let watcher = server.client().await;
    let _w = watcher.subscribe("rooms/1").await.expect("subscribed");
    let leaver = server.client().await;
    let closer = server.client().await;
    let cut = testing::connect(proxy.url_of(&server)).await;
    let leaving = leaver.subscribe("rooms/1").await.expect("subscribed");
    let _c = closer.subscribe("rooms/1").await.expect("subscribed");
    let _x = cut.subscribe("rooms/1").await.expect("subscribed");
    assert_eq!(count(&watcher, "rooms/1").await, 4);

    leaving.unsubscribe();
    count_becomes(&watcher, "rooms/1", 3, Duration::from_secs(2)).await;
    closer.disconnect().await;
    count_becomes(&watcher, "rooms/1", 2, Duration::from_secs(2)).await;
    // No close frame: the server sees the TCP connection end.
    proxy.down.store(true, std::sync::atomic::Ordering::SeqCst);
    proxy.cut();
    count_becomes(&watcher, "rooms/1", 1, Duration::from_secs(2)).await;
    let entries = server
        .handle()
        .exchange()
        .presence("rooms/1")
        .await
        .expect("entries");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].socket, watcher.id().expect("an id"));
}

#[tokio::test]
async fn joins_and_leaves_arrive_batched() {
    let server = TestServer::start_app(app()).await;
    let watcher = server.client().await;
    let mut events = watcher.receiver("#presence");
    let _w = watcher.subscribe("live/1").await.expect("subscribed");
    let own: Value = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("its own join in time")
        .expect("an event")
        .expect("data");
    assert_eq!(own["channel"], "live/1");
    assert_eq!(own["joins"][0]["socket"], json!(watcher.id().expect("id")));

    // The Rust client reports events on its channels as ClientEvent::Presence.
    let mut client_events = watcher.events();
    let n = 30;
    let mut others = Vec::new();
    for _ in 0..n {
        others.push(server.client().await);
    }
    let subscribing = others.iter().map(|c| c.subscribe("live/1"));
    let subs = futures_util::future::join_all(subscribing).await;
    assert!(subs.iter().all(Result::is_ok));

    // Every join arrives, in fewer events than joins.
    let joined: std::collections::HashSet<String> =
        others.iter().map(|c| c.id().expect("an id")).collect();
    let within = Duration::from_secs(5);
    let received = support::await_presence(&mut events, "joins", &joined, within).await;
    assert!(received < n, "{received} events for {n} joins");
    let mut reported = std::collections::HashSet::new();
    while reported.len() < n {
        match tokio::time::timeout(Duration::from_secs(5), client_events.recv()).await {
            Ok(Ok(sc_core::client::ClientEvent::Presence { channel, joins, .. })) => {
                assert_eq!(channel, "live/1");
                reported.extend(joins.into_iter().map(|j| j.socket));
            }
            Ok(Ok(_)) => {}
            other => panic!("no ClientEvent::Presence: {other:?}"),
        }
    }
    assert_eq!(reported, joined);

    let leaving: std::collections::HashSet<String> = others[..10]
        .iter()
        .map(|c| c.id().expect("an id"))
        .collect();
    for c in &others[..10] {
        c.disconnect().await;
    }
    support::await_presence(&mut events, "leaves", &leaving, within).await;
    assert_eq!(count(&watcher, "live/1").await, (n - 10 + 1) as u64);
}

#[tokio::test]
async fn an_engine_without_presence_refuses_to_start() {
    let error = testing::builder()
        .app(app())
        .broker_engine(common::PlainEngine::default())
        .bind()
        .await
        .expect_err("refused");
    assert!(
        error.to_string().contains("does not keep presence"),
        "{error}"
    );
}

#[tokio::test]
async fn a_flood_of_presence_queries_is_rate_limited() {
    let server = TestServer::start_app(app()).await;
    let member = server.client().await;
    let _s = member.subscribe("rooms/1").await.expect("subscribed");
    // 60 at once: bursts of 20, then 10/s.
    let answers = futures_util::future::join_all((0..60).map(|_| ask(&member, "rooms/1"))).await;
    let mut limited = 0;
    for answer in answers {
        match answer {
            Ok(answer) => assert_eq!(answer["count"], 1),
            Err(e) => {
                assert_eq!(error_of(e).name(), "RateLimitError");
                limited += 1;
            }
        }
    }
    assert!(limited >= 10, "{limited} refused");
    // The socket is still served.
    assert!(member.subscribe("rooms/2").await.is_ok());
}

/// Every `#presence` event that arrives within `for_`.
async fn events_within(events: &mut sc_core::client::EventReceiver, for_: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + for_;
    let mut got = Vec::new();
    while let Ok(Some(Some(event))) = tokio::time::timeout_at(deadline, events.recv()).await {
        got.push(event);
    }
    got
}

/// Whether `socket` is in the `list` of any of `events`.
fn listed(events: &[Value], list: &str, socket: &str) -> bool {
    events.iter().any(|e| {
        e[list]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["socket"] == socket))
    })
}

/// Within one window: a socket that unsubscribes and subscribes again is still there (a join,
/// never also a leave, which a client applying leaves last would take as gone); one whose
/// entry changed (`set_presence_info`) and that then leaves gets its leave (its first join was
/// announced in an earlier window).
#[tokio::test]
async fn changes_within_one_window_end_in_the_true_state() {
    let server = TestServer::start_app(app()).await;
    let watcher = server.client().await;
    let mut events = watcher.receiver("#presence");
    let _w = watcher.subscribe("live/2").await.expect("subscribed");
    let other = server.client().await;
    let id = other.id().expect("an id");
    let within = Duration::from_secs(5);
    let first = other.subscribe("live/2").await.expect("subscribed");
    let only = std::collections::HashSet::from([id.clone()]);
    support::await_presence(&mut events, "joins", &only, within).await;

    first.unsubscribe();
    let _again = other.subscribe("live/2").await.expect("subscribed again");
    let seen = events_within(&mut events, Duration::from_millis(800)).await;
    assert!(
        listed(&seen, "joins", &id),
        "no join after coming back: {seen:?}"
    );
    assert!(
        !listed(&seen, "leaves", &id),
        "a leave for a socket that is there: {seen:?}"
    );
    assert_eq!(count(&watcher, "live/2").await, 2);

    let () = other
        .invoke("info", &json!({"nick": "O"}))
        .await
        .expect("info set");
    other.unsubscribe("live/2");
    let seen = events_within(&mut events, Duration::from_millis(800)).await;
    assert!(
        listed(&seen, "leaves", &id),
        "no leave after info and unsubscribe: {seen:?}"
    );
    assert!(
        !listed(&seen, "joins", &id),
        "a join for a socket that left: {seen:?}"
    );
    count_becomes(&watcher, "live/2", 1, within).await;
}

/// Presence info over `presence_max_info_bytes` (1 KiB by default) is refused with a clear error
/// and the entry keeps what it had; many changes in a row end with the newest.
#[tokio::test]
async fn presence_info_is_bounded_and_the_newest_wins() {
    let server = TestServer::start_app(app()).await;
    let c = server.client().await;
    let _s = c.subscribe("live/4").await.expect("subscribed");
    let () = c.invoke("info", &json!({"n": 0})).await.expect("info set");
    let big = json!({ "blob": "x".repeat(2000) });
    let e = error_of(c.invoke::<_, ()>("info", &big).await.expect_err("refused"));
    assert_eq!(e.name(), "InvalidArgumentsError");
    assert!(
        e.message().contains("presence_max_info_bytes (1024)"),
        "{}",
        e.message()
    );
    for n in 1..=20 {
        let () = c
            .invoke("info", &json!({ "n": n }))
            .await
            .expect("info set");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let answer = ask(&c, "live/4").await.expect("an answer");
        if answer["entries"][0]["info"] == json!({"n": 20}) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "info is {}, not the newest",
            answer["entries"][0]["info"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The in-process engine, but every presence join takes 30 s (an engine that stopped answering
/// and is not yet known to be down).
#[derive(Default)]
struct SlowJoins(sc_core::broker::LocalBroker);

impl sc_core::broker::BrokerEngine for SlowJoins {
    common::forward_required_engine_methods!();
    fn supports_presence(&self) -> bool {
        true
    }
    fn presence_join(
        &self,
        channel: &str,
        entry: sc_core::broker::PresenceEntry,
        join_leave: bool,
    ) -> sc_core::broker::BoxFuture<'_, Result<(), sc_core::broker::BrokerError>> {
        let channel = channel.to_owned();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            self.0.presence_join(&channel, entry, join_leave).await
        })
    }
}

/// A `#subscribe` ack on a channel with presence waits for the engine only so long (1 s): an
/// engine that does not answer never holds it up to the client's ack timeout.
#[tokio::test]
async fn a_subscribe_ack_does_not_wait_for_an_engine_that_does_not_answer() {
    let server = TestServer::start(
        testing::builder()
            .app(app())
            .broker_engine(SlowJoins::default()),
    )
    .await;
    let c = server.client().await;
    for channel in ["rooms/9", "live/9"] {
        let subscribed = tokio::time::timeout(Duration::from_secs(4), c.subscribe(channel)).await;
        assert!(
            matches!(subscribed, Ok(Ok(_))),
            "{channel}: no ack within 4 s: {subscribed:?}"
        );
    }
}
