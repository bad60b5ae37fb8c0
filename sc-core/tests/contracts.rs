//! Channel contracts, end to end with the Rust client: what a declared channel allows a client is
//! enforced for every `#subscribe` and `#publish`, and a refused action never reaches a
//! subscriber (one listens in every test). Declared with the macro and by hand (`App`).

#![cfg(all(feature = "macros", feature = "testing"))]

use std::time::Duration;

use sc_core::app::contract::{Access, ChannelContract};
use sc_core::client::{Client, InvokeError, Subscription};
use sc_core::prelude::*;
use sc_core::testing::{self, TestServer};
use serde_json::{json, Value};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChatMsg {
    from: String,
    text: String,
}

#[derive(Deserialize)]
struct Claims {
    name: String,
}

/// Typed, no options: only the server publishes.
#[channel("news/{id}", message = ChatMsg)]
struct News {
    id: u64,
}

/// Logged-in clients publish ChatMsgs.
#[channel("rooms/{id}", message = ChatMsg, publish = authenticated)]
struct Room {
    id: u64,
}

/// Anyone publishes, but the guard sets `from` from the token (and refuses guests).
#[channel("lobby/{id}", message = ChatMsg, publish = stamp_sender, subscribe = authenticated)]
struct Lobby {
    id: u64,
}

/// Logged-in clients publish, under their own name only.
#[channel("signed/{id}", message = ChatMsg, publish = own_name_only)]
struct Signed {
    id: u64,
}

async fn own_name_only(Auth(me): Auth<Claims>, Json(msg): Json<ChatMsg>) -> Result<(), Block> {
    if msg.from == me.name {
        Ok(())
    } else {
        Err(Block::new(ScError::new(
            "ForgedSenderError",
            format!("you are {}, not {}", me.name, msg.from),
        )))
    }
}

/// Only the named user subscribes.
#[channel("inbox/{user}", message = ChatMsg, subscribe = owner_only)]
struct Inbox {
    user: String,
}

async fn stamp_sender(
    Auth(me): Auth<Claims>,
    Json(msg): Json<ChatMsg>,
) -> Result<Json<ChatMsg>, Block> {
    Ok(Json(ChatMsg {
        from: me.name,
        ..msg
    }))
}

async fn owner_only(Auth(me): Auth<Claims>, Channel(inbox): Channel<Inbox>) -> Result<(), Block> {
    if me.name == inbox.user {
        Ok(())
    } else {
        Err(Block::new(ScError::new(
            "NotYourInbox",
            "this inbox is not yours",
        )))
    }
}

#[event("login")]
async fn login(socket: Socket, Json(name): Json<String>) -> Result<(), ScError> {
    socket.set_auth_token(&json!({ "name": name })).await?;
    Ok(())
}

async fn server() -> TestServer {
    TestServer::start(
        testing::builder().handlers(handlers![News, Room, Lobby, Inbox, Signed, login]),
    )
    .await
}

async fn logged_in(server: &TestServer, name: &str) -> Client {
    let c = server.client().await;
    c.invoke::<_, Value>("login", &name).await.expect("login");
    c
}

