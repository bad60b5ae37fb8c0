//! Starting a server: [`SocketCluster::builder`] collects options, the app, the auth key, the
//! broker engine and any plain-HTTP routes; [`Builder::bind`] validates everything (one clear
//! sentence per mistake), builds the shared state bottom up (registry and engine, exchange,
//! socket state, connection context) and binds; [`Server::serve`] runs until shutdown, closing
//! every socket with 1001 so clients come back to the next instance, then stops the engine.
//!
//! [`routes`] are the HTTP side (the realtime endpoint, `/health`, `/metrics`, the browser
//! client), [`http`] the accept loop, [`tls`] rustls, [`listener`] the listening socket. Which
//! process this is (a single one, a cluster's worker) is the process model's business: it hands
//! what it decided to the builder ([`Placement`]) before binding.

mod http;
mod key_source;
mod listener;
mod routes;
pub(crate) mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Extensions;
use axum::Router;

pub use routes::BROWSER_CLIENT;

use listener::Listener;
pub(crate) use listener::{take_inherited, Inherited};

use crate::app::handler::{FromRequestParts, Parts};
use crate::app::App;
use crate::auth::{AuthConfigError, AuthEngine, AuthKey, AuthOptions};
use crate::broker::{
    BoxFuture, BrokerEngine, BrokerError, ClusterBroker, DeliverySink, LocalBroker,
};
use crate::config::{Config, ConfigError, Origins};
use crate::metrics::Metrics;
use crate::protocol::{close, ProtocolVersion, ScError};
use crate::pubsub::exchange::Exchange;
use crate::pubsub::PubSub;
use crate::session::Context;
use crate::socket::{Shared, Socket};

/// How `/metrics` asks for the whole cluster's counters.
pub(crate) type ClusterMetrics = Arc<dyn Fn() -> BoxFuture<'static, Option<String>> + Send + Sync>;

/// What the process model decided about this process before it binds (defaults: one process on
/// its own).
#[derive(Default)]
pub(crate) struct Placement {
    /// `/health`'s role; `None`: `master`.
    pub(crate) role: Option<String>,
    /// The auth secret the master hands every worker, so a token signed by one verifies on all.
    pub(crate) cluster_secret: Option<AuthKey>,
    /// The broker processes' sockets (a cluster's worker with brokers): use them as the engine.
    pub(crate) broker_sockets: Option<Vec<PathBuf>>,
    /// A handler panic ends this process (`crash_worker_on_error` in a cluster's worker).
    pub(crate) exit_on_panic: bool,
    /// Where `/metrics` gets the cluster's counters.
    pub(crate) cluster_metrics: Option<ClusterMetrics>,
    /// The configuration was already read from the environment and validated.
    pub(crate) config_resolved: bool,
    /// The secret broker processes want in a worker's hello (a cluster's per-run secret).
    pub(crate) broker_secret: bytes::Bytes,
    /// A cluster's worker `i`: `Some(i)`, added to `admin_addr`'s port (the workers share the
    /// public port, but each needs an admin port of its own).
    pub(crate) admin_port_offset: Option<u16>,
}

/// A startup failure: the server did not start (what `main` returns through [`Result`]). Each
/// message is one sentence saying what to change. Errors a client sees on the wire are
/// [`ScError`]s instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// An option is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The auth key or algorithm is invalid.
    #[error("invalid auth configuration: {0}")]
    Auth(#[from] AuthConfigError),
    /// The app's registrations are inconsistent (e.g. an event registered twice).
    #[error("invalid app: {0}")]
    App(String),
    /// The port could not be bound.
    #[error("cannot listen on {addr}: {source}{hint}", hint = if source.kind() == std::io::ErrorKind::AddrInUse { " (another process uses this port: stop it or set SC_PORT)" } else { "" })]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The broker engine failed to start.
    #[error("the broker engine failed to start: {0}")]
    Broker(#[from] BrokerError),
    /// Serving failed.
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// `sc_core::Result`: what `main` returns.
pub type Result<T, E = StartupError> = std::result::Result<T, E>;

/// Entry point: `SocketCluster::builder().port(8000).app(app).run()`.
#[derive(Debug)]
pub struct SocketCluster;

impl SocketCluster {
    /// A builder with every option at its default.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

enum KeySource {
    Random,
    Given(AuthKey),
    Env(String),
}

/// Collects options; see [`Config`] for each option's meaning and default.
pub struct Builder {
    pub(crate) config: Config,
    app: App,
    router: Router,
    serve_dir: Option<PathBuf>,
    key: KeySource,
    algorithm: Option<jsonwebtoken::Algorithm>,
    engine: Option<Arc<dyn BrokerEngine>>,
    pub(crate) use_env: bool,
    pub(crate) on_listening: Option<Box<dyn FnOnce(SocketAddr) + Send>>,
    pub(crate) placement: Placement,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            config: Config::default(),
            app: App::new(),
            router: Router::new(),
            serve_dir: None,
            key: KeySource::Random,
            algorithm: None,
            engine: None,
            use_env: true,
            on_listening: None,
            placement: Placement::default(),
        }
    }
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty => $field:ident;)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.config.$field = value.into();
            self
        }
    )*};
}

