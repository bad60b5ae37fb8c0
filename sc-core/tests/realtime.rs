//! End to end over real sockets: our server on 127.0.0.1 driven by the Rust client.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sc_core::client::{ClientEvent, ConnectionState, InvokeError, SubscribeOptions};
use sc_core::prelude::*;
use sc_core::testing::{self, TestServer};
use serde_json::{json, Value};

async fn echo(Raw(data): Raw) -> Option<Value> {
    data
}

async fn login(
    socket: Socket,
    Json(claims): Json<serde_json::Map<String, Value>>,
) -> Result<(), ScError> {
    socket.set_auth_token(&claims).await?;
    Ok(())
}

fn base_app() -> App {
    App::new().event("echo", echo).event("login", login)
}

fn remote(e: InvokeError) -> ScError {
    match e {
        InvokeError::Remote(e) => e,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[tokio::test]
async fn invoke_replies_data_nothing_errors_and_unhandled() {
    #[derive(Deserialize, Serialize)]
    struct Sum {
        a: i64,
        b: i64,
    }
    async fn add(Json(s): Json<Sum>) -> Json<i64> {
        Json(s.a + s.b)
    }
    async fn nothing() {}
    async fn fail() -> Result<(), ScError> {
        Err(ScError::new("CustomError", "boom").with("code", "E_X"))
    }
    let app = base_app()
        .event("add", add)
        .event("nothing", nothing)
        .event("fail", fail);
    let server = TestServer::start_app(app).await;
    let c = server.client().await;

    let v: Value = c
        .invoke("echo", &json!({"x": [1, 2], "z": "é"}))
        .await
        .expect("echo");
    assert_eq!(v, json!({"x": [1, 2], "z": "é"}));
    let n: i64 = c.invoke("add", &Sum { a: 2, b: 40 }).await.expect("add");
    assert_eq!(n, 42);
    assert_eq!(
        c.invoke_value("nothing", None).await.expect("nothing"),
        None
    );

    let e = remote(c.invoke::<_, Value>("fail", &()).await.expect_err("fail"));
    assert_eq!((e.name(), e.message()), ("CustomError", "boom"));
    assert_eq!(e.get("code"), Some(&json!("E_X")));

    let e = remote(
        c.invoke::<_, Value>("nope", &1)
            .await
            .expect_err("unhandled"),
    );
    assert_eq!(e.name(), "UnhandledEventError");
    assert_eq!(e.message(), "No handler for event 'nope'");

    let e = remote(
        c.invoke::<_, Value>("add", &json!({"a": "x"}))
            .await
            .expect_err("bad args"),
    );
    assert_eq!(e.name(), "InvalidArgumentsError");
    assert!(
        e.message().starts_with("Invalid data for event 'add'"),
        "{}",
        e.message()
    );
}

#[tokio::test]
async fn a_panicking_handler_answers_one_error_and_the_socket_goes_on() {
    async fn boom() -> Json<i32> {
        panic!("deliberate test panic")
    }
    let server = TestServer::start_app(base_app().event("boom", boom)).await;
    let c = server.client().await;
    let other = server.client().await;
    let e = remote(c.invoke::<_, Value>("boom", &()).await.expect_err("panic"));
    assert_eq!(e.name(), "ServerError");
    let v: Value = c
        .invoke("echo", &"still here")
        .await
        .expect("same socket works");
    assert_eq!(v, json!("still here"));
    let v: Value = other.invoke("echo", &1).await.expect("other socket works");
    assert_eq!(v, json!(1));
}

#[tokio::test]
async fn a_panicking_middleware_closes_its_socket_with_1011_and_nothing_is_left_behind() {
    async fn gate(Channel(ch): Channel<String>) -> Result<(), Block> {
        if ch == "trap" {
            panic!("deliberate test panic in middleware");
        }
        Ok(())
    }
    let app = base_app().middleware(MiddlewareKind::Subscribe, gate);
    let server = TestServer::start_app(app).await;
    let c = server.client().await;
    let other = server.client().await;
    let id = c.id().expect("connected");
    let mut events = c.events();
    // The subscribe never completes: the client resubscribes after each reconnect.
    let attempt = tokio::spawn({
        let c = c.clone();
        async move { c.subscribe("trap").await }
    });
    let closed = wait_for(&mut events, |e| matches!(e, ClientEvent::Disconnect { .. })).await;
    attempt.abort();
    c.disconnect().await;
    match closed {
        ClientEvent::Disconnect { code, .. } => assert_eq!(code, 1011),
        other => panic!("{other:?}"),
    }
    // The socket was cleaned up (not leaked with a stuck writer), others go on.
    let v: Value = other.invoke("echo", &1).await.expect("other socket works");
    assert_eq!(v, json!(1));
    eventually(|| server.handle().client(&id).is_none()).await;
}

#[tokio::test]
async fn transmits_are_handled_once_each_in_order() {
    #[derive(Clone, Default)]
    struct Seen(Arc<std::sync::Mutex<Vec<Value>>>);
    async fn note(State(seen): State<Seen>, Raw(data): Raw) {
        seen.0
            .lock()
            .expect("lock")
            .push(data.unwrap_or(Value::Null));
    }
    let seen = Seen::default();
    let server = TestServer::start_app(base_app().state(seen.clone()).event("note", note)).await;
    let c = server.client().await;
    for i in 0..50 {
        c.transmit("note", &i).expect("transmit");
    }
    // An invoke after the transmits is handled after them: the socket's inbound is ordered.
    let _: Value = c.invoke("echo", &0).await.expect("echo");
    let got = seen.0.lock().expect("lock").clone();
    assert_eq!(got, (0..50).map(|i| json!(i)).collect::<Vec<_>>());
}

#[tokio::test]
async fn publications_reach_every_subscriber_exactly_once() {
    let server = TestServer::start_app(base_app()).await;
    let a = server.client().await;
    let b = server.client().await;
    let c = server.client().await;
    let mut sa = a.subscribe("room").await.expect("a subscribes");
    let mut sb = b.subscribe("room").await.expect("b subscribes");
    let mut other = c.subscribe("other").await.expect("c subscribes");

    for i in 0..20 {
        a.publish("room", &json!({"n": i})).await.expect("publish");
    }
    b.transmit_publish("room", &"last")
        .expect("transmit publish");
    for sub in [&mut sa, &mut sb] {
        for i in 0..20 {
            assert_eq!(sub.recv().await, Some(json!({"n": i})));
        }
        assert_eq!(sub.recv().await, Some(json!("last")));
        assert_silent(sub, 150).await;
    }
    assert_silent(&mut other, 50).await;

    // Unsubscribing stops delivery to that client only.
    drop(sb);
    eventually(|| {
        server
            .handle()
            .clients()
            .iter()
            .all(|s| s.subscriptions().len() <= 1)
    })
    .await;
    a.publish("room", &"after").await.expect("publish");
    assert_eq!(sa.recv().await, Some(json!("after")));
    let b_socket = server
        .handle()
        .client(&b.id().expect("id"))
        .expect("b connected");
    assert!(!b_socket.is_subscribed("room"));
}

#[tokio::test]
async fn server_side_publish_and_subscription_see_client_and_server_messages() {
    let server = TestServer::start_app(base_app()).await;
    let exchange = server.handle().exchange();
    let mut server_sub = exchange.subscribe("feed").await.expect("server subscribes");
    assert!(exchange.is_subscribed("feed"));
    let c = server.client().await;
    let mut client_sub = c.subscribe("feed").await.expect("client subscribes");

    exchange
        .publish("feed", &json!({"from": "server"}))
        .await
        .expect("server publish");
    c.publish("feed", &json!({"from": "client"}))
        .await
        .expect("client publish");

    assert_eq!(client_sub.recv().await, Some(json!({"from": "server"})));
    assert_eq!(client_sub.recv().await, Some(json!({"from": "client"})));
    assert_eq!(server_sub.recv().await, Some(json!({"from": "server"})));
    assert_eq!(server_sub.recv().await, Some(json!({"from": "client"})));

    drop(server_sub);
    assert!(!exchange.is_subscribed("feed"));
}

#[tokio::test]
async fn typed_channel_targets_publish_their_message_type() {
    use std::borrow::Cow;
    #[derive(Serialize)]
    struct Msg {
        text: &'static str,
    }
    struct Room(u32);
    impl ChannelTarget<Msg> for Room {
        fn channel_name(&self) -> Cow<'_, str> {
            Cow::Owned(format!("rooms/{}", self.0))
        }
    }
    let server = TestServer::start(testing::builder()).await;
    let c = server.client().await;
    let mut sub = c.subscribe("rooms/7").await.expect("subscribe");
    server
        .handle()
        .exchange()
        .publish(&Room(7), &Msg { text: "typed" })
        .await
        .expect("publish");
    assert_eq!(sub.recv().await, Some(json!({"text": "typed"})));
}

#[tokio::test]
async fn middleware_blocks_rewrites_and_sees_subscribe_options() {
    async fn subscribe_gate(
        Channel(ch): Channel<String>,
        WaitForAuth(w): WaitForAuth,
        Raw(data): Raw,
    ) -> Result<(), Block> {
        if ch == "vip" {
            return Err(Block::new(
                ScError::new("SubDenied", "no")
                    .with("data", data.unwrap_or(Value::Null))
                    .with("wait", w),
            ));
        }
        Ok(())
    }
    async fn censor(
        Channel(ch): Channel<String>,
        socket: Socket,
    ) -> Result<Option<Json<Value>>, Block> {
        if ch != "news" {
            return Ok(None);
        }
        if socket.auth_token().is_some() {
            Ok(Some(Json(json!("for-members"))))
        } else {
            Err(Block::silent())
        }
    }
    async fn no_spam(Channel(ch): Channel<String>) -> Result<(), Block> {
        if ch == "spam" {
            return Err(Block::silent());
        }
        Ok(())
    }
    async fn invoke_gate(EventName(e): EventName) -> Result<(), Block> {
        if e == "secret" {
            return Err(Block::silent());
        }
        Ok(())
    }
    let app = base_app()
        .event("secret", echo)
        .middleware(MiddlewareKind::Subscribe, subscribe_gate)
        .middleware(MiddlewareKind::PublishOut, censor)
        .middleware(MiddlewareKind::PublishIn, no_spam)
        .middleware(MiddlewareKind::Invoke, invoke_gate);
    let server = TestServer::start_app(app).await;
    let member = server.client().await;
    let _: Value = member
        .invoke("login", &json!({"user": "m"}))
        .await
        .expect("login");
    let guest = server.client().await;

    let err = remote(
        guest
            .subscribe_with(
                "vip",
                SubscribeOptions {
                    data: Some(json!({"hint": 1})),
                    wait_for_auth: false,
                    priority: 0,
                },
            )
            .await
            .expect_err("blocked"),
    );
    assert_eq!((err.name(), err.message()), ("SubDenied", "no"));
    assert_eq!(err.get("data"), Some(&json!({"hint": 1})));

    let mut m = member.subscribe("news").await.expect("member subscribes");
    let mut g = guest.subscribe("news").await.expect("guest subscribes");
    server
        .handle()
        .exchange()
        .publish("news", &"original")
        .await
        .expect("publish");
    assert_eq!(m.recv().await, Some(json!("for-members")));
    assert_silent(&mut g, 150).await;

    let err = remote(
        guest
            .publish("spam", &1)
            .await
            .expect_err("publishIn blocks"),
    );
    assert_eq!(err.name(), "SilentMiddlewareBlockedError");
    assert_eq!(
        err.message(),
        "The publishIn AGAction was blocked by inbound middleware"
    );

    let err = remote(
        guest
            .invoke::<_, Value>("secret", &1)
            .await
            .expect_err("invoke blocked"),
    );
    assert_eq!(
        err.message(),
        "The invoke AGAction was blocked by inbound middleware"
    );
    assert_eq!(err.get("type"), Some(&json!("inbound")));
}

#[tokio::test]
async fn login_token_survives_reconnect_and_logout_removes_it() {
    async fn whoami(MaybeAuth(claims): MaybeAuth<Value>) -> Json<Value> {
        Json(claims.unwrap_or(Value::Null))
    }
    async fn logout(socket: Socket) {
        socket.deauthenticate();
    }
    let server = TestServer::start(
        testing::builder()
            .auth_default_expiry(120)
            .app(base_app().event("whoami", whoami).event("logout", logout)),
    )
    .await;
    let c = server.client().await;
    let mut events = c.events();
    let _: Value = c
        .invoke("login", &json!({"user": "ann"}))
        .await
        .expect("login");
    wait_for(&mut events, |e| {
        matches!(e, ClientEvent::Authenticate { .. })
    })
    .await;
    let claims = c.auth_claims().expect("claims");
    assert_eq!(claims["user"], json!("ann"));
    let (iat, exp) = (
        claims["iat"].as_i64().expect("iat"),
        claims["exp"].as_i64().expect("exp"),
    );
    assert_eq!(exp - iat, 120);

    c.reconnect();
    match wait_for(&mut events, |e| matches!(e, ClientEvent::Connect { .. })).await {
        ClientEvent::Connect {
            is_authenticated,
            auth_error,
            ..
        } => {
            assert!(is_authenticated);
            assert!(auth_error.is_none());
        }
        _ => unreachable!(),
    }
    let who: Value = c.invoke("whoami", &()).await.expect("whoami");
    assert_eq!(who["user"], json!("ann"));

    let _: Value = c
        .invoke_value("logout", None)
        .await
        .map(|_| Value::Null)
        .expect("logout");
    wait_for(&mut events, |e| matches!(e, ClientEvent::Deauthenticate)).await;
    assert!(c.auth_token().is_none());
    let who: Value = c.invoke("whoami", &()).await.expect("whoami");
    assert_eq!(who, Value::Null);
}

/// The server's view of a token through its life: set, used, expired mid-session (the next
/// action runs without it and the client is told to drop it), and set again then removed.
#[tokio::test]
async fn a_token_that_expires_mid_session_is_dropped_at_the_next_action() {
    async fn short_login(socket: Socket) -> Result<(), ScError> {
        let options = AuthTokenOptions {
            expires_in: Some(1),
            ..Default::default()
        };
        socket
            .set_auth_token_with(&json!({"user": "bo"}), options)
            .await?;
        Ok(())
    }
    async fn whoami(socket: Socket, MaybeAuth(claims): MaybeAuth<Value>) -> Json<Value> {
        Json(json!({
            "user": claims.and_then(|c| c.get("user").cloned()),
            "authenticated": socket.is_authenticated(),
            "token": socket.auth_token().is_some(),
        }))
    }
    async fn logout(socket: Socket) {
        socket.deauthenticate();
    }
    let server = TestServer::start_app(
        base_app()
            .event("short_login", short_login)
            .event("whoami", whoami)
            .event("logout", logout),
    )
    .await;
    let c = server.client().await;
    let mut events = c.events();
    let anonymous = json!({"user": null, "authenticated": false, "token": false});
    assert_eq!(
        c.invoke::<_, Value>("whoami", &()).await.expect("whoami"),
        anonymous
    );

    let _: Value = c
        .invoke_value("short_login", None)
        .await
        .map(|_| Value::Null)
        .expect("login");
    wait_for(&mut events, |e| {
        matches!(e, ClientEvent::Authenticate { .. })
    })
    .await;
    let bo = json!({"user": "bo", "authenticated": true, "token": true});
    assert_eq!(
        c.invoke::<_, Value>("whoami", &()).await.expect("whoami"),
        bo
    );
    let socket = server
        .handle()
        .client(&c.id().expect("id"))
        .expect("socket");
    assert!(socket.is_authenticated());

    // `exp` is whole seconds: past it for sure after two.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(socket.is_authenticated(), "nothing looked at the token yet");
    assert_eq!(
        c.invoke::<_, Value>("whoami", &()).await.expect("whoami"),
        anonymous
    );
    wait_for(&mut events, |e| matches!(e, ClientEvent::Deauthenticate)).await;
    assert!(!socket.is_authenticated());
    assert!(socket.auth_token().is_none());

    let _: Value = c
        .invoke("login", &json!({"user": "bo"}))
        .await
        .expect("login");
    assert_eq!(
        c.invoke::<_, Value>("whoami", &()).await.expect("whoami"),
        bo
    );
    let _: Value = c
        .invoke_value("logout", None)
        .await
        .map(|_| Value::Null)
        .expect("logout");
    assert_eq!(
        c.invoke::<_, Value>("whoami", &()).await.expect("whoami"),
        anonymous
    );
    assert!(!socket.is_authenticated());
}

/// Replies the socket's reader queues and publications other tasks queue for the same socket at
/// the same time all arrive: the connection's task forgets the writer's waker while it polls the
/// reader (the writer is polled right after), so a wakeup lost there would leave frames queued
/// and this test waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_and_publications_queued_together_all_arrive() {
    const N: usize = 3000;
    let server = TestServer::start_app(base_app()).await;
    let c = server.client().await;
    let mut feed = c.subscribe("feed").await.expect("subscribes");
    let exchange = server.handle().exchange();
    let publisher = tokio::spawn(async move {
        for i in 0..N {
            exchange.publish("feed", &i).await.expect("publish");
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    let calls = async {
        for chunk in 0..N / 10 {
            let values: Vec<Value> = (0..10).map(|k| json!(chunk * 10 + k)).collect();
            let replies = futures_util::future::join_all(
                values.iter().map(|v| c.invoke::<_, Value>("echo", v)),
            )
            .await;
            for (k, reply) in replies.into_iter().enumerate() {
                assert_eq!(reply.expect("reply"), json!(chunk * 10 + k));
            }
        }
    };
    let received = async {
        for i in 0..N {
            assert_eq!(feed.recv().await, Some(json!(i)));
        }
    };
    tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(calls, received);
    })
    .await
    .expect("every reply and every publication in time");
    publisher.await.expect("publisher");
}

#[tokio::test]
async fn tokens_from_another_key_are_rejected_with_the_reference_error() {
    let issuer =
        TestServer::start(testing::builder().auth_key("other-secret").app(base_app())).await;
    let c = issuer.client().await;
    let mut events = c.events();
    let _: Value = c
        .invoke("login", &json!({"user": "eve"}))
        .await
        .expect("login");
    wait_for(&mut events, |e| {
        matches!(e, ClientEvent::Authenticate { .. })
    })
    .await;
    let forged = c.auth_token().expect("token");

    let server = TestServer::start_app(base_app()).await;
    let victim = server.client().await;
    let err = remote(
        victim
            .authenticate(&forged)
            .await
            .expect_err("forged token"),
    );
    assert_eq!(err.name(), "AuthTokenInvalidError");
    assert_eq!(err.message(), "invalid signature");
    assert_eq!(err.get("isBadToken"), Some(&json!(true)));
    assert!(!victim.is_authenticated());
    let socket = server
        .handle()
        .client(&victim.id().expect("id"))
        .expect("connected");
    assert!(!socket.is_authenticated());
}

#[tokio::test]
async fn key_pairs_sign_and_verify_with_exactly_their_algorithm() {
    for (alg, private, public) in [
        (
            jsonwebtoken::Algorithm::RS256,
            include_str!("keys/rs256-private.pem"),
            include_str!("keys/rs256-public.pem"),
        ),
        (
            jsonwebtoken::Algorithm::ES256,
            include_str!("keys/es256-private.pem"),
            include_str!("keys/es256-public.pem"),
        ),
    ] {
        let server = TestServer::start(
            testing::builder()
                .auth_key_pair(alg, private, public)
                .app(base_app()),
        )
        .await;
        let c = server.client().await;
        let mut events = c.events();
        let _: Value = c
            .invoke("login", &json!({"user": "kp"}))
            .await
            .expect("login");
        wait_for(&mut events, |e| {
            matches!(e, ClientEvent::Authenticate { .. })
        })
        .await;
        let token = c.auth_token().expect("token");
        let header = token.split('.').next().expect("header");
        let header: Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
                .expect("b64"),
        )
        .expect("json");
        assert_eq!(header["alg"], json!(format!("{alg:?}")));

        let other = server.client().await;
        let status = other
            .authenticate(&token)
            .await
            .expect("valid token accepted");
        assert!(status.is_authenticated);

        // An HS256 token signed with the public key as the secret (algorithm confusion).
        let confused = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"user": "mallory"}),
            &jsonwebtoken::EncodingKey::from_secret(public.as_bytes()),
        )
        .expect("encode");
        let err = remote(
            other
                .authenticate(&confused)
                .await
                .expect_err("confusion rejected"),
        );
        assert_eq!(err.name(), "AuthTokenInvalidError");
        assert!(!other.is_authenticated());
    }
}

