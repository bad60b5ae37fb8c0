//! Plain HTTP next to the realtime endpoint, upgrade refusals, and startup validation.

mod common;

use std::time::Duration;

use axum::routing::get;
use sc_core::prelude::*;
use sc_core::server::Builder;
use sc_core::testing::{self, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A test server whose upgraded connections, which never send `#handshake` here, are dropped
/// after 300 ms.
async fn start(builder: Builder) -> TestServer {
    TestServer::start(builder.handshake_timeout(Duration::from_millis(300))).await
}

/// Sends one raw HTTP/1.1 request and returns the status code and body (read by Content-Length,
/// so kept-alive connections do not stall the test).
async fn http(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

fn get_req(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n")
}

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

fn upgrade_req(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{UPGRADE}{extra}\r\n")
}

#[tokio::test]
async fn serves_user_routes_and_a_static_directory_beside_the_realtime_path() {
    let dir = std::env::temp_dir().join(format!("sc-static-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("hello.txt"), "static hello").expect("write file");
    let router = axum::Router::new().route("/api/ping", get(|| async { "pong" }));
    let server = start(testing::builder().router(router).serve_dir(&dir)).await;
    let addr = server.addr();

    assert_eq!(
        http(addr, &get_req("/api/ping", "")).await,
        (200, "pong".into())
    );
    let (status, body) = http(addr, &get_req("/hello.txt", "")).await;
    assert_eq!((status, body.as_str()), (200, "static hello"));
    assert_eq!(http(addr, &get_req("/missing.txt", "")).await.0, 404);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn upgrade_on_the_realtime_path_switches_protocols_and_elsewhere_is_400() {
    let server = start(testing::builder()).await;
    let addr = server.addr();
    let (status, _) = http(addr, &upgrade_req("/socketcluster/", "")).await;
    assert_eq!(status, 101);
    let (status, _) = http(addr, &upgrade_req("/socketcluster", "")).await;
    assert_eq!(
        status, 400,
        "the path must match exactly, trailing slash included"
    );
    let (status, _) = http(addr, &upgrade_req("/other/", "")).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn origins_are_checked_before_the_upgrade() {
    let server = start(testing::builder().origins("good.example:*")).await;
    let addr = server.addr();
    let (status, _) = http(
        addr,
        &upgrade_req("/socketcluster/", "Origin: https://good.example\r\n"),
    )
    .await;
    assert_eq!(status, 101);
    let (status, body) = http(
        addr,
        &upgrade_req("/socketcluster/", "Origin: http://evil.example\r\n"),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        "Failed to authorize socket handshake - Invalid origin: http://evil.example"
    );
    let (status, _) = http(addr, &upgrade_req("/socketcluster/", "")).await;
    assert_eq!(
        status, 403,
        "a missing Origin is refused once a list is set"
    );
}

#[tokio::test]
async fn handshake_ws_middleware_block_is_http_401_with_the_message() {
    async fn gate(req: RequestInfo) -> Result<(), Block> {
        match req.query_param("key").as_deref() {
            Some("open") => Ok(()),
            _ => Err(Block::new(ScError::new("Denied", "bad key"))),
        }
    }
    let app = App::new().middleware(MiddlewareKind::HandshakeWs, gate);
    let server = start(testing::builder().app(app)).await;
    let addr = server.addr();
    assert_eq!(
        http(addr, &upgrade_req("/socketcluster/?key=open", ""))
            .await
            .0,
        101
    );
    assert_eq!(
        http(addr, &upgrade_req("/socketcluster/?key=no", "")).await,
        (401, "bad key".into())
    );
}

/// A socket keeps its upgrade request in a compact form (issue 19, idle memory): what handlers
/// get back from it after the handshake is the request as it came, repeated headers and bytes
/// that are not UTF-8 included, without the headers that only negotiated the upgrade.
#[tokio::test]
async fn handlers_see_the_whole_upgrade_request_for_the_sockets_life() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    async fn whoami(socket: Socket, req: RequestInfo) -> Json<serde_json::Value> {
        let kept = socket.request();
        let text = |name: &str| -> Vec<String> {
            req.headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect()
        };
        Json(serde_json::json!({
            "uri": req.uri.to_string(),
            "room": req.query_param("room"),
            "cookie": text("cookie"),
            "x-latin1": req.headers.get("x-latin1").map(|v| v.as_bytes().to_vec()),
            "user-agent": text("user-agent"),
            "key": text("sec-websocket-key"),
            "upgrade": text("upgrade"),
            "loopback": req.remote_addr.map(|a| a.ip().is_loopback()),
            "same": kept.uri == req.uri
                && kept.headers == req.headers
                && kept.remote_addr == req.remote_addr,
        }))
    }
    let server = TestServer::start_app(App::new().event("whoami", whoami)).await;
    let mut request = format!("{}?room=a%20b&x=1", server.url())
        .into_client_request()
        .expect("request");
    let headers = request.headers_mut();
    headers.append("cookie", "a=1; b=2".parse().expect("value"));
    headers.append("cookie", "c=3".parse().expect("value"));
    headers.insert(
        "x-latin1",
        axum::http::HeaderValue::from_bytes(b"caf\xe9: 12:00").expect("value"),
    );
    headers.insert("user-agent", "Mozilla/5.0 (test)".parse().expect("value"));
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket connects");
    let mut replies = Vec::new();
    for text in [
        r##"{"event":"#handshake","data":{},"cid":1}"##,
        r#"{"event":"whoami","cid":2}"#,
        r#"{"event":"whoami","cid":3}"#,
    ] {
        let reply = common::raw_call(&mut ws, text).await;
        replies.push(serde_json::from_str::<serde_json::Value>(&reply).expect("JSON"));
    }
    let expected = serde_json::json!({
        "uri": "/socketcluster/?room=a%20b&x=1",
        "room": "a b",
        "cookie": ["a=1; b=2", "c=3"],
        "x-latin1": b"caf\xe9: 12:00".to_vec(),
        "user-agent": ["Mozilla/5.0 (test)"],
        "key": [],
        "upgrade": [],
        "loopback": true,
        "same": true,
    });
    // The second call reads what the first one's `socket.request()` parsed and kept.
    assert_eq!(replies[1]["data"], expected, "{replies:?}");
    assert_eq!(replies[2]["data"], expected, "{replies:?}");
    server.stop().await;
}

#[tokio::test]
async fn duplicate_event_names_fail_at_startup_naming_both_locations() {
    async fn a() {}
    async fn b() {}
    let app = App::new().event("x", a).event("x", b);
    let err = SocketCluster::builder()
        .ignore_env()
        .port(0)
        .app(app)
        .bind()
        .await
        .expect_err("duplicate must fail");
    let msg = err.to_string();
    assert!(msg.contains("event 'x' is registered twice"), "{msg}");
    assert_eq!(msg.matches("tests/http.rs:").count(), 2, "{msg}");
}

#[tokio::test]
async fn reserved_event_names_and_bad_options_fail_at_startup() {
    async fn a() {}
    let err = SocketCluster::builder()
        .ignore_env()
        .port(0)
        .app(App::new().event("#publish", a))
        .bind()
        .await
        .expect_err("reserved name must fail");
    assert!(err.to_string().contains("must not start with '#'"), "{err}");

    let err = SocketCluster::builder()
        .ignore_env()
        .port(0)
        .ping_interval(Duration::from_secs(10))
        .ping_timeout(Duration::from_secs(5))
        .bind()
        .await
        .expect_err("ping timeout shorter than interval must fail");
    assert!(err.to_string().contains("ping_timeout"), "{err}");
}

/// Slowloris: connections that never finish their HTTP request are closed after the handshake
/// timeout, and while they hang a real request is still served at once.
#[tokio::test]
async fn connections_that_never_finish_their_request_are_dropped_and_do_not_starve_others() {
    let server = start(
        testing::builder().router(axum::Router::new().route("/ping", get(|| async { "pong" }))),
    )
    .await;
    let addr = server.addr();
    let mut idle = Vec::new();
    for i in 0..200 {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        if i % 2 == 1 {
            // Half send a partial request head, half send nothing.
            s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("write");
        }
        idle.push(s);
    }
    let (status, body) = http(
        addr,
        "GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "pong"));
    // Every idle connection is closed by the server after the 300 ms handshake timeout.
    for mut s in idle {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the server closes the idle connection")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without a response");
    }
}

#[tokio::test]
async fn an_upgrade_with_oversized_headers_is_431_and_others_connect() {
    let server = start(testing::builder()).await;
    let addr = server.addr();
    let before = server.client().await;
    let big = format!("X-Big: {}\r\n", "a".repeat(300 * 1024));
    let (status, body) = http(addr, &upgrade_req("/socketcluster/", &big)).await;
    assert_eq!(status, 431, "{body}");
    assert!(body.contains("max_upgrade_header_bytes"), "{body}");
    // Just under the default 16 KiB still upgrades, and other clients are unaffected.
    let fits = format!("X-Big: {}\r\n", "a".repeat(15 * 1024));
    assert_eq!(
        http(addr, &upgrade_req("/socketcluster/", &fits)).await.0,
        101
    );
    assert_eq!(before.state(), sc_core::client::ConnectionState::Open);
    let _after = server.client().await;
}

/// `/health`'s `connections`.
async fn health_connections(addr: std::net::SocketAddr) -> u64 {
    let (status, body) = http(addr, &get_req("/health", "")).await;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("json");
    health["connections"].as_u64().expect("connections")
}

/// A process on its own supervises nothing: it reports `single`, not `master`.
#[tokio::test]
async fn health_reports_a_single_process_as_single() {
    let server = start(testing::builder()).await;
    let (status, body) = http(server.addr(), &get_req("/health", "")).await;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(health["role"], "single", "{body}");
}

#[tokio::test]
async fn health_and_metrics_move_to_the_admin_address_and_leave_the_public_port() {
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let server = start(
        testing::builder()
            .admin_addr(Some(local))
            .admin_on_public_port(false),
    )
    .await;
    let admin = server.admin_addr().expect("admin address bound");
    assert_ne!(admin, server.addr());
    assert_eq!(health_connections(admin).await, 0);
    let (status, body) = http(admin, &get_req("/metrics", "")).await;
    assert_eq!(status, 200);
    assert!(body.contains("sc_connections{"), "{body}");
    // Only those two: the realtime endpoint and the browser client stay on the public port.
    assert_eq!(http(admin, &get_req("/socketcluster.js", "")).await.0, 404);
    assert_eq!(
        http(admin, &upgrade_req("/socketcluster/", "")).await.0,
        404
    );
    for path in ["/health", "/metrics"] {
        assert_eq!(
            http(server.addr(), &get_req(path, "")).await.0,
            404,
            "{path}"
        );
    }
    assert_eq!(
        http(server.addr(), &get_req("/socketcluster.js", ""))
            .await
            .0,
        200
    );

    // By default the public port keeps serving them as well.
    let both = start(testing::builder().admin_addr(Some(local))).await;
    for addr in [both.addr(), both.admin_addr().expect("admin")] {
        assert_eq!(http(addr, &get_req("/metrics", "")).await.0, 200);
        assert_eq!(health_connections(addr).await, 0);
    }
    assert_eq!(start(testing::builder()).await.admin_addr(), None);
}

/// `sc_subscriptions` from `/metrics`.
async fn metrics_subscriptions(addr: std::net::SocketAddr) -> u64 {
    let (status, body) = http(addr, &get_req("/metrics", "")).await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find(|l| l.starts_with("sc_subscriptions{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("sc_subscriptions sample")
}

/// Polls `/health` and `/metrics` until they report `connections` and `subscriptions` (a
/// disconnect reaches the server a moment after the client's `disconnect` returns); a value
/// outside `allowed` fails at once.
async fn wait_counts(
    addr: std::net::SocketAddr,
    (connections, subscriptions): (u64, u64),
    allowed: std::ops::RangeInclusive<u64>,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = (
            health_connections(addr).await,
            metrics_subscriptions(addr).await,
        );
        if now == (connections, subscriptions) {
            return;
        }
        assert!(allowed.contains(&now.0), "{now:?}, expected {connections}");
        assert!(tokio::time::Instant::now() < deadline, "still {now:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn health_and_metrics_count_connects_subscriptions_and_disconnects() {
    let server = start(testing::builder()).await;
    let addr = server.addr();
    let mut clients = Vec::new();
    let mut subscriptions = Vec::new();
    for i in 0..6 {
        let c = server.client().await;
        subscriptions.push(c.subscribe("a").await.expect("subscribe a"));
        if i % 2 == 0 {
            subscriptions.push(c.subscribe("b").await.expect("subscribe b"));
        }
        clients.push(c);
    }
    wait_counts(addr, (6, 9), 0..=6).await;
    assert_eq!(server.handle().clients_count(), 6);
    clients[5].unsubscribe("a");
    wait_counts(addr, (6, 8), 6..=6).await;
    // Clients 0 and 1 hold a, b and a.
    for c in clients.drain(..2) {
        c.disconnect().await;
    }
    wait_counts(addr, (4, 5), 4..=6).await;
    assert_eq!(server.handle().clients().len(), 4);
    drop(subscriptions);
    drop(clients);
    wait_counts(addr, (0, 0), 0..=4).await;
}

#[tokio::test]
async fn admin_and_auth_options_are_validated_at_startup() {
    let taken = std::net::SocketAddr::from(([127, 0, 0, 1], 8000));
    let err = SocketCluster::builder()
        .ignore_env()
        .port(8000)
        .admin_addr(Some(taken))
        .bind()
        .await
        .expect_err("admin on the public port");
    assert!(err.to_string().contains("admin_addr"), "{err}");
    let err = SocketCluster::builder()
        .ignore_env()
        .port(0)
        .auth_verify_concurrency(0)
        .bind()
        .await
        .expect_err("no verification could run");
    assert!(err.to_string().contains("auth_verify_concurrency"), "{err}");
    // Not under a supervisor, the admin address is exclusive: a second server on it fails.
    let first = start(testing::builder().admin_addr(Some(([127, 0, 0, 1], 0).into()))).await;
    let taken = first.admin_addr().expect("admin");
    let err = testing::builder()
        .admin_addr(Some(taken))
        .bind()
        .await
        .expect_err("admin address in use");
    assert!(err.to_string().contains(&taken.to_string()), "{err}");
}
