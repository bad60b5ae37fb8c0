//! Integration tests of `sc_core::client` against the Node reference server
//! (socketcluster-server@20, `refserver/server.mjs`).

mod refserver_support;

use std::time::Duration;

use futures_util::StreamExt;
use refserver_support::{collect_events, wait_event, RefServer};
use sc_core::client::{
    Client, ClientError, ClientEvent, ConnectionState, InvokeError, ProtocolVersion,
    SubscribeOptions,
};
use sc_core::error::ScError;
use serde_json::{json, Value};
use tokio::time::{timeout, Instant};

const T: Duration = Duration::from_secs(5);

async fn connect(server: &RefServer) -> Client {
    Client::connect_with(server.opts())
        .await
        .expect("connect to the reference server")
}

async fn whoami(client: &Client) -> Value {
    client
        .invoke_value("whoami", None)
        .await
        .expect("whoami")
        .expect("whoami data")
}

/// Expects no publication on `sub` for `dur`.
async fn assert_quiet(sub: &mut sc_core::client::Subscription, dur: Duration) {
    if let Ok(v) = timeout(dur, sub.next()).await {
        panic!("unexpected publication {v:?}");
    }
}

#[tokio::test]
async fn connects_and_reports_the_socket_id() {
    let server = RefServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    assert_eq!(client.state(), ConnectionState::Open);
    let id = client.id().expect("id");
    assert_eq!(id.len(), 20, "base64id is 20 chars: {id}");
    let me = whoami(&client).await;
    assert_eq!(me["id"], json!(id));
    assert_eq!(me["isAuthenticated"], json!(false));
    assert!(!client.is_authenticated());
    assert_eq!(client.auth_token(), None);
}

#[tokio::test]
async fn echo_invoke_round_trips_values() {
    let server = RefServer::start();
    let client = connect(&server).await;
    let data = json!({"x": [1, 2, {"y": "z"}], "n": null, "s": "é\"\n"});
    let back: Value = client.invoke("echo", &data).await.expect("echo");
    assert_eq!(back, data);
    // Typed.
    let n: u32 = client.invoke("echo", &42u32).await.expect("echo number");
    assert_eq!(n, 42);
    // No data -> undefined on the server -> response without data.
    assert_eq!(
        client.invoke_value("echo", None).await.expect("echo none"),
        None
    );
    assert_eq!(
        client
            .invoke_value("echo", Some(json!("s")))
            .await
            .expect("echo s"),
        Some(json!("s"))
    );
    // Decoding into the wrong type.
    let err = client
        .invoke::<_, u32>("echo", &"text")
        .await
        .expect_err("decode error");
    assert!(
        matches!(err, InvokeError::Decode { ref event, .. } if event == "echo"),
        "{err:?}"
    );
}

#[tokio::test]
async fn invoke_error_is_the_servers_error() {
    let server = RefServer::start();
    let client = connect(&server).await;
    let err = client
        .invoke_value("fail", Some(json!(1)))
        .await
        .expect_err("fail must fail");
    let InvokeError::Remote(remote) = &err else {
        panic!("expected Remote, got {err:?}");
    };
    assert_eq!(remote.name(), "CustomError");
    assert_eq!(remote.message(), "custom failure");
    assert_eq!(remote.get("code"), Some(&json!("E_X")));
    let sc: ScError = err.into();
    assert_eq!(sc.name(), "CustomError");
    // The connection is unaffected.
    assert_eq!(client.state(), ConnectionState::Open);
}

