//! `chat`: the main example. It is the app `sc new` creates (`templates/app`, compiled here from
//! the template's own source so the two cannot drift): a login that issues a token, a `chat`
//! event publishing on the typed channel `rooms/{id}`, `history`, a subscribe middleware that
//! keeps rooms for logged-in users, and the page `templates/app/public/index.html` at `/`.
//!
//! Run: `cargo run -p chat`, open http://127.0.0.1:8000/ in two tabs, log in with two names and
//! chat. `SC_WORKERS=2 cargo run -p chat` runs the same binary as a cluster; `SC_REDIS_URL` joins
//! several nodes.

#[path = "../../../templates/app/src/lib.rs"]
mod app;

fn main() -> sc_core::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let public = std::env::var("SC_PUBLIC_DIR").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../templates/app/public").to_owned()
    });
    sc_core::SocketCluster::builder()
        .auth_key_from_env("SC_AUTH_KEY")
        .app(app::app())
        .serve_dir(public)
        .on_listening(|addr| println!("chat listening on http://{addr}/"))
        .run()
}