impl Builder {
    setters! {
        /// TCP port (default 8000; 0 = any free port). `SC_PORT` overrides.
        port: u16 => port;
        /// Interface (default 0.0.0.0). `SC_HOST` overrides.
        host: std::net::IpAddr => host;
        /// Realtime endpoint path (default `/socketcluster/`). `SC_PATH` overrides.
        path: &str => path;
        /// Server invoke timeout (default 10 s). `SC_ACK_TIMEOUT` (ms) overrides.
        ack_timeout: Duration => ack_timeout;
        /// Ping interval (default 8 s). `SC_PING_INTERVAL` (ms) overrides.
        ping_interval: Duration => ping_interval;
        /// Pong timeout (default 30 s). `SC_PING_TIMEOUT` (ms) overrides.
        ping_timeout: Duration => ping_timeout;
        /// Disable pings and the pong watchdog (default false).
        ping_timeout_disabled: bool => ping_timeout_disabled;
        /// Handshake timeout (default 10 s). `SC_HANDSHAKE_TIMEOUT` (ms) overrides.
        handshake_timeout: Duration => handshake_timeout;
        /// Ping/pong protocol version (default V2). `SC_PROTOCOL_VERSION` overrides.
        protocol_version: ProtocolVersion => protocol_version;
        /// Allowed origins (default `*:*`). `SC_ORIGINS` overrides.
        origins: &str => origins;
        /// Largest inbound message in bytes (default 1 MiB). `SC_MAX_PAYLOAD` overrides.
        max_payload: usize => max_payload;
        /// Most channels per socket (default 1000). `SC_SOCKET_CHANNEL_LIMIT` overrides.
        socket_channel_limit: usize => socket_channel_limit;
        /// Whether clients may publish at all (default true). `SC_ALLOW_CLIENT_PUBLISH` overrides.
        allow_client_publish: bool => allow_client_publish;
        /// Whether clients may publish on names no declared channel pattern matches (default
        /// true). `SC_ALLOW_CLIENT_PUBLISH_UNDECLARED` overrides.
        allow_client_publish_undeclared: bool => allow_client_publish_undeclared;
        /// Longest channel name a client may use, in bytes (default 1024). `SC_MAX_CHANNEL_NAME`
        /// overrides.
        max_channel_name: usize => max_channel_name;
        /// Outbound queue bound per socket, in bytes (default 4 MiB). `SC_OUTBOUND_QUEUE_BYTES`
        /// overrides.
        outbound_queue_bytes: usize => outbound_queue_bytes;
        /// What a socket over its outbound bound gets (default: closed with 4100).
        /// `SC_SLOW_CONSUMER` (`disconnect` or `drop`) overrides.
        slow_consumer: crate::limit::SlowConsumer => slow_consumer;
        /// Inbound queue bound per socket, in messages (default 256; `inbound_queue_bytes` bounds
        /// their memory). `SC_INBOUND_QUEUE_LIMIT` overrides.
        inbound_queue_limit: usize => inbound_queue_limit;
        /// Default token lifetime in seconds (default 86400). `SC_AUTH_DEFAULT_EXPIRY` overrides.
        auth_default_expiry: u64 => auth_default_expiry;
        /// How long shutdown waits for sockets to close (default 5 s).
        shutdown_timeout: Duration => shutdown_timeout;
        /// Worker processes (default 1; more makes [`run`](Self::run) start a cluster).
        /// `SC_WORKERS` overrides.
        workers: usize => workers;
        /// Broker processes (default 0: in-process broker; several workers need at least one,
        /// and get one if none is set). `SC_BROKERS` overrides.
        brokers: usize => brokers;
        /// Balancer processes in front of the workers (default 0). `SC_BALANCERS` overrides.
        balancers: usize => balancers;
        /// Respawn workers that exit or are killed (default true). `SC_REBOOT_WORKER_ON_CRASH`.
        reboot_worker_on_crash: bool => reboot_worker_on_crash;
        /// A handler panic makes its worker exit (after answering) so the master replaces it
        /// (default false). `SC_CRASH_WORKER_ON_ERROR` overrides.
        crash_worker_on_error: bool => crash_worker_on_error;
        /// Every socket's inbound message limit (default 5000/s, bursts of 10000, then close
        /// 4429; `None`: no limit). `SC_MESSAGE_RATE_LIMIT` overrides.
        message_rate_limit: Option<crate::limit::RateLimit> => message_rate_limit;
        /// Prefix of Redis channels and keys for the `SC_REDIS_URL` engine (default `sc:`).
        /// `SC_REDIS_PREFIX` overrides.
        redis_prefix: &str => redis_prefix;
        /// A cluster child silent this long is SIGKILLed and respawned (default 10 s; zero
        /// turns it off). `SC_HEARTBEAT_TIMEOUT` overrides.
        heartbeat_timeout: Duration => heartbeat_timeout;
        /// Longest child output line the master copies, in bytes (default 16384).
        /// `SC_LOG_LINE_MAX` overrides.
        log_line_max: usize => log_line_max;
        /// Inbound queue bound per socket, in bytes of decoded messages (default 4 MiB).
        /// `SC_INBOUND_QUEUE_BYTES` overrides.
        inbound_queue_bytes: usize => inbound_queue_bytes;
        /// Largest upgrade request head, in bytes (default 16 KiB; larger: HTTP 431).
        /// `SC_MAX_UPGRADE_HEADER_BYTES` overrides.
        max_upgrade_header_bytes: usize => max_upgrade_header_bytes;
    }