#[tokio::test]
async fn invoke_without_a_handler_times_out() {
    let server = RefServer::start();
    let mut opts = server.opts();
    opts.ack_timeout = Duration::from_millis(300);
    let client = Client::connect_with(opts).await.expect("connect");
    let start = Instant::now();
    let err = client
        .invoke_value("noSuchProcedure", Some(json!(1)))
        .await
        .expect_err("timeout");
    let elapsed = start.elapsed();
    assert!(
        matches!(&err, InvokeError::Timeout { event } if event == "noSuchProcedure"),
        "{err:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(290) && elapsed < Duration::from_millis(1500),
        "{elapsed:?}"
    );
    let sc: ScError = err.into();
    assert_eq!(sc.name(), "TimeoutError");
    assert_eq!(
        sc.message(),
        "Event response for noSuchProcedure event timed out"
    );
    // Still usable.
    assert_eq!(
        client
            .invoke_value("echo", Some(json!(7)))
            .await
            .expect("echo"),
        Some(json!(7))
    );
}

#[tokio::test]
async fn transmit_reaches_the_server_and_receiver_gets_server_transmits() {
    let server = RefServer::start();
    let client = connect(&server).await;
    let mut noted = client.receiver("noted");
    client
        .transmit("note", &json!({"k": "v"}))
        .expect("transmit");
    client.transmit("note", &2).expect("transmit");
    let first = timeout(T, noted.next()).await.expect("noted in time");
    assert_eq!(first, Some(Some(json!({"k": "v"}))));
    let second = timeout(T, noted.recv()).await.expect("noted in time");
    assert_eq!(second, Some(Some(json!(2))));
}