#[tokio::test]
async fn the_server_can_invoke_and_transmit_to_its_client() {
    async fn ask(socket: Socket) -> Result<Json<Value>, ScError> {
        let answer: Value = socket.invoke("question", &json!({"q": 1})).await?;
        socket.transmit("told", &json!({"answer": answer.clone()}))?;
        Ok(Json(answer))
    }
    let server = TestServer::start(
        testing::builder()
            .ack_timeout(Duration::from_millis(300))
            .app(base_app().event("ask", ask)),
    )
    .await;
    let c = server.client().await;
    let mut told = c.receiver("told");
    c.on_invoke(
        "question",
        |data| async move { Ok(Some(json!({"got": data}))) },
    );
    let v: Value = c.invoke("ask", &()).await.expect("ask");
    assert_eq!(v, json!({"got": {"q": 1}}));
    assert_eq!(
        told.recv().await,
        Some(Some(json!({"answer": {"got": {"q": 1}}})))
    );

    // Without a client procedure the server's invoke times out with the reference's wording.
    c.remove_invoke_handler("question");
    let e = remote(c.invoke::<_, Value>("ask", &()).await.expect_err("timeout"));
    assert_eq!(
        (e.name(), e.message()),
        (
            "TimeoutError",
            "Event response for question event timed out"
        )
    );
}

