//! Run: `SC_AUTH_KEY=change-me cargo run -p auth` (tokens live `TOKEN_SECONDS`, default 3600).
//! See `src/lib.rs` for the events and the protected channel.

fn main() -> sc_core::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let seconds = std::env::var("TOKEN_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3600);
    sc_core::SocketCluster::builder()
        .auth_key_from_env("SC_AUTH_KEY")
        .app(auth::app(seconds))
        .on_listening(|addr| println!("auth listening on ws://{addr}/socketcluster/"))
        .run()
}