    setters! {
        /// Each socket's `#authenticate` limit (default 10/s, bursts of 20, excess rejected with
        /// `RateLimitError`; `None`: none). `App::rate_limit("#authenticate", ..)` replaces it.
        /// `SC_AUTH_RATE_LIMIT` overrides.
        auth_rate_limit: Option<crate::limit::RateLimit> => auth_rate_limit;
        /// Most key-pair token verifications at once, off the runtime's threads (default: the
        /// number of cores). `SC_AUTH_VERIFY_CONCURRENCY` overrides.
        auth_verify_concurrency: usize => auth_verify_concurrency;
        /// A plain-HTTP address serving only `/health` and `/metrics` (default none; in a
        /// cluster worker `i` uses port + `i`). `SC_ADMIN_ADDR` overrides.
        admin_addr: Option<SocketAddr> => admin_addr;
        /// Whether the public port serves `/health` and `/metrics` too (default true).
        /// `SC_ADMIN_ON_PUBLIC_PORT` overrides.
        admin_on_public_port: bool => admin_on_public_port;
    }

    /// Pub/sub and the key-value store through Redis (comma-separated URLs; feature `redis`).
    /// `SC_REDIS_URL` overrides. For more control, pass a [`Redis`](crate::broker::Redis) engine
    /// to [`broker_engine`](Self::broker_engine).
    pub fn redis_url(mut self, urls: &str) -> Self {
        self.config.redis_url = Some(urls.to_owned());
        self
    }