#[tokio::test]
async fn kick_out_and_disconnect_reach_the_client_with_their_codes() {
    async fn kick(socket: Socket) {
        socket.kick_out(Some("room"), Some("bye"));
    }
    async fn leave(socket: Socket, Json(code): Json<u16>) {
        let s = socket.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.disconnect(code, "custom reason");
        });
    }
    let server = TestServer::start_app(base_app().event("kick", kick).event("leave", leave)).await;
    let c = server.client().await;
    let mut events = c.events();
    let _sub = c.subscribe("room").await.expect("subscribe");
    c.invoke_value("kick", None).await.expect("kick");
    match wait_for(&mut events, |e| matches!(e, ClientEvent::KickOut { .. })).await {
        ClientEvent::KickOut { channel, message } => {
            assert_eq!(channel, "room");
            assert_eq!(message, Some(json!("bye")));
        }
        _ => unreachable!(),
    }
    let socket = server
        .handle()
        .client(&c.id().expect("id"))
        .expect("connected");
    eventually(|| !socket.is_subscribed("room")).await;

    // 4321: temporary, the client comes back by itself.
    c.invoke_value("leave", Some(json!(4321)))
        .await
        .expect("leave");
    match wait_for(&mut events, |e| matches!(e, ClientEvent::Disconnect { .. })).await {
        ClientEvent::Disconnect { code, reason } => {
            assert_eq!((code, reason.as_str()), (4321, "custom reason"))
        }
        _ => unreachable!(),
    }
    wait_for(&mut events, |e| matches!(e, ClientEvent::Connect { .. })).await;

    // 4500 and above: permanent, no reconnect.
    c.invoke_value("leave", Some(json!(4500)))
        .await
        .expect("leave");
    wait_for(&mut events, |e| {
        matches!(e, ClientEvent::Disconnect { code: 4500, .. })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.state(), ConnectionState::Closed);
}

