//! `cluster`: the chat app (templates/app) as a supervised cluster, configured in code: a master,
//! 2 workers and 1 broker process. Run: `cargo run -p cluster`, open http://127.0.0.1:8000/.
//! Kill a worker (`kill -9 <pid>`, pids in the log) and watch it come back while pages reconnect.

#[path = "../../../templates/app/src/lib.rs"]
mod app;

fn main() -> sc_core::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    sc_core::SocketCluster::builder()
        .workers(2)
        .brokers(1)
        .app(app::app())
        .serve_dir(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../templates/app/public"
        ))
        .on_listening(|addr| println!("cluster listening on http://{addr}/"))
        .run()
}
