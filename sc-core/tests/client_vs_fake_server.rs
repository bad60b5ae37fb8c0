//! Wire-level tests of `sc_core::client` against a scripted fake server: exact frames,
//! malformed input, handshake failures, batches, ping tokens.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sc_core::client::{
    Client, ClientError, ClientEvent, ClientOptions, ConnectionState, InvokeError, ProtocolVersion,
};
use sc_core::error::ScError;
use sc_core::testing;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const T: Duration = Duration::from_secs(5);

struct Fake {
    listener: TcpListener,
}

impl Fake {
    async fn start() -> Self {
        Self {
            listener: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        }
    }

    fn opts(&self) -> ClientOptions {
        let port = self.listener.local_addr().expect("addr").port();
        let mut o = testing::client_options(format!("ws://127.0.0.1:{port}/socketcluster/"));
        // Exact reconnect delays: tests time them.
        o.backoff.randomness = Duration::ZERO;
        o
    }

    async fn accept(&self) -> Conn {
        let (stream, _) = timeout(T, self.listener.accept())
            .await
            .expect("a connection in time")
            .expect("accept");
        let ws = tokio_tungstenite::accept_async(stream)
            .await
            .expect("ws accept");
        Conn { ws }
    }
}

struct Conn {
    ws: WebSocketStream<TcpStream>,
}

impl Conn {
    /// The next text message (pongs included), or panics.
    async fn recv(&mut self) -> String {
        loop {
            match timeout(T, self.ws.next()).await.expect("message in time") {
                Some(Ok(Message::Text(t))) => return t.as_str().to_owned(),
                Some(Ok(Message::Close(f))) => panic!("unexpected close {f:?}"),
                Some(Ok(_)) => {}
                other => panic!("connection ended: {other:?}"),
            }
        }
    }

    async fn recv_json(&mut self) -> Value {
        let text = self.recv().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON {text:?}: {e}"))
    }

    /// The close frame the client sends.
    async fn recv_close(&mut self) -> (u16, String) {
        loop {
            match timeout(T, self.ws.next()).await.expect("close in time") {
                Some(Ok(Message::Close(Some(f)))) => {
                    return (u16::from(f.code), f.reason.as_str().to_owned())
                }
                Some(Ok(Message::Close(None))) => return (1005, String::new()),
                Some(Ok(_)) => {}
                other => panic!("connection ended without close frame: {other:?}"),
            }
        }
    }

    async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let _ = self
            .ws
            .close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            }))
            .await;
    }

    /// Expects `#handshake` and answers it; returns its cid.
    async fn handshake(&mut self, reply: Value) -> u64 {
        let hs = self.recv_json().await;
        assert_eq!(hs["event"], json!("#handshake"), "{hs}");
        let cid = hs["cid"].as_u64().expect("numeric cid");
        let mut response = json!({"rid": cid});
        if let Value::Object(extra) = reply {
            for (k, v) in extra {
                response[k] = v;
            }
        }
        self.send(&response.to_string()).await;
        cid
    }
}

fn ok_status() -> Value {
    json!({"data": {"id": "fake-socket-id-00000", "pingTimeout": 30000, "isAuthenticated": false}})
}

fn spawn_connect(opts: ClientOptions) -> JoinHandle<Result<Client, ClientError>> {
    tokio::spawn(Client::connect_with(opts))
}

async fn connected(fake: &Fake) -> (Client, Conn) {
    let pending = spawn_connect(fake.opts());
    let mut conn = fake.accept().await;
    assert_eq!(conn.handshake(ok_status()).await, 1);
    let client = timeout(T, pending)
        .await
        .expect("in time")
        .expect("join")
        .expect("connect");
    (client, conn)
}