#[tokio::test]
async fn oversized_messages_close_1009_and_other_sockets_are_untouched() {
    let server = TestServer::start(testing::builder().max_payload(1024).app(base_app())).await;
    let big = server.client().await;
    let small = server.client().await;
    let mut events = big.events();
    let _ = big.transmit("echo", &"x".repeat(4000));
    match wait_for(&mut events, |e| matches!(e, ClientEvent::Disconnect { .. })).await {
        ClientEvent::Disconnect { code, .. } => assert_eq!(code, 1009),
        _ => unreachable!(),
    }
    let v: Value = small
        .invoke("echo", &"fine")
        .await
        .expect("other socket unaffected");
    assert_eq!(v, json!("fine"));
}

#[tokio::test]
async fn the_channel_limit_refuses_one_more_subscription() {
    let server = TestServer::start(testing::builder().socket_channel_limit(2)).await;
    let c = server.client().await;
    let _a = c.subscribe("a").await.expect("a");
    let _b = c.subscribe("b").await.expect("b");
    let err = remote(c.subscribe("c").await.expect_err("limit"));
    assert_eq!(err.name(), "BrokerError");
    assert_eq!(
        err.message(),
        format!(
            "Failed to subscribe socket to the c channel - InvalidActionError: Socket {} tried to exceed the channel subscription limit of 2",
            c.id().expect("id")
        )
    );
}