#[tokio::test]
async fn subscribe_then_publish_delivers_once() {
    let server = RefServer::start();
    let client = connect(&server).await;
    let mut events = client.events();
    let mut room = client.subscribe("room").await.expect("subscribe");
    assert!(room.is_subscribed());
    assert!(client.is_subscribed("room"));
    assert_eq!(client.subscriptions(false), vec!["room".to_owned()]);
    wait_event(
        &mut events,
        |e| matches!(e, ClientEvent::Subscribe { channel } if channel == "room"),
    )
    .await;
    assert_eq!(whoami(&client).await["subscriptions"], json!(["room"]));

    client
        .publish("room", &json!({"ip": 1}))
        .await
        .expect("publish");
    assert_eq!(
        timeout(T, room.next()).await.expect("in time"),
        Some(json!({"ip": 1}))
    );
    assert_quiet(&mut room, Duration::from_millis(200)).await;

    client
        .transmit_publish("room", &"tp")
        .expect("transmit_publish");
    assert_eq!(
        timeout(T, room.next()).await.expect("in time"),
        Some(json!("tp"))
    );
    assert_quiet(&mut room, Duration::from_millis(200)).await;

    // Publishing to a channel nobody (including us) is subscribed to is acked and not delivered.
    client
        .publish("elsewhere", &1)
        .await
        .expect("publish elsewhere");
    assert_quiet(&mut room, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn another_clients_publication_is_received() {
    let server = RefServer::start();
    let a = connect(&server).await;
    let b = connect(&server).await;
    let mut b_room = b.subscribe("room").await.expect("subscribe");
    a.publish("room", &json!("from-a")).await.expect("publish");
    a.transmit_publish("room", &json!("from-a-2"))
        .expect("transmit_publish");
    assert_eq!(
        timeout(T, b_room.next()).await.expect("in time"),
        Some(json!("from-a"))
    );
    assert_eq!(
        timeout(T, b_room.next()).await.expect("in time"),
        Some(json!("from-a-2"))
    );
    assert_quiet(&mut b_room, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn server_side_publish_is_received() {
    let server = RefServer::start();
    let client = connect(&server).await;
    let mut news = client.subscribe("news").await.expect("subscribe");
    client
        .invoke_value(
            "serverPublish",
            Some(json!({"channel": "news", "data": {"h": "hi"}})),
        )
        .await
        .expect("serverPublish");
    assert_eq!(
        timeout(T, news.next()).await.expect("in time"),
        Some(json!({"h": "hi"}))
    );
    // A publication without data arrives as null.
    client
        .invoke_value("serverPublish", Some(json!({"channel": "news"})))
        .await
        .expect("serverPublish");
    assert_eq!(
        timeout(T, news.next()).await.expect("in time"),
        Some(Value::Null)
    );
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let server = RefServer::start();
    let a = connect(&server).await;
    let b = connect(&server).await;

    // Explicit unsubscribe.
    let room = a.subscribe("room").await.expect("subscribe");
    room.unsubscribe();
    assert!(!a.is_subscribed("room"));
    // #unsubscribe is a transmit; the server handles a socket's messages in order.
    assert_eq!(whoami(&a).await["subscriptions"], json!([]));

    // Last handle dropped.
    let h1 = a.subscribe("c").await.expect("subscribe 1");
    let mut h2 = a.subscribe("c").await.expect("subscribe 2");
    drop(h1);
    assert!(a.is_subscribed("c"), "one handle is left");
    b.publish("c", &1).await.expect("publish");
    assert_eq!(
        timeout(T, h2.next()).await.expect("in time"),
        Some(json!(1))
    );
    drop(h2);
    assert!(!a.is_subscribed("c"));
    assert_eq!(whoami(&a).await["subscriptions"], json!([]));

    // Client::unsubscribe ends the stream.
    let mut d = a.subscribe("d").await.expect("subscribe d");
    a.unsubscribe("d");
    assert_eq!(timeout(T, d.next()).await.expect("in time"), None);
    b.publish("d", &2).await.expect("publish");
    assert_eq!(whoami(&a).await["subscriptions"], json!([]));
}

#[tokio::test]
async fn login_sets_the_token_and_reconnect_sends_it() {
    let server = RefServer::start();
    let client = connect(&server).await;
    let mut events = client.events();
    client
        .invoke_value(
            "loginTransmit",
            Some(json!({"username": "alice", "role": "admin"})),
        )
        .await
        .expect("login");
    let ClientEvent::Authenticate { signed_token } = wait_event(&mut events, |e| {
        matches!(e, ClientEvent::Authenticate { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(client.auth_token().as_deref(), Some(signed_token.as_str()));
    assert_eq!(signed_token.split('.').count(), 3);
    assert!(client.is_authenticated());
    let claims = client.auth_claims().expect("claims");
    assert_eq!(claims.get("username"), Some(&json!("alice")));
    assert_eq!(claims.get("role"), Some(&json!("admin")));
    let iat = claims.get("iat").and_then(Value::as_u64).expect("iat");
    let exp = claims.get("exp").and_then(Value::as_u64).expect("exp");
    assert_eq!(exp - iat, 86_400, "authDefaultExpiry");

    let old_id = client.id();
    client.reconnect();
    let ev = wait_event(&mut events, |e| matches!(e, ClientEvent::Connect { .. })).await;
    let ClientEvent::Connect {
        is_authenticated,
        auth_error,
        id,
        ping_timeout,
    } = ev
    else {
        unreachable!()
    };
    assert!(is_authenticated, "the handshake carried the token");
    assert_eq!(auth_error, None);
    assert_ne!(Some(id), old_id);
    assert_eq!(ping_timeout, Duration::from_millis(30_000));
    let me = whoami(&client).await;
    assert_eq!(me["isAuthenticated"], json!(true));
    assert_eq!(me["authToken"]["username"], json!("alice"));
    assert_eq!(client.auth_token().as_deref(), Some(signed_token.as_str()));
}

#[tokio::test]
async fn initial_token_option_authenticates_the_first_handshake() {
    let server = RefServer::start();
    let first = connect(&server).await;
    first
        .invoke_value("login", Some(json!({"username": "bob"})))
        .await
        .expect("login");
    let token = first.auth_token().expect("token");

    let mut opts = server.opts();
    opts.auth_token = Some(token.clone());
    let second = Client::connect_with(opts).await.expect("connect");
    assert!(second.is_authenticated());
    assert_eq!(second.auth_token(), Some(token));
    assert_eq!(whoami(&second).await["authToken"]["username"], json!("bob"));

    // A bad stored token: connect succeeds, unauthenticated, and the server removes it.
    let mut opts = server.opts();
    opts.auth_token = Some("garbage.token.here".to_owned());
    let third = Client::connect_with(opts).await.expect("connect");
    assert!(!third.is_authenticated());
    let auth_error = third.auth_error().expect("authError");
    assert_eq!(auth_error.name(), "AuthTokenInvalidError");
    assert_eq!(auth_error.get("isBadToken"), Some(&json!(true)));
    // The server queued #removeAuthToken right after the handshake reply; a round trip
    // later it has arrived.
    assert_eq!(whoami(&third).await["isAuthenticated"], json!(false));
    let mut events = third.events();
    third.reconnect();
    let ev = wait_event(&mut events, |e| matches!(e, ClientEvent::Connect { .. })).await;
    // The server's #removeAuthToken after the first handshake cleared the stored token.
    assert!(
        matches!(
            &ev,
            ClientEvent::Connect {
                is_authenticated: false,
                auth_error: None,
                ..
            }
        ),
        "{ev:?}"
    );
}

#[tokio::test]
async fn authenticate_with_a_token() {
    let server = RefServer::start();
    let a = connect(&server).await;
    a.invoke_value("login", Some(json!({"username": "carol"})))
        .await
        .expect("login");
    let token = a.auth_token().expect("token");

    let b = connect(&server).await;
    let status = b.authenticate(&token).await.expect("authenticate");
    assert!(status.is_authenticated);
    assert_eq!(status.auth_error, None);
    assert!(b.is_authenticated());
    assert_eq!(b.auth_claims().expect("claims")["username"], json!("carol"));
    assert_eq!(whoami(&b).await["authToken"]["username"], json!("carol"));

    let err = b
        .authenticate("garbage.token.here")
        .await
        .expect_err("bad token");
    let remote = err.remote().expect("remote error");
    assert_eq!(remote.name(), "AuthTokenInvalidError");
    assert_eq!(remote.get("isBadToken"), Some(&json!(true)));
    assert!(!b.is_authenticated());
    assert_eq!(b.auth_token(), None);
}

#[tokio::test]
async fn deauthenticate_locally_and_from_the_server() {
    let server = RefServer::start();
    let client = connect(&server).await;
    let mut events = client.events();
    client
        .invoke_value("login", Some(json!({"username": "dave"})))
        .await
        .expect("login");
    assert!(client.is_authenticated());

    client.deauthenticate().await;
    assert!(!client.is_authenticated());
    assert_eq!(client.auth_token(), None);
    assert_eq!(client.auth_claims(), None);
    wait_event(&mut events, |e| matches!(e, ClientEvent::Deauthenticate)).await;
    let me = whoami(&client).await;
    assert_eq!(me["isAuthenticated"], json!(false));
    assert_eq!(me["authToken"], Value::Null);

    // Server-side deauthenticate -> #removeAuthToken.
    client
        .invoke_value("login", Some(json!({"username": "dave"})))
        .await
        .expect("login");
    assert!(client.is_authenticated());
    client.invoke_value("deauth", None).await.expect("deauth");
    wait_event(&mut events, |e| matches!(e, ClientEvent::Deauthenticate)).await;
    assert!(!client.is_authenticated());
    // The stored token is gone: a reconnect is unauthenticated.
    client.reconnect();
    let ev = wait_event(&mut events, |e| matches!(e, ClientEvent::Connect { .. })).await;
    assert!(
        matches!(
            ev,
            ClientEvent::Connect {
                is_authenticated: false,
                ..
            }
        ),
        "{ev:?}"
    );
}

#[tokio::test]
async fn server_invokes_a_client_procedure() {
    let server = RefServer::start();
    let client = connect(&server).await;
    client.on_invoke("question", |data| async move {
        match data {
            Some(Value::String(s)) if s == "refuse" => {
                Err(ScError::new("ClientErr", "client says no").with("why", 1))
            }
            data => Ok(Some(json!({"answer": data}))),
        }
    });
    let answer = client
        .invoke_value("ask", Some(json!({"q": 1})))
        .await
        .expect("ask");
    assert_eq!(answer, Some(json!({"answer": {"q": 1}})));

    // The handler's error reaches the server, which rethrows it through `ask`.
    let err = client
        .invoke_value("ask", Some(json!("refuse")))
        .await
        .expect_err("refused");
    let remote = err.remote().expect("remote");
    assert_eq!(remote.name(), "ClientErr");
    assert_eq!(remote.message(), "client says no");
    assert_eq!(remote.get("why"), Some(&json!(1)));
}

#[tokio::test]
async fn kick_out_ends_the_subscription() {
    let server = RefServer::start();
    let client = connect(&server).await;
    let other = connect(&server).await;
    let mut events = client.events();
    let mut k1 = client.subscribe("k1").await.expect("subscribe");
    let mut k2 = client.subscribe("k2").await.expect("subscribe");
    client
        .invoke_value("kick", Some(json!({"channel": "k1", "message": "bye"})))
        .await
        .expect("kick");
    let ev = wait_event(&mut events, |e| matches!(e, ClientEvent::KickOut { .. })).await;
    assert_eq!(
        ev,
        ClientEvent::KickOut {
            channel: "k1".into(),
            message: Some(json!("bye"))
        }
    );
    assert_eq!(
        timeout(T, k1.next()).await.expect("in time"),
        None,
        "stream ended"
    );
    assert!(!client.is_subscribed("k1"));
    assert!(client.is_subscribed("k2"));
    other.publish("k1", &1).await.expect("publish");
    other.publish("k2", &2).await.expect("publish");
    assert_eq!(
        timeout(T, k2.next()).await.expect("in time"),
        Some(json!(2))
    );
    assert_eq!(whoami(&client).await["subscriptions"], json!(["k2"]));
}

#[tokio::test]
async fn server_disconnect_reconnects_and_resubscribes() {
    let server = RefServer::start();
    let client = connect(&server).await;
    let other = connect(&server).await;
    let mut events = client.events();
    let mut room = client.subscribe("room").await.expect("subscribe");
    let old_id = client.id().expect("id");

    client.invoke_value("dropMe", None).await.expect("dropMe");
    let ev = wait_event(&mut events, |e| matches!(e, ClientEvent::Disconnect { .. })).await;
    assert_eq!(
        ev,
        ClientEvent::Disconnect {
            code: 4123,
            reason: "bye".into()
        }
    );
    // The order the official client uses: Unsubscribe came with the disconnect; after the
    // handshake, the resubscription is sent before Connect is emitted, its ack comes later.
    let ev = wait_event(&mut events, |e| matches!(e, ClientEvent::Connect { .. })).await;
    let ClientEvent::Connect { id, .. } = ev else {
        unreachable!()
    };
    assert_ne!(id, old_id);
    wait_event(
        &mut events,
        |e| matches!(e, ClientEvent::Subscribe { channel } if channel == "room"),
    )
    .await;
    assert!(room.is_subscribed());
    assert_eq!(client.state(), ConnectionState::Open);
    assert_eq!(client.id(), Some(id));

    other.publish("room", &"after").await.expect("publish");
    assert_eq!(
        timeout(T, room.next()).await.expect("in time"),
        Some(json!("after"))
    );
    assert_quiet(&mut room, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn calls_made_while_disconnected_are_buffered_and_flushed_in_order() {
    let server = RefServer::start();
    let mut opts = server.opts();
    // Long enough that the calls below are certainly made while disconnected.
    opts.backoff.initial_delay = Duration::from_millis(400);
    opts.backoff.randomness = Duration::ZERO;
    let client = Client::connect_with(opts).await.expect("connect");
    let mut events = client.events();
    let mut noted = client.receiver("noted");

    client
        .invoke_value("dropMe", Some(json!({"code": 4200, "reason": "later"})))
        .await
        .expect("dropMe");
    wait_event(&mut events, |e| {
        matches!(e, ClientEvent::Disconnect { code: 4200, .. })
    })
    .await;
    assert_ne!(client.state(), ConnectionState::Open);

    client.transmit("note", &1).expect("buffered transmit");
    let c = client.clone();
    let echo = tokio::spawn(async move { c.invoke_value("echo", Some(json!("buffered"))).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    client.transmit("note", &2).expect("buffered transmit");

    assert_eq!(
        timeout(T, echo)
            .await
            .expect("in time")
            .expect("join")
            .expect("echo"),
        Some(json!("buffered"))
    );
    assert_eq!(
        timeout(T, noted.recv()).await.expect("in time"),
        Some(Some(json!(1)))
    );
    assert_eq!(
        timeout(T, noted.recv()).await.expect("in time"),
        Some(Some(json!(2)))
    );
    assert_eq!(client.state(), ConnectionState::Open);
}

#[tokio::test]
async fn pending_invokes_fail_with_bad_connection() {
    let server = RefServer::start();
    let client = connect(&server).await;
    let c = client.clone();
    let hanging = tokio::spawn(async move { c.invoke_value("noSuchProcedure", None).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    client
        .invoke_value("dropMe", Some(json!({"code": 4321, "reason": "why"})))
        .await
        .expect("dropMe");
    let err = timeout(T, hanging)
        .await
        .expect("in time")
        .expect("join")
        .expect_err("bad connection");
    match &err {
        InvokeError::BadConnection {
            event,
            code,
            reason,
        } => {
            assert_eq!(event, "noSuchProcedure");
            assert_eq!(*code, 4321);
            assert_eq!(reason, "why");
        }
        other => panic!("expected BadConnection, got {other:?}"),
    }
    let sc: ScError = err.into();
    assert_eq!(sc.name(), "BadConnectionError");
    assert_eq!(sc.get("code"), Some(&json!(4321)));
}

#[tokio::test]
async fn disconnect_closes_for_good() {
    let server = RefServer::start();
    let client = connect(&server).await;
    let other = connect(&server).await;
    let mut events = client.events();
    let _room = client.subscribe("room").await.expect("subscribe");
    client.disconnect().await;
    assert_eq!(client.state(), ConnectionState::Closed);
    assert_eq!(client.id(), None);
    let evs = collect_events(&mut events, Duration::from_millis(500)).await;
    assert!(
        evs.contains(&ClientEvent::Disconnect {
            code: 1000,
            reason: String::new()
        }),
        "{evs:?}"
    );
    assert!(
        !evs.iter()
            .any(|e| matches!(e, ClientEvent::Connecting | ClientEvent::Connect { .. })),
        "no reconnect: {evs:?}"
    );
    assert_eq!(client.state(), ConnectionState::Closed);
    // Calls fail at once.
    let err = client.invoke_value("echo", None).await.expect_err("closed");
    assert!(
        matches!(err, InvokeError::BadConnection { code: 1000, .. }),
        "{err:?}"
    );
    assert!(matches!(
        client.transmit("note", &1),
        Err(ClientError::Closed)
    ));
    // The server dropped the socket.
    other.publish("room", &1).await.expect("publish");

    // reconnect() reopens it, resubscribing.
    client.reconnect();
    wait_event(&mut events, |e| matches!(e, ClientEvent::Connect { .. })).await;
    wait_event(
        &mut events,
        |e| matches!(e, ClientEvent::Subscribe { channel } if channel == "room"),
    )
    .await;
    assert_eq!(whoami(&client).await["subscriptions"], json!(["room"]));
}

#[tokio::test]
async fn permanent_close_codes_do_not_reconnect() {
    let server = RefServer::start();
    let client = connect(&server).await;
    let mut events = client.events();
    client
        .invoke_value("dropMe", Some(json!({"code": 4500, "reason": "go away"})))
        .await
        .expect("dropMe");
    let ev = wait_event(&mut events, |e| matches!(e, ClientEvent::Disconnect { .. })).await;
    assert_eq!(
        ev,
        ClientEvent::Disconnect {
            code: 4500,
            reason: "go away".into()
        }
    );
    let evs = collect_events(&mut events, Duration::from_millis(400)).await;
    assert!(
        !evs.iter().any(|e| matches!(e, ClientEvent::Connecting)),
        "{evs:?}"
    );
    assert_eq!(client.state(), ConnectionState::Closed);
    let err = client.invoke_value("echo", None).await.expect_err("closed");
    assert!(
        matches!(&err, InvokeError::BadConnection { code: 4500, reason, .. } if reason == "go away"),
        "{err:?}"
    );
}

#[tokio::test]
async fn wait_for_auth_subscription_waits_for_login() {
    let server = RefServer::start();
    let client = connect(&server).await;
    let c = client.clone();
    let pending = tokio::spawn(async move {
        c.subscribe_with(
            "secret",
            SubscribeOptions {
                wait_for_auth: true,
                data: Some(json!({"hint": 1})),
                ..SubscribeOptions::default()
            },
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished(), "must wait for authentication");
    assert_eq!(client.subscriptions(true), vec!["secret".to_owned()]);
    assert_eq!(whoami(&client).await["subscriptions"], json!([]));

    client
        .invoke_value("login", Some(json!({"username": "erin"})))
        .await
        .expect("login");
    let mut secret = timeout(T, pending)
        .await
        .expect("in time")
        .expect("join")
        .expect("subscribed");
    assert!(secret.is_subscribed());
    assert_eq!(whoami(&client).await["subscriptions"], json!(["secret"]));
    client.publish("secret", &"s").await.expect("publish");
    assert_eq!(
        timeout(T, secret.next()).await.expect("in time"),
        Some(json!("s"))
    );
}

#[tokio::test]
async fn ping_pong_v2_keeps_the_connection_alive() {
    let server = RefServer::start_with(r#"{"pingInterval":100,"pingTimeout":500}"#);
    let client = connect(&server).await;
    let mut events = client.events();
    let evs = collect_events(&mut events, Duration::from_millis(1500)).await;
    assert!(evs.is_empty(), "no disconnect expected: {evs:?}");
    assert_eq!(client.state(), ConnectionState::Open);
    assert_eq!(
        client
            .invoke_value("echo", Some(json!(1)))
            .await
            .expect("echo"),
        Some(json!(1))
    );
}

#[tokio::test]
async fn ping_pong_v1_keeps_the_connection_alive() {
    let server =
        RefServer::start_with(r#"{"pingInterval":100,"pingTimeout":500,"protocolVersion":1}"#);
    let mut opts = server.opts();
    opts.protocol_version = ProtocolVersion::V1;
    let client = Client::connect_with(opts).await.expect("connect");
    let mut events = client.events();
    let evs = collect_events(&mut events, Duration::from_millis(1500)).await;
    assert!(evs.is_empty(), "no disconnect expected: {evs:?}");
    assert_eq!(
        client
            .invoke_value("echo", Some(json!(1)))
            .await
            .expect("echo"),
        Some(json!(1))
    );
}

#[tokio::test]
async fn ping_watchdog_closes_4000_and_reconnects_at_once() {
    let server = RefServer::start_with(r#"{"pingInterval":100,"pingTimeout":600}"#);
    let mut opts = server.opts();
    // Backoff long enough to show that 4000 does not use it on the first attempt.
    opts.backoff.initial_delay = Duration::from_secs(5);
    let client = Client::connect_with(opts).await.expect("connect");
    let mut events = client.events();
    client
        .invoke_value("stopPings", None)
        .await
        .expect("stopPings");
    let start = Instant::now();
    let ev = wait_event(&mut events, |e| matches!(e, ClientEvent::Disconnect { .. })).await;
    assert_eq!(
        ev,
        ClientEvent::Disconnect {
            code: 4000,
            reason: "Server ping timed out".into()
        }
    );
    let waited = start.elapsed();
    assert!(waited < Duration::from_millis(1200), "{waited:?}");
    wait_event(&mut events, |e| matches!(e, ClientEvent::Connect { .. })).await;
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "reconnected immediately"
    );
    assert_eq!(client.state(), ConnectionState::Open);
}

#[tokio::test]
async fn connect_failures_are_reported() {
    // Nothing listens on this port (a server was started and stopped).
    let port = {
        let server = RefServer::start();
        server.port
    };
    let err = Client::connect(&format!("ws://127.0.0.1:{port}/socketcluster/"))
        .await
        .expect_err("refused");
    assert!(matches!(err, ClientError::Connect(_)), "{err:?}");

    // Wrong path: HTTP 400 instead of an upgrade.
    let server = RefServer::start();
    let err = Client::connect(&format!("ws://127.0.0.1:{}/nope", server.port))
        .await
        .expect_err("bad path");
    assert!(
        matches!(err, ClientError::Connect(ref m) if m.contains("400")),
        "{err:?}"
    );

    let err = Client::connect("http://127.0.0.1:1/")
        .await
        .expect_err("scheme");
    assert!(matches!(err, ClientError::InvalidUrl { .. }), "{err:?}");
    let err = Client::connect("not a url").await.expect_err("url");
    assert!(matches!(err, ClientError::InvalidUrl { .. }), "{err:?}");
}

#[tokio::test]
async fn wire_frames_match_the_official_client() {
    let server = RefServer::start_with(r#"{"logRaw":true}"#);
    let client = connect(&server).await;
    let mut events = client.events();
    let room = client.subscribe("room").await.expect("subscribe"); // cid 2
    client.transmit("note", &json!({"a": 1})).expect("transmit");
    client.publish("room", &"ip").await.expect("publish"); // cid 3
    client
        .transmit_publish("room", &"tp")
        .expect("transmit_publish");
    room.unsubscribe();
    let _secret = client
        .subscribe_with(
            "s",
            SubscribeOptions {
                data: Some(json!({"hint": 1})),
                priority: 5,
                ..SubscribeOptions::default()
            },
        )
        .await
        .expect("subscribe s"); // cid 4
    client.reconnect();
    wait_event(
        &mut events,
        |e| matches!(e, ClientEvent::Subscribe { channel } if channel == "s"),
    )
    .await;
    let log = client
        .invoke_value("rawLog", None)
        .await
        .expect("rawLog")
        .expect("log");
    let log: Vec<&str> = log
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_str().expect("string"))
        .collect();
    assert_eq!(
        log,
        vec![
            r##"{"event":"#handshake","data":{"authToken":null},"cid":1}"##,
            r##"{"event":"#subscribe","data":{"channel":"room"},"cid":2}"##,
            r#"{"event":"note","data":{"a":1}}"#,
            r##"{"event":"#publish","data":{"channel":"room","data":"ip"},"cid":3}"##,
            r##"{"event":"#publish","data":{"channel":"room","data":"tp"}}"##,
            r##"{"event":"#unsubscribe","data":"room"}"##,
            r##"{"event":"#subscribe","data":{"channel":"s","data":{"hint":1}},"cid":4}"##,
            // After reconnect(): the counter continues; the channel is resubscribed.
            r##"{"event":"#handshake","data":{"authToken":null},"cid":5}"##,
            r##"{"event":"#subscribe","data":{"channel":"s","data":{"hint":1}},"cid":6}"##,
            r#"{"event":"rawLog","cid":7}"#,
        ]
    );
}