fn refused(e: InvokeError) -> (String, String) {
    match e {
        InvokeError::Remote(e) => (e.name().to_owned(), e.message().to_owned()),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

async fn nothing_arrives(sub: &mut Subscription) {
    if let Ok(Some(v)) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
        panic!("a refused publication was delivered: {v}");
    }
}

fn msg(from: &str, text: &str) -> Value {
    json!({ "from": from, "text": text })
}

#[tokio::test]
async fn a_typed_channel_takes_no_client_publish_by_default() {
    let server = server().await;
    let listener = logged_in(&server, "ann").await;
    let mut sub = listener
        .subscribe("news/1")
        .await
        .expect("anyone subscribes");
    let guest = server.client().await;
    let (name, message) = refused(
        guest
            .publish("news/1", &msg("alice", "forged"))
            .await
            .expect_err("refused"),
    );
    assert_eq!(name, "PublishRefusedError");
    assert_eq!(
        message,
        "Client publish to channel 'news/1' refused: only the server publishes on news/{id} (publish = server)"
    );
    // A logged-in member is refused too; the server's own publish goes through.
    listener
        .publish("news/1", &msg("ann", "mine"))
        .await
        .expect_err("members are clients too");
    nothing_arrives(&mut sub).await;
    let exchange = server.handle().exchange();
    exchange
        .publish(
            &News { id: 1 },
            &ChatMsg {
                from: "server".into(),
                text: "hi".into(),
            },
        )
        .await
        .expect("server publishes");
    assert_eq!(sub.recv().await, Some(msg("server", "hi")));
}

#[tokio::test]
async fn publish_authenticated_refuses_guests_and_ill_typed_messages() {
    let server = server().await;
    let member = logged_in(&server, "ann").await;
    let mut sub = member.subscribe("rooms/7").await.expect("subscribes");

    let guest = server.client().await;
    let (name, message) = refused(
        guest
            .publish("rooms/7", &msg("x", "y"))
            .await
            .expect_err("guest"),
    );
    assert_eq!(name, "PublishRefusedError");
    assert!(
        message.ends_with("rooms/{id} requires an authenticated socket (publish = authenticated)"),
        "{message}"
    );

    for bad in [
        json!({"not": "a ChatMsg"}),
        json!("plain text"),
        json!(null),
    ] {
        let (name, message) = refused(
            member
                .publish("rooms/7", &bad)
                .await
                .expect_err("ill-typed"),
        );
        assert_eq!(name, "InvalidArgumentsError", "{bad}");
        assert!(
            message.starts_with(
                "Client publish to channel 'rooms/7' refused: the message is not a ChatMsg: "
            ),
            "{message}"
        );
    }
    nothing_arrives(&mut sub).await;

    member
        .publish("rooms/7", &msg("ann", "hello"))
        .await
        .expect("allowed");
    assert_eq!(sub.recv().await, Some(msg("ann", "hello")));
    nothing_arrives(&mut sub).await; // exactly once
}

#[tokio::test]
async fn a_publish_guard_rewrites_what_subscribers_receive() {
    let server = server().await;
    let ann = logged_in(&server, "ann").await;
    let mut sub = ann.subscribe("lobby/1").await.expect("subscribes");
    let bob = logged_in(&server, "bob").await;
    bob.publish("lobby/1", &msg("ann", "wire me $500"))
        .await
        .expect("bob may publish");
    assert_eq!(sub.recv().await, Some(msg("bob", "wire me $500")));

    // The guard's extractors refuse a guest (and subscribe = authenticated keeps guests out).
    let guest = server.client().await;
    let (name, _) = refused(
        guest
            .publish("lobby/1", &msg("ann", "x"))
            .await
            .expect_err("guest"),
    );
    assert_eq!(name, "AuthError");
    let (name, message) = refused(guest.subscribe("lobby/1").await.expect_err("guest"));
    assert_eq!(name, "SubscribeRefusedError");
    assert_eq!(
        message,
        "Subscription to channel 'lobby/1' refused: lobby/{id} requires an authenticated socket (subscribe = authenticated)"
    );
    nothing_arrives(&mut sub).await;
}

#[tokio::test]
async fn a_publish_guard_refuses_a_forged_sender() {
    let server = server().await;
    let ann = logged_in(&server, "ann").await;
    let mut sub = ann.subscribe("signed/1").await.expect("subscribes");
    let bob = logged_in(&server, "bob").await;
    let (name, message) = refused(
        bob.publish("signed/1", &msg("ann", "wire me $500"))
            .await
            .expect_err("forged"),
    );
    assert_eq!(
        (name.as_str(), message.as_str()),
        ("ForgedSenderError", "you are bob, not ann")
    );
    nothing_arrives(&mut sub).await;
    bob.publish("signed/1", &msg("bob", "hi"))
        .await
        .expect("his own name");
    assert_eq!(sub.recv().await, Some(msg("bob", "hi")));
}

#[tokio::test]
async fn a_subscribe_guard_decides_per_channel() {
    let server = server().await;
    let ann = logged_in(&server, "ann").await;
    let bob = logged_in(&server, "bob").await;
    let _inbox = ann.subscribe("inbox/ann").await.expect("her own inbox");
    let (name, message) = refused(bob.subscribe("inbox/ann").await.expect_err("not his"));
    assert_eq!(
        (name.as_str(), message.as_str()),
        ("NotYourInbox", "this inbox is not yours")
    );
    // On the server: ann holds her inbox, bob holds nothing.
    let on_server = |c: &Client| {
        let id = c.id().expect("connected");
        server
            .handle()
            .client(&id)
            .expect("the server knows the socket")
    };
    assert!(on_server(&ann).is_subscribed("inbox/ann"));
    assert!(on_server(&bob).subscriptions().is_empty());
}

#[tokio::test]
async fn channel_names_are_bounded() {
    let server = TestServer::start(
        testing::builder()
            .max_channel_name(64)
            .handlers(handlers![News, login]),
    )
    .await;
    let c = server.client().await;
    let mut sub = c.subscribe("ok").await.expect("short name");
    let long = "x".repeat(65);
    let expected =
        "Channel name is 65 bytes long; the server accepts at most 64 (max_channel_name)";
    let (name, message) = refused(c.subscribe(&long).await.expect_err("too long"));
    assert_eq!(
        (name.as_str(), message.as_str()),
        ("InvalidActionError", expected)
    );
    let (name, message) = refused(c.publish(&long, &1).await.expect_err("too long"));
    assert_eq!(
        (name.as_str(), message.as_str()),
        ("InvalidActionError", expected)
    );
    let err = c
        .invoke_value("#unsubscribe", Some(json!(long)))
        .await
        .expect_err("too long");
    assert_eq!(refused(err).1, expected);
    c.publish("ok", &1)
        .await
        .expect("undeclared names: as before");
    assert_eq!(sub.recv().await, Some(json!(1)));
}

#[tokio::test]
async fn contracts_by_hand_and_undeclared_names() {
    async fn only_short(Json(text): Json<String>) -> Result<(), Block> {
        if text.len() <= 5 {
            Ok(())
        } else {
            Err(Block::new(ScError::invalid_arguments("too long")))
        }
    }
    let app = App::new()
        .channel_contract(
            ChannelContract::new("notes/{id}")
                .message::<String>()
                .publish(Access::guard(only_short)),
        )
        .channel("alerts");
    let server = TestServer::start(
        testing::builder()
            .allow_client_publish_undeclared(false)
            .app(app),
    )
    .await;
    let c = server.client().await;
    let mut notes = c.subscribe("notes/1").await.expect("subscribes");
    c.publish("notes/1", &"short").await.expect("allowed");
    assert_eq!(notes.recv().await, Some(json!("short")));
    let (name, message) = refused(
        c.publish("notes/1", &"much too long")
            .await
            .expect_err("guard"),
    );
    assert_eq!(
        (name.as_str(), message.as_str()),
        ("InvalidArgumentsError", "too long")
    );
    let (name, _) = refused(c.publish("notes/1", &5).await.expect_err("not a String"));
    assert_eq!(name, "InvalidArgumentsError");
    c.publish("alerts", &1)
        .await
        .expect_err("App::channel: publish = server");
    let (name, message) = refused(c.publish("elsewhere", &1).await.expect_err("undeclared"));
    assert_eq!(name, "PublishRefusedError");
    assert_eq!(
        message,
        "Client publish to channel 'elsewhere' refused: no channel pattern declares it, and allow_client_publish_undeclared is off"
    );
    nothing_arrives(&mut notes).await;
}
