// `handlers![]` gives an `App`: pass it to the builder, merge it, add state.
use sc_core::prelude::*;

#[event("a")]
async fn a() {}

#[event("b")]
async fn b() {}

#[middleware(invoke)]
async fn log(EventName(event): EventName) {
    let _ = event;
}

#[tokio::main]
async fn main() {
    let server = SocketCluster::builder()
        .ignore_env()
        .port(0)
        .host([127, 0, 0, 1].into())
        .handlers(handlers![a, log])
        .app(handlers![b].state(1u8))
        .bind()
        .await
        .expect("valid app");
    let _ = server.local_addr();
}
