//! The HTTP side of a server: the realtime endpoint (origin check, `handshake_ws` middleware, the
//! WebSocket upgrade handed to the session), `/health`, `/metrics` (on the public port, the admin
//! address, or both), the browser client at `/socketcluster.js`, the app's own routes and static
//! files.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Request as HttpRequest, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;

use super::ServerState;
use crate::app::handler::{Origin, Parts, Request};
use crate::app::middleware::MiddlewareKind;
use crate::session;
use crate::socket::KeptRequest;

/// The server's router: the app's routes, the realtime ones, static files.
pub(super) fn build(state: Arc<ServerState>, user: Router, serve_dir: Option<PathBuf>) -> Router {
    let path = state.ctx.shared.config.path.clone();
    let mut realtime = Router::new()
        .route(&path, any(upgrade))
        .route("/socketcluster.js", axum::routing::get(browser_client))
        .route(
            "/socketcluster.d.ts",
            axum::routing::get(browser_client_types),
        )
        // The page's contract module: always the running server's own, never a file in the
        // static dir, so a stale `sc-types.js` on disk cannot tell every fresh page to reload
        // for good; a page loaded before the server changed still holds the old hash.
        .route("/sc-types.js", axum::routing::get(contract_module));
    if state.ctx.shared.config.serve_types {
        realtime = realtime.route("/sc-types.d.ts", axum::routing::get(contract_types));
    }
    if state.ctx.shared.config.admin_on_public_port {
        realtime = realtime
            .route("/health", axum::routing::get(health))
            .route("/metrics", axum::routing::get(metrics));
    }
    let mut router = user.merge(realtime.with_state(state));
    if let Some(dir) = serve_dir {
        router = router.fallback_service(tower_http::services::ServeDir::new(dir));
    }
    // The reference's `ws` server answers an upgrade for any other path with 400.
    router.layer(axum::middleware::from_fn(
        move |req: HttpRequest, next: Next| {
            let path = path.clone();
            async move {
                let is_upgrade = req
                    .headers()
                    .get(header::UPGRADE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
                if is_upgrade && req.uri().path() != path {
                    return (StatusCode::BAD_REQUEST, "Bad Request").into_response();
                }
                next.run(req).await
            }
        },
    ))
}

/// The admin address's router: `/health` and `/metrics`, nothing else (404).
pub(super) fn admin(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/health", axum::routing::get(health))
        .route("/metrics", axum::routing::get(metrics))
        .with_state(state)
}

/// tungstenite's read buffer per socket. It preallocates this much (128 KiB by default) and keeps
/// it for the socket's life; a frame larger than it still arrives whole (the buffer grows to fit).
/// Reads from the connection are not bounded by it: `read_ahead` takes up to 8 KiB per `recv` and
/// hands tungstenite the rest from there, so it only needs to hold the frames an idle socket gets
/// (pings, pongs, a subscribe). 128 B rather than 512: 400 B less per idle socket, the same
/// instructions per invoke, delivery and handshake (bench/results/idle-memory.md).
const READ_BUFFER_SIZE: usize = 128;

/// The size of a request's head as sent: request line, headers, blank line. A socket keeps its
/// upgrade request's headers for its whole life, so this is bounded (`max_upgrade_header_bytes`).
fn head_len(req: &HttpRequest) -> usize {
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let line = req.method().as_str().len() + target + " HTTP/1.1\r\n ".len();
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + ": \r\n".len())
        .sum();
    line + headers + 2
}

/// The browser client (`sc-core/assets/socketcluster.js`), compiled into the binary.
pub const BROWSER_CLIENT: &str = include_str!("../../assets/socketcluster.js");

/// `/socketcluster.js`: the browser client, an ES module.
async fn browser_client() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        BROWSER_CLIENT,
    )
        .into_response()
}

/// The browser client's declarations (`sc-core/assets/socketcluster.d.ts`): `create()` typed by
/// a generated contract.
pub const BROWSER_CLIENT_TYPES: &str = include_str!("../../assets/socketcluster.d.ts");

/// `/socketcluster.d.ts`: the browser client's declarations.
async fn browser_client_types() -> Response {
    typescript(BROWSER_CLIENT_TYPES.to_owned())
}

/// `/sc-types.d.ts`: this app's contract (`App::typescript`), as `sc types` writes it.
async fn contract_types(State(state): State<Arc<ServerState>>) -> Response {
    let text = match &state.ctx.app.contract {
        Some(files) => files.declarations.clone(),
        None => state.ctx.app.typescript(),
    };
    typescript(text)
}

/// `/sc-types.js`: this app's contract module (`App::typescript_module`).
async fn contract_module(State(state): State<Arc<ServerState>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        match &state.ctx.app.contract {
            Some(files) => files.module.clone(),
            None => state.ctx.app.typescript_module(),
        },
    )
        .into_response()
}

fn typescript(body: String) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/typescript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `/health`: 200 with this process's role and connection count while it serves. Constant time
/// and lock-free (the count is an atomic), so polling it often costs the sockets nothing.
async fn health(State(state): State<Arc<ServerState>>) -> Response {
    let body = serde_json::json!({
        "status": "ok",
        "role": state.role,
        "pid": std::process::id(),
        "connections": state.ctx.shared.clients_count(),
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `/metrics`: Prometheus text; in a cluster, every process's counters (from the master).
async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    let cluster = match &state.cluster_metrics {
        Some(ask) => ask().await,
        None => None,
    };
    let text = match cluster {
        Some(text) => text,
        None => {
            let mut processes = std::collections::BTreeMap::new();
            processes.insert(("worker".to_string(), 0), state.ctx.shared.snapshot());
            crate::metrics::render(&processes, &Default::default())
        }
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn upgrade(
    State(state): State<Arc<ServerState>>,
    ws: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    req: HttpRequest,
) -> Response {
    // Absent behind balancers (Unix socket): the peer is the balancer, not the client.
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let max_head = state.ctx.shared.config.max_upgrade_header_bytes;
    let head = head_len(&req);
    if head > max_head {
        return (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("Request headers are {head} bytes; the server accepts at most {max_head} (max_upgrade_header_bytes)"),
        )
            .into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if !state.origins.allows(origin) {
        return (
            StatusCode::FORBIDDEN,
            format!(
                "Failed to authorize socket handshake - Invalid origin: {}",
                origin.unwrap_or("undefined")
            ),
        )
            .into_response();
    }
    let request = KeptRequest::new(req.uri(), req.headers(), remote);
    let ctx = state.ctx.clone();
    if ctx.app.middleware.has(MiddlewareKind::HandshakeWs) {
        let parts = Parts {
            origin: Origin::Upgrade {
                shared: ctx.shared.clone(),
                request: Arc::new(request.to_info()),
            },
            kind: MiddlewareKind::HandshakeWs,
            event: None,
            channel: None,
            auth: None,
            auth_token_expired: None,
            wait_for_auth: false,
        };
        if let Err(block) = ctx
            .app
            .middleware
            .run(
                MiddlewareKind::HandshakeWs,
                Request {
                    parts,
                    data: None::<serde_json::Value>.into(),
                },
            )
            .await
        {
            let error = block.client_error(MiddlewareKind::HandshakeWs);
            return (StatusCode::UNAUTHORIZED, error.message().to_owned()).into_response();
        }
    }
    let max = ctx.shared.config.max_payload;
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER_SIZE)
        // A task of its own: axum's upgrade task (its upgrade and handshake state included) ends
        // here instead of living, and holding memory, as long as the socket.
        .on_upgrade(move |socket| async move {
            tokio::spawn(session::run(socket, ctx, request));
        })
}
