//! `echo`: the reference app that the benchmarks and compatibility tests run against. It mirrors
//! the Node reference server of the benchmarks and does nothing else, so comparisons are fair.
//!
//! Run: `cargo run --release -p echo` (listens on `SC_PORT`, default 8000, at `/socketcluster/`).
//!
//! - invoke `echo`: answers with its data (passed through as text, never parsed);
//! - invoke `login`: sets an auth token whose claims are the data (an object), answers no data;
//! - clients may subscribe and publish to any channel;
//! - the auth key comes from `SC_AUTH_KEY` when set;
//! - `SC_WORKERS`, `SC_BROKERS`, `SC_BALANCERS` turn the same binary into a cluster;
//! - `SC_HISTORY_SIZE` (publications kept per channel) and `SC_HISTORY_TTL` (seconds, default
//!   300) turn history and recovery on for every channel (sc-core's server-wide default: no
//!   code here), to measure what history costs;
//! - `SC_PRESENCE=1` turns presence on for every channel (`SC_PRESENCE_JOIN_LEAVE=1` adds
//!   join/leave events), the same way: clients ask with `#presence`.

use sc_core::prelude::*;
use serde_json::{Map, Value};

/// Passes the payload through as the client's text: no JSON tree in or out (`RawJson`).
#[event("echo")]
async fn echo(data: RawJson) -> RawJson {
    data
}

#[event("login")]
async fn login(socket: Socket, Json(claims): Json<Map<String, Value>>) -> Result<(), ScError> {
    socket.set_auth_token(&claims).await?;
    Ok(())
}

fn main() -> sc_core::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    SocketCluster::builder()
        .auth_key_from_env("SC_AUTH_KEY")
        .handlers(handlers![echo, login])
        .run()
}