    /// TLS: certificate chain and private key, PEM files. Balancers terminate TLS when there are
    /// any, otherwise each worker does. `SC_TLS_CERT` / `SC_TLS_KEY` override.
    pub fn tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.config.tls_cert = Some(cert.into());
        self.config.tls_key = Some(key.into());
        self
    }

    /// Replaces every option at once.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Don't read `SC_*` environment variables (tests that must not be influenced by them).
    pub fn ignore_env(mut self) -> Self {
        self.use_env = false;
        self
    }

    /// The app: event handlers, middleware, state. Several calls merge in order.
    pub fn app(mut self, app: App) -> Self {
        self.app = std::mem::take(&mut self.app).merge(app);
        self
    }

    /// Same as [`app`](Self::app); reads well with `handlers![...]`.
    pub fn handlers(self, app: impl Into<App>) -> Self {
        self.app(app.into())
    }

    /// Plain HTTP routes served next to the realtime endpoint.
    pub fn router(mut self, router: Router) -> Self {
        self.router = std::mem::take(&mut self.router).merge(router);
        self
    }

    /// Serves files from `dir` for every path no route matches (`index.html` for directories).
    pub fn serve_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.serve_dir = Some(dir.into());
        self
    }

    /// HS256 secret for signing and verifying tokens. Without one a random key is generated per
    /// process (tokens then do not survive a restart).
    pub fn auth_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = KeySource::Given(AuthKey::Secret(key.into()));
        self
    }

    /// Reads the HS256 secret from environment variable `var` when it is set (random otherwise).
    pub fn auth_key_from_env(mut self, var: &str) -> Self {
        self.key = KeySource::Env(var.to_owned());
        self
    }

    /// Asymmetric signing: `algorithm` (RS256, ES256, ...) with PEM keys. Only that algorithm is
    /// ever accepted.
    pub fn auth_key_pair(
        mut self,
        algorithm: jsonwebtoken::Algorithm,
        private_pem: impl Into<Vec<u8>>,
        public_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.key = KeySource::Given(AuthKey::KeyPair {
            private_pem: private_pem.into(),
            public_pem: public_pem.into(),
        });
        self.algorithm = Some(algorithm);
        self
    }

    /// The signing algorithm for a secret key (default HS256; HS384/HS512 allowed).
    pub fn auth_algorithm(mut self, algorithm: jsonwebtoken::Algorithm) -> Self {
        self.algorithm = Some(algorithm);
        self
    }

    /// The pub/sub engine (default: in-process). The server owns it: when the server stops it
    /// shuts the engine down (`BrokerEngine::shutdown`), so give each server its own.
    pub fn broker_engine(mut self, engine: impl BrokerEngine) -> Self {
        self.engine = Some(Arc::new(engine));
        self
    }

    /// Called once by [`Builder::run`] with the bound public address (in a cluster, by the
    /// master), e.g. to print the port chosen for port 0.
    pub fn on_listening(mut self, f: impl FnOnce(SocketAddr) + Send + 'static) -> Self {
        self.on_listening = Some(Box::new(f));
        self
    }

    /// Validates the configuration, starts the broker engine and binds the port.
    pub async fn bind(self) -> Result<Server> {
        let mut config = self.config;
        if !self.placement.config_resolved {
            if self.use_env {
                config.apply_env()?;
            }
            config.validate()?;
        }
        let origins = Origins::parse(&config.origins)?;
        let mut app = self.app;
        app.validate().map_err(StartupError::App)?;
        let key = self
            .key
            .resolve(self.use_env, self.placement.cluster_secret);
        let auth = AuthEngine::new(AuthOptions {
            key,
            algorithm: self.algorithm,
            default_expiry: config.auth_default_expiry,
            verify_concurrency: config.auth_verify_concurrency,
        })?;
        // The default `#authenticate` limit, unless the app set its own.
        if let Some(limit) = config.auth_rate_limit {
            app.event_limits
                .entry("#authenticate".to_owned())
                .or_insert(limit);
        }
        let engine: Arc<dyn BrokerEngine> = match (self.engine, self.placement.broker_sockets) {
            (Some(engine), _) => engine,
            (None, _) if config.redis_url.is_some() => redis_engine(&config)?,
            (None, Some(sockets)) => Arc::new(ClusterBroker::with_secret(
                sockets,
                Default::default(),
                self.placement.broker_secret,
            )),
            (None, None) => Arc::new(LocalBroker::new()),
        };
        let addr = SocketAddr::new(config.host, config.port);

        // Bottom up: the registry (and the engine behind it), the exchange over it, the state
        // every socket shares, and what every connection runs with.
        let metrics = Arc::new(Metrics::default());
        let pubsub = Arc::new(PubSub::new(engine.clone(), metrics.clone()));
        let exchange = Exchange::new(pubsub.clone());
        let mut services = Extensions::new();
        services.insert(exchange.clone());
        let shared = Arc::new(Shared::new(
            config,
            auth,
            metrics,
            std::mem::take(&mut app.state),
            services,
            pubsub.clone(),
            self.placement.exit_on_panic,
        ));
        let ctx = Arc::new(Context {
            shared,
            app,
            pubsub: pubsub.clone(),
            exchange,
        });
        let sink: Arc<dyn DeliverySink> = pubsub;
        engine.start(Arc::downgrade(&sink)).await?;
        let inherited = listener::inherited()?;
        // A supervisor's (the master's, `sc dev`'s) replacement overlaps the process it replaces.
        let supervised = inherited.is_some();
        let listener = match inherited {
            Some(l) => l,
            None => Listener::Tcp(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartupError::Bind { addr, source })?,
            ),
        };
        let config = &ctx.shared.config;
        // Behind balancers (a Unix socket) TLS is the balancers' job.
        let tls = match (&config.tls_cert, &config.tls_key, &listener) {
            (Some(cert), Some(key), Listener::Tcp(_)) => Some(tls::acceptor(cert, key)?),
            _ => None,
        };
        let state = Arc::new(ServerState {
            ctx,
            origins,
            role: self.placement.role.unwrap_or_else(|| "master".to_owned()),
            cluster_metrics: self.placement.cluster_metrics,
        });
        let router = routes::build(state.clone(), self.router, self.serve_dir);
        let admin = match state.ctx.shared.config.admin_addr {
            Some(mut addr) => {
                let offset = self.placement.admin_port_offset;
                if addr.port() != 0 {
                    addr.set_port(addr.port().saturating_add(offset.unwrap_or(0)));
                }
                let listener = listener::admin(addr, supervised)
                    .map_err(|source| StartupError::Bind { addr, source })?;
                Some((listener, routes::admin(state.clone())))
            }
            None => None,
        };
        Ok(Server {
            listener,
            state,
            router,
            tls,
            admin,
        })
    }

    /// Binds and serves until the future completes, then shuts down gracefully.
    pub async fn serve_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        self.bind().await?.serve_until(shutdown).await
    }
}

