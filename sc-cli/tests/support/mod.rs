//! An sc-core server in the test process, for the `sc bench` tests.

use sc_core::prelude::*;
use sc_core::testing::TestServer;
use serde_json::Value;

async fn echo(Raw(data): Raw) -> Option<Value> {
    data
}

/// An sc-core server with `echo` in this process; it stops when dropped.
pub async fn start_server() -> TestServer {
    TestServer::start_app(App::new().event("echo", echo)).await
}
