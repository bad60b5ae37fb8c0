//! Serves the chat: the page in `public/` at `/`, the browser client at `/socketcluster.js`, the
//! realtime endpoint at `/socketcluster/`, on `SC_PORT` (default 8000).

fn main() -> sc_core::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        // Colours on a terminal only: a log redirected to a file stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let public = std::env::var("SC_PUBLIC_DIR").unwrap_or_else(|_| "public".into());
    sc_core::SocketCluster::builder()
        .auth_key_from_env("SC_AUTH_KEY")
        .app({{crate}}::app())
        .serve_dir(public)
        .on_listening(|addr| println!("{{name}} listening on http://{addr}/"))
        .run()
}
