//! `redis`: the chat app (templates/app) as one node of many sharing channels through Redis.
//! Run two nodes (Redis on 127.0.0.1:6379, or set `SC_REDIS_URL`):
//!
//! `SC_PORT=8000 cargo run -p redis-example & SC_PORT=8001 cargo run -p redis-example`
//!
//! then open http://127.0.0.1:8000/ and http://127.0.0.1:8001/: the two pages chat across nodes.
//! Both nodes need the same `SC_AUTH_KEY` for a token from one to be valid on the other.

#[path = "../../../templates/app/src/lib.rs"]
mod app;

fn main() -> sc_core::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    sc_core::SocketCluster::builder()
        .redis_url("redis://127.0.0.1:6379")
        .auth_key_from_env("SC_AUTH_KEY")
        .app(app::app())
        .serve_dir(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../templates/app/public"
        ))
        .on_listening(|addr| println!("redis node listening on http://{addr}/"))
        .run()
}
