//! An sc-core server in the test process, for the `sc bench` tests.

use sc_core::prelude::*;
use serde_json::Value;

async fn echo(Raw(data): Raw) -> Option<Value> {
    data
}

/// An sc-core server with `echo` in this process; its URL.
pub async fn start_server() -> String {
    let server = SocketCluster::builder()
        .ignore_env()
        .host([127, 0, 0, 1].into())
        .port(0)
        .app(App::new().event("echo", echo))
        .bind()
        .await
        .expect("server binds");
    let url = format!("ws://{}/socketcluster/", server.local_addr());
    tokio::spawn(server.serve());
    url
}