/// The engine `SC_REDIS_URL` asks for.
#[cfg(feature = "redis")]
fn redis_engine(config: &Config) -> Result<Arc<dyn BrokerEngine>> {
    let urls = config.redis_url.as_deref().unwrap_or_default();
    let urls: Vec<&str> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    Ok(Arc::new(
        crate::broker::Redis::with_urls(urls).prefix(config.redis_prefix.clone()),
    ))
}

#[cfg(not(feature = "redis"))]
fn redis_engine(_config: &Config) -> Result<Arc<dyn BrokerEngine>> {
    Err(StartupError::App(
        "redis_url (SC_REDIS_URL) is set, but sc-core was built without its `redis` feature".into(),
    ))
}

/// What the server's routes run with: the connections' context and the server's own options.
pub(crate) struct ServerState {
    pub(crate) ctx: Arc<Context>,
    pub(crate) origins: Origins,
    /// This process's role as `/health` reports it (`master`, `worker#1`, ...).
    pub(crate) role: String,
    /// Where `/metrics` gets the whole cluster's counters (a cluster's child); `None`: this
    /// process's own.
    pub(crate) cluster_metrics: Option<ClusterMetrics>,
}

/// A bound server, ready to serve.
pub struct Server {
    listener: Listener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<ServerState>,
    router: Router,
    /// The admin address (`/health`, `/metrics`, plain HTTP) and its router.
    admin: Option<(tokio::net::TcpListener, Router)>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.listener.local_addr_string())
            .finish_non_exhaustive()
    }
}

impl Server {
    fn shared(&self) -> &Arc<Shared> {
        &self.state.ctx.shared
    }