#[tokio::test]
async fn clients_stay_connected_across_many_ping_intervals_in_both_protocol_versions() {
    for version in [
        sc_core::protocol::ProtocolVersion::V2,
        sc_core::protocol::ProtocolVersion::V1,
    ] {
        let server = TestServer::start(
            testing::builder()
                .protocol_version(version)
                .ping_interval(Duration::from_millis(100))
                .ping_timeout(Duration::from_millis(400)),
        )
        .await;
        let mut opts = server.client_options();
        opts.protocol_version = version;
        let c = sc_core::client::Client::connect_with(opts)
            .await
            .expect("connect");
        let mut events = c.events();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(
            matches!(
                events.try_recv(),
                Err(tokio::sync::broadcast::error::TryRecvError::Empty)
            ),
            "no disconnects"
        );
        let socket = server
            .handle()
            .client(&c.id().expect("id"))
            .expect("connected");
        assert!(
            socket.pongs_received() >= 5,
            "pongs: {}",
            socket.pongs_received()
        );
    }
}

#[tokio::test]
async fn shutdown_closes_sockets_with_going_away_and_clients_retry() {
    let server = TestServer::start_app(base_app()).await;
    let c = server.client().await;
    let mut events = c.events();
    server.stop().await;
    match wait_for(&mut events, |e| matches!(e, ClientEvent::Disconnect { .. })).await {
        ClientEvent::Disconnect { code, .. } => assert_eq!(code, 1001),
        _ => unreachable!(),
    }
    // 1001 means "come back": the client is trying to reconnect, not closed for good.
    wait_for(&mut events, |e| matches!(e, ClientEvent::Connecting)).await;
    assert_ne!(c.state(), ConnectionState::Open);
}