#[tokio::test]
async fn malformed_input_never_breaks_the_client() {
    let fake = Fake::start().await;
    let (client, mut conn) = connected(&fake).await;
    let mut events = client.events();
    let mut noted = client.receiver("noted");
    client.on_invoke(
        "question",
        |data| async move { Ok(Some(json!({"got": data}))) },
    );

    for junk in [
        "plain text",
        "{not json",
        "42",
        "null",
        "[]",
        "[1,\"x\",null,{}]",
        r#"{"event":42}"#,
        r#"{"rid":"1"}"#,
        r#"{"rid":-5,"data":1}"#,
        r#"{"rid":99999999999999999999999}"#,
        r#"{"rid":12345,"data":"unknown rid"}"#,
        r##"{"event":"#publish"}"##,
        r##"{"event":"#publish","data":5}"##,
        r##"{"event":"#publish","data":{"channel":7,"data":1}}"##,
        r##"{"event":"#publish","data":{"channel":"notmine","data":1}}"##,
        r##"{"event":"#kickOut","data":null}"##,
        r##"{"event":"#kickOut","data":{"channel":"notmine"}}"##,
        r##"{"event":"#setAuthToken","data":{"token":5}}"##,
        r##"{"event":"#setAuthToken"}"##,
        r##"{"event":"#removeAuthToken","data":[1]}"##,
        r#"{"event":"noted","cid":"x","data":"cid not a number: a transmit"}"#,
        r#"{"event":"question","cid":1.5,"data":"fractional cid: a transmit"}"#,
        "#1",
    ] {
        conn.send(junk).await;
    }
    conn.ws
        .send(Message::binary(
            b"{\"event\":\"noted\",\"data\":\"binary\"}".to_vec(),
        ))
        .await
        .expect("send binary");
    // An invalid #setAuthToken invoke is answered with the official client's error.
    conn.send(r##"{"event":"#setAuthToken","cid":7,"data":{"token":false}}"##)
        .await;
    assert_eq!(
        conn.recv_json().await,
        json!({"rid":7,"error":{"message":"No token data provided by #setAuthToken event","name":"InvalidMessageError"}})
    );
    // Still alive: a procedure call is answered.
    conn.send(r#"{"event":"question","cid":8,"data":{"q":1}}"#)
        .await;
    assert_eq!(
        conn.recv_json().await,
        json!({"rid":8,"data":{"got":{"q":1}}})
    );
    assert_eq!(client.state(), ConnectionState::Open);
    // Only the transmit with the non-numeric cid reached the receiver (binary was ignored).
    assert_eq!(
        timeout(T, noted.recv()).await.expect("in time"),
        Some(Some(json!("cid not a number: a transmit")))
    );
    assert!(timeout(Duration::from_millis(100), noted.recv())
        .await
        .is_err());
    // No event was raised by any of it.
    assert!(events.try_recv().is_err());
    assert!(!client.is_authenticated());
}

#[tokio::test]
async fn batches_out_of_order_responses_and_auth_invokes() {
    let fake = Fake::start().await;
    let (client, mut conn) = connected(&fake).await;
    let mut noted = client.receiver("noted");
    let c1 = client.clone();
    let first = tokio::spawn(async move { c1.invoke_value("a", Some(json!(1))).await });
    assert_eq!(
        conn.recv_json().await,
        json!({"event":"a","data":1,"cid":2})
    );
    let c2 = client.clone();
    let second = tokio::spawn(async move { c2.invoke_value("b", None).await });
    assert_eq!(conn.recv_json().await, json!({"event":"b","cid":3}));
    // One batch: responses out of order, a transmit, an auth token invoke.
    conn.send(
        r##"[{"rid":3,"data":"for b"},{"event":"noted","data":"in batch"},{"rid":2,"error":{"message":"nope","name":"AErr","x":1}},{"event":"#setAuthToken","cid":9,"data":{"token":"h.eyJ1c2VyIjoiemVkIn0.s"}}]"##,
    )
    .await;
    assert_eq!(
        timeout(T, second)
            .await
            .expect("in time")
            .expect("join")
            .expect("b"),
        Some(json!("for b"))
    );
    let err = timeout(T, first)
        .await
        .expect("in time")
        .expect("join")
        .expect_err("a fails");
    let remote = err.remote().expect("remote");
    assert_eq!((remote.name(), remote.message()), ("AErr", "nope"));
    assert_eq!(remote.get("x"), Some(&json!(1)));
    assert_eq!(
        timeout(T, noted.recv()).await.expect("in time"),
        Some(Some(json!("in batch")))
    );
    // The token invoke was confirmed with a bare {"rid":N}.
    assert_eq!(conn.recv().await, r#"{"rid":9}"#);
    assert!(client.is_authenticated());
    assert_eq!(client.auth_claims().expect("claims")["user"], json!("zed"));
    // #removeAuthToken as an invoke is confirmed too.
    conn.send(r##"{"event":"#removeAuthToken","cid":10}"##)
        .await;
    assert_eq!(conn.recv().await, r#"{"rid":10}"#);
    assert!(!client.is_authenticated());
    // Client-side deauthenticate transmits #removeAuthToken (no cid).
    client.deauthenticate().await;
    assert_eq!(conn.recv().await, r##"{"event":"#removeAuthToken"}"##);
}

#[tokio::test]
async fn pings_are_answered_per_protocol_version() {
    // v2: '' -> ''; '#1' is just a raw message.
    let fake = Fake::start().await;
    let (client, mut conn) = connected(&fake).await;
    conn.send("#1").await;
    conn.send("").await;
    assert_eq!(conn.recv().await, "");
    client.transmit("after", &1).expect("transmit");
    assert_eq!(conn.recv().await, r#"{"event":"after","data":1}"#);

    // v1: '#1' -> '#2'; '' is a raw message.
    let fake = Fake::start().await;
    let mut opts = fake.opts();
    opts.protocol_version = ProtocolVersion::V1;
    let pending = spawn_connect(opts);
    let mut conn = fake.accept().await;
    conn.handshake(ok_status()).await;
    let client = timeout(T, pending)
        .await
        .expect("in time")
        .expect("join")
        .expect("connect");
    conn.send("").await;
    conn.send("#1").await;
    assert_eq!(conn.recv().await, "#2");
    client.transmit("after", &2).expect("transmit");
    assert_eq!(conn.recv().await, r#"{"event":"after","data":2}"#);
}

#[tokio::test]
async fn handshake_rejection_is_reported_and_closes_with_its_status_code() {
    let fake = Fake::start().await;
    let pending = spawn_connect(fake.opts());
    let mut conn = fake.accept().await;
    conn.handshake(
        json!({"error": {"message": "go away", "name": "HandshakeDenied", "statusCode": 4501}}),
    )
    .await;
    let err = timeout(T, pending)
        .await
        .expect("in time")
        .expect("join")
        .expect_err("rejected");
    match err {
        ClientError::Handshake(e) => {
            assert_eq!(e.name(), "HandshakeDenied");
            assert_eq!(e.message(), "go away");
            assert_eq!(e.get("statusCode"), Some(&json!(4501)));
        }
        other => panic!("expected Handshake, got {other:?}"),
    }
    assert_eq!(conn.recv_close().await, (4501, String::new()));
}

#[tokio::test]
async fn handshake_timeout_aborts_with_4003() {
    let fake = Fake::start().await;
    let mut opts = fake.opts();
    opts.ack_timeout = Duration::from_millis(300);
    let pending = spawn_connect(opts);
    let mut conn = fake.accept().await;
    let hs = conn.recv_json().await;
    assert_eq!(
        hs,
        json!({"event":"#handshake","data":{"authToken":null},"cid":1})
    );
    let err = timeout(T, pending)
        .await
        .expect("in time")
        .expect("join")
        .expect_err("timeout");
    match err {
        ClientError::ConnectAbort { code, reason } => {
            assert_eq!(code, 4003);
            assert_eq!(
                reason,
                "TimeoutError: Event response for #handshake event timed out"
            );
        }
        other => panic!("expected ConnectAbort, got {other:?}"),
    }
    assert_eq!(conn.recv_close().await, (4003, String::new()));
}

#[tokio::test]
async fn missing_ping_timeout_closes_4000_and_reconnects_at_once() {
    let fake = Fake::start().await;
    let mut opts = fake.opts();
    opts.backoff.initial_delay = Duration::from_secs(10); // not used for 4000's first retry
    let pending = spawn_connect(opts);
    let mut conn = fake.accept().await;
    // Like the observation in protocol.md 3.1: {"rid":1,"data":{"id":"min"}}.
    conn.handshake(json!({"data": {"id": "min"}})).await;
    let client = timeout(T, pending)
        .await
        .expect("in time")
        .expect("join")
        .expect("connect");
    assert_eq!(conn.recv_close().await, (4000, String::new()));
    // The reconnect comes at once, with the call-id counter continuing.
    let mut second = fake.accept().await;
    let hs = second.recv_json().await;
    assert_eq!(
        hs,
        json!({"event":"#handshake","data":{"authToken":null},"cid":2})
    );
    second
        .send(r#"{"rid":2,"data":{"id":"second","pingTimeout":30000,"isAuthenticated":false}}"#)
        .await;
    let deadline = tokio::time::Instant::now() + T;
    while client.id().as_deref() != Some("second") {
        assert!(tokio::time::Instant::now() < deadline, "not reconnected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(client.state(), ConnectionState::Open);
}

#[tokio::test]
async fn reconnect_sends_the_stored_token_and_resubscribes_before_connect() {
    let fake = Fake::start().await;
    let (client, mut conn) = connected(&fake).await;
    // Subscribe: acked by the fake server.
    let c = client.clone();
    let sub = tokio::spawn(async move { c.subscribe("room").await });
    assert_eq!(
        conn.recv_json().await,
        json!({"event":"#subscribe","data":{"channel":"room"},"cid":2})
    );
    conn.send(r#"{"rid":2}"#).await;
    let mut room = timeout(T, sub)
        .await
        .expect("in time")
        .expect("join")
        .expect("subscribed");
    conn.send(r##"{"event":"#setAuthToken","data":{"token":"h.eyJ1IjoxfQ.s"}}"##)
        .await;
    conn.send(r##"{"event":"#publish","data":{"channel":"room","data":"p1"}}"##)
        .await;
    assert_eq!(
        timeout(T, room.next()).await.expect("in time"),
        Some(json!("p1"))
    );
    assert!(client.is_authenticated());

    // An invoke in flight when the server closes fails with BadConnection.
    let c = client.clone();
    let inflight = tokio::spawn(async move { c.invoke_value("slow", None).await });
    assert_eq!(conn.recv_json().await, json!({"event":"slow","cid":3}));
    conn.close(4100, "restarting").await;
    let err = timeout(T, inflight)
        .await
        .expect("in time")
        .expect("join")
        .expect_err("bad");
    assert!(
        matches!(&err, InvokeError::BadConnection { code: 4100, reason, .. } if reason == "restarting"),
        "{err:?}"
    );
    assert!(!room.is_subscribed(), "pending while disconnected");

    // Reconnect: the stored token goes into the handshake, then #subscribe, then Connect.
    let mut events = client.events();
    let mut second = fake.accept().await;
    assert_eq!(
        second.recv_json().await,
        json!({"event":"#handshake","data":{"authToken":"h.eyJ1IjoxfQ.s"},"cid":4})
    );
    second
        .send(r#"{"rid":4,"data":{"id":"two","pingTimeout":30000,"isAuthenticated":true}}"#)
        .await;
    assert_eq!(
        second.recv_json().await,
        json!({"event":"#subscribe","data":{"channel":"room"},"cid":5})
    );
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|e| matches!(e, ClientEvent::Connect { .. }))
    {
        seen.push(
            timeout(T, events.recv())
                .await
                .expect("in time")
                .expect("event"),
        );
    }
    assert_eq!(
        seen,
        vec![
            ClientEvent::Connecting,
            ClientEvent::Authenticate {
                signed_token: "h.eyJ1IjoxfQ.s".into()
            },
            ClientEvent::Connect {
                id: "two".into(),
                is_authenticated: true,
                auth_error: None,
                ping_timeout: Duration::from_secs(30),
            },
        ]
    );
    second.send(r#"{"rid":5}"#).await;
    second
        .send(r##"{"event":"#publish","data":{"channel":"room","data":"p2"}}"##)
        .await;
    assert_eq!(
        timeout(T, room.next()).await.expect("in time"),
        Some(json!("p2"))
    );
    assert!(room.is_subscribed());

    // A subscribe refusal after a reconnect drops the channel with SubscribeFail.
    second.close(4101, "").await;
    let mut third = fake.accept().await;
    third.handshake(ok_status()).await; // token no longer accepted: is_authenticated false
    let sub = third.recv_json().await;
    let cid = sub["cid"].as_u64().expect("cid");
    third
        .send(&json!({"rid": cid, "error": {"message": "denied", "name": "SubDenied"}}).to_string())
        .await;
    let ev = loop {
        let ev = timeout(T, events.recv())
            .await
            .expect("in time")
            .expect("event");
        if matches!(ev, ClientEvent::SubscribeFail { .. }) {
            break ev;
        }
    };
    assert_eq!(
        ev,
        ClientEvent::SubscribeFail {
            channel: "room".into(),
            error: ScError::new("SubDenied", "denied")
        }
    );
    assert_eq!(timeout(T, room.next()).await.expect("in time"), None);
    assert!(client.subscriptions(true).is_empty());
}

#[tokio::test]
async fn connect_timeout_aborts_with_4007() {
    // A listener that never accepts: TCP connects (backlog), the upgrade never completes.
    let fake = Fake::start().await;
    let mut opts = fake.opts();
    opts.connect_timeout = Duration::from_millis(300);
    let err = timeout(T, Client::connect_with(opts))
        .await
        .expect("in time")
        .expect_err("timeout");
    match err {
        ClientError::ConnectAbort { code, reason } => {
            assert_eq!(code, 4007);
            assert_eq!(reason, "Client connection establishment timed out");
        }
        other => panic!("expected ConnectAbort, got {other:?}"),
    }
}

#[tokio::test]
async fn buffered_calls_expire_after_ack_timeout() {
    let fake = Fake::start().await;
    let mut opts = fake.opts();
    opts.ack_timeout = Duration::from_millis(300);
    let pending = spawn_connect(opts);
    let mut conn = fake.accept().await;
    conn.handshake(ok_status()).await;
    let client = timeout(T, pending)
        .await
        .expect("in time")
        .expect("join")
        .expect("connect");
    let mut events = client.events();
    conn.close(4100, "").await;
    drop(conn);

    // The reconnect's TCP connection is accepted but its upgrade is held back.
    let (stream, _) = timeout(T, fake.listener.accept())
        .await
        .expect("reconnect in time")
        .expect("accept");
    assert_eq!(client.state(), ConnectionState::Connecting);
    client.transmit("old", &1).expect("buffered");
    let started = tokio::time::Instant::now();
    let err = client
        .invoke_value("late", None)
        .await
        .expect_err("times out in the buffer");
    assert!(
        matches!(&err, InvokeError::Timeout { event } if event == "late"),
        "{err:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(290));

    // Now let it connect: neither expired item is sent; a fresh one is.
    let ws = tokio_tungstenite::accept_async(stream)
        .await
        .expect("upgrade");
    let mut conn = Conn { ws };
    conn.handshake(ok_status()).await;
    let mut connected = false;
    while !connected {
        let ev = timeout(T, events.recv())
            .await
            .expect("in time")
            .expect("event");
        connected = matches!(ev, ClientEvent::Connect { .. });
    }
    client.transmit("fresh", &2).expect("transmit");
    assert_eq!(conn.recv().await, r#"{"event":"fresh","data":2}"#);
}