    /// The bound address (useful with port 0). Behind balancers (a Unix socket), the configured
    /// address.
    pub fn local_addr(&self) -> SocketAddr {
        let config = &self.shared().config;
        match &self.listener {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(_) => None,
        }
        .unwrap_or_else(|| SocketAddr::new(config.host, config.port))
    }

    /// The bound admin address (`/health` and `/metrics`), when
    /// [`Config::admin_addr`] is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// This server's counters, for the control channel's reports.
    pub(crate) fn snapshot_source(&self) -> impl Fn() -> crate::metrics::Snapshot + Send + 'static {
        let shared = self.shared().clone();
        move || shared.snapshot()
    }

    /// Where the server listens, for the log.
    pub(crate) fn listening_on(&self) -> String {
        self.listener.local_addr_string()
    }

    /// A handle for server code outside handlers (clients, exchange).
    pub fn handle(&self) -> ServerHandle {
        ServerHandle(self.shared().clone())
    }

    /// Completes when a handler panicked and this process must end (`crash_worker_on_error` in
    /// a cluster's worker): the process model waits for it.
    pub(crate) fn exit_requested(&self) -> impl Future<Output = ()> + Send + 'static {
        let shared = self.shared().clone();
        async move { shared.exit_requested().await }
    }

    /// Serves until `shutdown` completes; then closes every socket with 1001, waits for them (at
    /// most `shutdown_timeout`) and stops the broker engine.
    pub async fn serve_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let shared = self.shared().clone();
        let header_timeout = shared.config.handshake_timeout;
        let drain = shared.config.shutdown_timeout;
        // The admin address stops with the public port.
        let (admin_stop, admin_stopped) = tokio::sync::watch::channel(false);
        let admin = self.admin.map(|(listener, router)| {
            let mut stopped = admin_stopped;
            tokio::spawn(http::serve(
                listener,
                router,
                header_timeout,
                drain,
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            ))
        });
        let stop = {
            let shared = shared.clone();
            async move {
                shutdown.await;
                let _ = admin_stop.send(true);
                shared.close_all(close::GOING_AWAY, "Server is shutting down");
            }
        };
        match (self.listener, self.tls) {
            (Listener::Tcp(l), Some(acceptor)) => {
                let l = tls::TlsListener::new(l, acceptor)?;
                http::serve(l, self.router, header_timeout, drain, stop).await;
            }
            (Listener::Tcp(l), None) => {
                http::serve(l, self.router, header_timeout, drain, stop).await;
            }
            (Listener::Unix(l), _) => {
                http::serve(l, self.router, header_timeout, drain, stop).await;
            }
        }
        let deadline = tokio::time::Instant::now() + shared.config.shutdown_timeout;
        while shared.clients_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        self.state.ctx.pubsub.engine.shutdown().await;
        Ok(())
    }

    /// Serves forever.
    pub async fn serve(self) -> Result<()> {
        self.serve_until(std::future::pending()).await
    }
}

/// Server-wide operations for code outside a single socket: connected clients and the exchange.
/// Also an extractor.
#[derive(Clone)]
pub struct ServerHandle(Arc<Shared>);

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("clients", &self.clients_count())
            .finish()
    }
}

impl ServerHandle {
    /// How many sockets completed their handshake and are connected.
    pub fn clients_count(&self) -> usize {
        self.0.clients_count()
    }

    /// A connected socket by id.
    pub fn client(&self, id: &str) -> Option<Socket> {
        self.0.client(id)
    }

    /// Every connected socket.
    pub fn clients(&self) -> Vec<Socket> {
        self.0.clients()
    }

    /// Server-side pub/sub.
    pub fn exchange(&self) -> Exchange {
        self.0
            .services
            .get::<Exchange>()
            .cloned()
            .expect("the server registers its Exchange when it binds")
    }

    /// The options in force (after environment overrides).
    pub fn config(&self) -> &Config {
        &self.0.config
    }
}

impl FromRequestParts for ServerHandle {
    async fn from_request_parts(parts: &Parts) -> std::result::Result<Self, ScError> {
        Ok(ServerHandle(parts.shared().clone()))
    }
}