#[tokio::test]
async fn a_client_reconnects_and_resubscribes_after_the_server_drops_it() {
    let server = TestServer::start_app(base_app()).await;
    let c = server.client().await;
    let mut events = c.events();
    let mut sub = c.subscribe("room").await.expect("subscribe");
    let first_id = c.id().expect("id");
    server
        .handle()
        .client(&first_id)
        .expect("connected")
        .disconnect(4000 + 123, "go");
    wait_for(&mut events, |e| matches!(e, ClientEvent::Connect { .. })).await;
    assert_ne!(c.id().expect("new id"), first_id);
    let socket = server
        .handle()
        .client(&c.id().expect("id"))
        .expect("reconnected");
    eventually(|| socket.is_subscribed("room")).await;
    server
        .handle()
        .exchange()
        .publish("room", &"again")
        .await
        .expect("publish");
    assert_eq!(sub.recv().await, Some(json!("again")));
}

#[tokio::test]
async fn many_concurrent_clients_each_get_their_own_answers() {
    let server = TestServer::start_app(base_app()).await;
    let count = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let url = server.url();
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let c = sc_core::client::Client::connect_with(testing::client_options(&url))
                .await
                .expect("connect");
            for j in 0..20 {
                let v: Value = c.invoke("echo", &json!([i, j])).await.expect("echo");
                assert_eq!(v, json!([i, j]));
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(count.load(Ordering::Relaxed), 400);
    eventually(|| server.handle().clients_count() <= 20).await;
}

/// Publish-out middleware runs on each subscriber's own writer: one slow call delays that
/// subscriber only (in order), never the publisher, the other subscribers of the channel, or other
/// channels. Before, every subscriber's middleware ran one after another on the publisher's task.
#[tokio::test]
async fn a_slow_publish_out_middleware_delays_only_its_own_subscriber() {
    async fn slow_for_some(socket: Socket) {
        if socket.request().query_param("slow").is_some() {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    }
    let app = base_app().middleware(MiddlewareKind::PublishOut, slow_for_some);
    let server = TestServer::start_app(app).await;
    let mut slow_options = testing::client_options(format!("{}?slow=1", server.url()));
    slow_options.ack_timeout = Duration::from_secs(10);
    let slow = sc_core::client::Client::connect_with(slow_options)
        .await
        .expect("slow client connects");
    let fast = server.client().await;
    let other = server.client().await;
    // The slow subscriber first: the publisher's loop would reach it before the others.
    let mut s = slow.subscribe("news").await.expect("subscribes");
    let mut f = fast.subscribe("news").await.expect("subscribes");
    let mut o = other.subscribe("sport").await.expect("subscribes");

    let exchange = server.handle().exchange();
    let started = tokio::time::Instant::now();
    exchange.publish("news", &1).await.expect("publish");
    exchange.publish("news", &2).await.expect("publish");
    exchange.publish("sport", &3).await.expect("publish");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "publishing waited for the middleware: {:?}",
        started.elapsed()
    );
    let quick = Duration::from_millis(700);
    assert_eq!(
        tokio::time::timeout(quick, f.recv())
            .await
            .expect("fast in time"),
        Some(json!(1))
    );
    assert_eq!(
        tokio::time::timeout(quick, f.recv())
            .await
            .expect("fast in time"),
        Some(json!(2))
    );
    assert_eq!(
        tokio::time::timeout(quick, o.recv())
            .await
            .expect("other channel in time"),
        Some(json!(3))
    );
    // The slow one gets both, later, in order.
    let late = Duration::from_secs(6);
    assert_eq!(
        tokio::time::timeout(late, s.recv()).await.expect("slow"),
        Some(json!(1))
    );
    assert_eq!(
        tokio::time::timeout(late, s.recv()).await.expect("slow"),
        Some(json!(2))
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the slow subscriber's middleware did run"
    );
}

/// Publish-out middleware may talk to its own client, even invoke it and wait for the answer:
/// it runs on a task of the socket's own, so the socket's writer keeps sending meanwhile.
#[tokio::test]
async fn publish_out_middleware_may_invoke_its_own_client() {
    async fn ask_first(socket: Socket) -> Result<(), Block> {
        let ok: bool = socket
            .invoke("mayI", &())
            .await
            .map_err(|e| Block::new(ScError::from(e)))?;
        if ok {
            Ok(())
        } else {
            Err(Block::silent())
        }
    }
    let app = base_app().middleware(MiddlewareKind::PublishOut, ask_first);
    let server = TestServer::start_app(app).await;
    let c = server.client().await;
    c.on_invoke("mayI", |_| async { Ok(Some(json!(true))) });
    let mut sub = c.subscribe("news").await.expect("subscribes");
    server
        .handle()
        .exchange()
        .publish("news", &"hello")
        .await
        .expect("publish");
    let got = tokio::time::timeout(Duration::from_secs(3), sub.recv())
        .await
        .expect("delivered without waiting for the ack timeout");
    assert_eq!(got, Some(json!("hello")));
}
