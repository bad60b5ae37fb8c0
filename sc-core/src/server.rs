//! Starting a server: [`SocketCluster::builder`] collects options, the app, the auth key, the
//! broker engine and any plain-HTTP routes; [`Builder::bind`] validates everything (one clear
//! sentence per mistake) and binds; [`Server::serve`] runs until shutdown (SIGINT/SIGTERM with
//! [`Builder::run`]), closing every socket with 1001 so clients come back to the next instance.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Request as HttpRequest, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use base64::Engine as _;

use crate::app::App;
use crate::auth::{AuthConfigError, AuthEngine, AuthKey, AuthOptions};
use crate::broker::{BrokerEngine, BrokerError, LocalBroker};
use crate::config::{Config, ConfigError, Origins};
use crate::connection;
use crate::exchange::Exchange;
use crate::handler::{ActionKind, FromRequestParts, Origin, Parts, Request};
use crate::master::{self, Inherited, Role, RunDir};
use crate::metrics::{Metrics, Snapshot};
use crate::middleware::MiddlewareKind;
use crate::protocol::{close, ProtocolVersion};
use crate::pubsub::PubSub;
use crate::socket::{lock, RequestInfo, Socket};

/// A startup failure. Each message is one sentence saying what to change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    config: Config,
    app: App,
    router: Router,
    serve_dir: Option<PathBuf>,
    key: KeySource,
    algorithm: Option<jsonwebtoken::Algorithm>,
    engine: Option<Arc<dyn BrokerEngine>>,
    use_env: bool,
    on_listening: Option<Box<dyn FnOnce(SocketAddr) + Send>>,
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
        /// Whether clients may publish (default true). `SC_ALLOW_CLIENT_PUBLISH` overrides.
        allow_client_publish: bool => allow_client_publish;
        /// Outbound queue bound per socket, in bytes (default 4 MiB). `SC_OUTBOUND_QUEUE_BYTES`
        /// overrides.
        outbound_queue_bytes: usize => outbound_queue_bytes;
        /// What a socket over its outbound bound gets (default: closed with 4100).
        /// `SC_SLOW_CONSUMER` (`disconnect` or `drop`) overrides.
        slow_consumer: crate::limit::SlowConsumer => slow_consumer;
        /// Inbound queue bound per socket, in messages (default 256).
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

    /// The pub/sub engine (default: in-process).
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
        if self.use_env {
            config.apply_env()?;
        }
        config.validate()?;
        let origins = Origins::parse(&config.origins)?;
        self.app.validate().map_err(Error::App)?;
        let key = match self.key {
            KeySource::Given(k) => k,
            KeySource::Env(var) => match std::env::var(&var) {
                Ok(v) if !v.is_empty() => AuthKey::Secret(v.into_bytes()),
                _ => master::cluster_secret().unwrap_or_else(AuthEngine::random_secret),
            },
            KeySource::Random => match std::env::var("SC_AUTH_KEY") {
                Ok(v) if !v.is_empty() && self.use_env => AuthKey::Secret(v.into_bytes()),
                // Workers of one cluster must agree on the key, or a token signed by one
                // would be rejected by the next: the master hands them one random secret.
                _ => master::cluster_secret().unwrap_or_else(AuthEngine::random_secret),
            },
        };
        let auth = AuthEngine::new(AuthOptions {
            key,
            algorithm: self.algorithm,
            default_expiry: config.auth_default_expiry,
        })?;
        let role = Role::current();
        let engine: Arc<dyn BrokerEngine> = match (self.engine, role, RunDir::from_env()) {
            (Some(engine), _, _) => engine,
            (None, _, _) if config.redis_url.is_some() => redis_engine(&config)?,
            (None, Role::Worker(_), Some(dir)) if config.effective_brokers() > 0 => {
                Arc::new(crate::broker::cluster::ClusterBroker::new(
                    dir.broker_sockets(config.effective_brokers()),
                ))
            }
            (None, _, _) => Arc::new(LocalBroker::new()),
        };
        let addr = SocketAddr::new(config.host, config.port);
        let shared = Arc::new_cyclic(|weak| {
            let pubsub = Arc::new(PubSub::new(engine.clone(), weak.clone()));
            ServerShared {
                exchange: Exchange {
                    pubsub: pubsub.clone(),
                },
                pubsub,
                origins,
                auth,
                app: self.app,
                config,
                clients: Mutex::new(HashMap::new()),
                metrics: Arc::new(Metrics::default()),
                id_seq: AtomicU64::new(0),
                id_prefix: rand::random(),
            }
        });
        engine.start(shared.pubsub.clone()).await?;
        let listener = match master::inherited_listener()? {
            Some(Inherited::Tcp(l)) => {
                l.set_nonblocking(true)?;
                Listener::Tcp(tokio::net::TcpListener::from_std(l)?)
            }
            Some(Inherited::Unix(l)) => {
                l.set_nonblocking(true)?;
                Listener::Unix(tokio::net::UnixListener::from_std(l)?)
            }
            None => Listener::Tcp(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| Error::Bind { addr, source })?,
            ),
        };
        let router = build_router(shared.clone(), self.router, self.serve_dir);
        // Behind balancers (a Unix socket) TLS is the balancers' job.
        let tls = match (&shared.config.tls_cert, &shared.config.tls_key, &listener) {
            (Some(cert), Some(key), Listener::Tcp(_)) => Some(crate::tls::acceptor(cert, key)?),
            _ => None,
        };
        Ok(Server {
            listener,
            shared,
            router,
            tls,
        })
    }

    /// Binds and serves until the future completes, then shuts down gracefully.
    pub async fn serve_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        self.bind().await?.serve_until(shutdown).await
    }

    /// Runs the server until SIGINT or SIGTERM, in the role this process has: with the default
    /// configuration a single process; with more workers, brokers or balancers
    /// ([`Config::is_cluster`]) this process becomes the master and starts the others (the same
    /// binary, re-executed with a role in the environment), so the same `main` serves every role.
    pub fn run(mut self) -> Result<()> {
        let role = Role::current();
        let mut config = self.config.clone();
        if self.use_env {
            config.apply_env()?;
        }
        config.validate()?;
        match role {
            Role::Master if config.is_cluster() => {
                // Taken before any thread exists: listenfd edits the environment.
                let public = match master::inherited_listener()? {
                    Some(Inherited::Tcp(l)) => l,
                    _ => {
                        let addr = SocketAddr::new(config.host, config.port);
                        std::net::TcpListener::bind(addr)
                            .map_err(|source| Error::Bind { addr, source })?
                    }
                };
                if let Some(f) = self.on_listening {
                    f(public.local_addr()?);
                }
                master::run(config, public)
            }
            Role::Broker(_) => {
                let listener = match master::inherited_listener()? {
                    Some(Inherited::Unix(l)) => l,
                    _ => return Err(Error::App(
                        "a broker process needs the Unix socket its master hands over (LISTEN_FDS)"
                            .into(),
                    )),
                };
                let runtime = runtime_for(role, &config)?;
                runtime.block_on(async move {
                    listener.set_nonblocking(true)?;
                    let listener = tokio::net::UnixListener::from_std(listener)?;
                    tokio::select! {
                        r = crate::broker::server::serve(listener) => r.map_err(Error::Io),
                        _ = master::child_shutdown_signal() => Ok(()),
                    }
                })
            }
            Role::Balancer(_) => {
                let listener = match master::inherited_listener()? {
                    Some(Inherited::Tcp(l)) => l,
                    _ => {
                        return Err(Error::App(
                            "a balancer process needs the listening socket its master hands over (LISTEN_FDS)".into(),
                        ))
                    }
                };
                let dir = RunDir::from_env()
                    .ok_or_else(|| Error::App("a balancer needs SC_RUN_DIR".into()))?;
                let workers = (0..config.workers).map(|i| dir.worker_socket(i)).collect();
                let runtime = runtime_for(role, &config)?;
                runtime.block_on(crate::balancer::run(listener, workers, config))
            }
            Role::Master | Role::Worker(_) => {
                let runtime = runtime_for(role, &config)?;
                runtime.block_on(async move {
                    let on_listening = self.on_listening.take();
                    let server = self.bind().await?;
                    if let (Some(f), Role::Master) = (on_listening, role) {
                        f(server.local_addr());
                    }
                    tracing::info!(addr = ?server.listener.local_addr_string(), %role, "sc listening");
                    if role != Role::Master {
                        let shared = server.shared.clone();
                        tokio::spawn(master::report_to_master(role, move || shared.snapshot()));
                    }
                    if role == Role::Master {
                        server.serve_until(shutdown_signal()).await
                    } else {
                        server.serve_until(master::child_shutdown_signal()).await
                    }
                })
            }
        }
    }
}

/// A runtime sized for the role: the processes of one cluster share the machine's cores, so each
/// worker gets its share (at least one thread) instead of one thread per core each, which on a
/// small machine only adds context switches; brokers and balancers, which only move bytes, get
/// their share too.
fn runtime_for(role: Role, config: &Config) -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let share = |n: usize| (cores / n.max(1)).max(1);
    let threads = match role {
        Role::Master => cores,
        Role::Worker(_) => share(config.workers),
        Role::Broker(_) => share(config.effective_brokers()),
        Role::Balancer(_) => share(config.balancers),
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
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
    Err(Error::App(
        "redis_url (SC_REDIS_URL) is set, but sc-core was built without its `redis` feature".into(),
    ))
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Where a server accepts connections: its own TCP port, or a socket from a supervisor.
enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listener {
    fn local_addr_string(&self) -> String {
        match self {
            Self::Tcp(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            Self::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                .unwrap_or_default(),
        }
    }
}

/// A bound server, ready to serve.
pub struct Server {
    listener: Listener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<ServerShared>,
    router: Router,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.listener.local_addr_string())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// The bound address (useful with port 0). Behind balancers (a Unix socket), the configured
    /// address.
    pub fn local_addr(&self) -> SocketAddr {
        match &self.listener {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(_) => None,
        }
        .unwrap_or_else(|| SocketAddr::new(self.shared.config.host, self.shared.config.port))
    }

    /// A handle for server code outside handlers (clients, exchange).
    pub fn handle(&self) -> ServerHandle {
        ServerHandle(self.shared.clone())
    }

    /// Serves until `shutdown` completes; then closes every socket with 1001 and waits for them,
    /// at most `shutdown_timeout`.
    pub async fn serve_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let shared = self.shared.clone();
        let stop = async move {
            shutdown.await;
            shared.close_all(close::GOING_AWAY, "Server is shutting down");
        };
        let header_timeout = self.shared.config.handshake_timeout;
        let drain = self.shared.config.shutdown_timeout;
        match (self.listener, self.tls) {
            (Listener::Tcp(l), Some(acceptor)) => {
                let l = crate::tls::TlsListener::new(l, acceptor)?;
                crate::http::serve(l, self.router, header_timeout, drain, stop).await;
            }
            (Listener::Tcp(l), None) => {
                crate::http::serve(l, self.router, header_timeout, drain, stop).await;
            }
            (Listener::Unix(l), _) => {
                crate::http::serve(l, self.router, header_timeout, drain, stop).await;
            }
        }
        let deadline = tokio::time::Instant::now() + self.shared.config.shutdown_timeout;
        while !lock(&self.shared.clients).is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Serves forever.
    pub async fn serve(self) -> Result<()> {
        self.serve_until(std::future::pending()).await
    }
}

/// Server-wide state shared by every connection.
pub(crate) struct ServerShared {
    pub(crate) config: Config,
    pub(crate) app: App,
    pub(crate) auth: AuthEngine,
    pub(crate) pubsub: Arc<PubSub>,
    pub(crate) exchange: Exchange,
    pub(crate) origins: Origins,
    clients: Mutex<HashMap<Arc<str>, Socket>>,
    pub(crate) metrics: Arc<Metrics>,
    id_seq: AtomicU64,
    id_prefix: [u8; 12],
}

impl ServerShared {
    /// 20 URL-safe characters: 12 random bytes per process and a 3-byte sequence (the
    /// reference's `base64id` shape), unique within the process and unguessable across them.
    pub(crate) fn next_socket_id(&self) -> Arc<str> {
        let seq = self.id_seq.fetch_add(1, Ordering::Relaxed);
        let mut bytes = [0u8; 15];
        bytes[..12].copy_from_slice(&self.id_prefix);
        let mut mix: [u8; 12] = rand::random();
        for (b, m) in bytes[..12].iter_mut().zip(mix.iter_mut()) {
            *b ^= *m;
        }
        bytes[12..].copy_from_slice(&seq.to_be_bytes()[5..]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(bytes)
            .into()
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let clients = lock(&self.clients);
        let subscriptions = clients
            .values()
            .map(|s| lock(&s.0.subscriptions).len())
            .sum();
        self.metrics.snapshot(clients.len(), subscriptions)
    }

    pub(crate) fn register(&self, socket: &Socket) {
        Metrics::add(&self.metrics.handshakes, 1);
        lock(&self.clients).insert(socket.0.id.clone(), socket.clone());
    }

    pub(crate) fn unregister(&self, socket: &Socket) {
        lock(&self.clients).remove(&socket.0.id);
    }

    fn close_all(&self, code: u16, reason: &str) {
        let sockets: Vec<Socket> = lock(&self.clients).values().cloned().collect();
        for s in sockets {
            s.disconnect(code, reason);
        }
    }
}

/// Server-wide operations for code outside a single socket: connected clients and the exchange.
/// Also an extractor.
#[derive(Clone)]
pub struct ServerHandle(Arc<ServerShared>);

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
        lock(&self.0.clients).len()
    }

    /// A connected socket by id.
    pub fn client(&self, id: &str) -> Option<Socket> {
        lock(&self.0.clients).get(id).cloned()
    }

    /// Every connected socket.
    pub fn clients(&self) -> Vec<Socket> {
        lock(&self.0.clients).values().cloned().collect()
    }

    /// Server-side pub/sub.
    pub fn exchange(&self) -> Exchange {
        self.0.exchange.clone()
    }

    /// The options in force (after environment overrides).
    pub fn config(&self) -> &Config {
        &self.0.config
    }
}

impl FromRequestParts for ServerHandle {
    async fn from_request_parts(parts: &Parts) -> std::result::Result<Self, crate::ScError> {
        Ok(ServerHandle(parts.server().clone()))
    }
}

fn build_router(shared: Arc<ServerShared>, user: Router, serve_dir: Option<PathBuf>) -> Router {
    let path = shared.config.path.clone();
    let realtime = Router::new()
        .route(&path, any(upgrade))
        .route("/health", axum::routing::get(health))
        .route("/metrics", axum::routing::get(metrics))
        .route("/socketcluster.js", axum::routing::get(browser_client))
        .with_state(shared.clone());
    let mut router = user.merge(realtime);
    if let Some(dir) = serve_dir {
        router = router.fallback_service(tower_http::services::ServeDir::new(dir));
    }
    // The reference's `ws` server answers an upgrade for any other path with 400.
    router.layer(axum::middleware::from_fn(
        move |req: HttpRequest, next: Next| {
            let path = path.clone();
            async move {
                let is_upgrade = req
                    .headers()
                    .get(header::UPGRADE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
                if is_upgrade && req.uri().path() != path {
                    return (StatusCode::BAD_REQUEST, "Bad Request").into_response();
                }
                next.run(req).await
            }
        },
    ))
}

/// tungstenite's read buffer per socket. It preallocates this much (128 KiB by default) and keeps
/// it for the socket's life; a frame larger than it still arrives whole (the buffer grows to fit),
/// only more small frames per read syscall would need a larger one.
const READ_BUFFER_SIZE: usize = 512;

/// What a socket keeps of its upgrade request. Copied, not cloned: hyper's parsed header values
/// and path share its 8 KiB read buffer, and holding any of them would pin all of it to the
/// socket. The headers that only negotiated the upgrade itself are left out.
fn request_info(req: &HttpRequest, remote_addr: Option<SocketAddr>) -> RequestInfo {
    const UPGRADE_ONLY: [header::HeaderName; 5] = [
        header::CONNECTION,
        header::UPGRADE,
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_EXTENSIONS,
    ];
    let kept = || {
        req.headers()
            .iter()
            .filter(|(n, _)| !UPGRADE_ONLY.contains(n))
    };
    let mut headers = axum::http::HeaderMap::with_capacity(kept().count());
    for (name, value) in kept() {
        if let Ok(value) = axum::http::HeaderValue::from_bytes(value.as_bytes()) {
            headers.append(name.clone(), value);
        }
    }
    let uri = req
        .uri()
        .to_string()
        .parse()
        .unwrap_or_else(|_| req.uri().clone());
    RequestInfo {
        uri,
        headers,
        remote_addr,
    }
}

/// The browser client (`sc-core/assets/socketcluster.js`), compiled into the binary.
pub const BROWSER_CLIENT: &str = include_str!("../assets/socketcluster.js");

/// `/socketcluster.js`: the browser client, an ES module.
async fn browser_client() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        BROWSER_CLIENT,
    )
        .into_response()
}

/// `/health`: 200 with this process's role and connection count while it serves.
async fn health(State(shared): State<Arc<ServerShared>>) -> Response {
    let body = serde_json::json!({
        "status": "ok",
        "role": Role::current().to_string(),
        "pid": std::process::id(),
        "connections": shared.snapshot().connections,
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `/metrics`: Prometheus text; in a cluster, every process's counters (from the master).
async fn metrics(State(shared): State<Arc<ServerShared>>) -> Response {
    let text = match master::cluster_metrics().await {
        Some(text) => text,
        None => {
            let mut processes = std::collections::BTreeMap::new();
            processes.insert(("worker".to_string(), 0), shared.snapshot());
            crate::metrics::render(&processes, &Default::default())
        }
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn upgrade(
    State(shared): State<Arc<ServerShared>>,
    ws: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    req: HttpRequest,
) -> Response {
    // Absent behind balancers (Unix socket): the peer is the balancer, not the client.
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if !shared.origins.allows(origin) {
        return (
            StatusCode::FORBIDDEN,
            format!(
                "Failed to authorize socket handshake - Invalid origin: {}",
                origin.unwrap_or("undefined")
            ),
        )
            .into_response();
    }
    let request = Arc::new(request_info(&req, remote));
    if shared.app.middleware.has(MiddlewareKind::HandshakeWs) {
        let parts = Parts {
            origin: Origin::Upgrade {
                server: shared.clone(),
                request: request.clone(),
            },
            kind: ActionKind::HandshakeWs,
            event: None,
            channel: None,
            auth: None,
            auth_token_expired: None,
            wait_for_auth: false,
        };
        if let Err(block) = shared
            .app
            .middleware
            .run(MiddlewareKind::HandshakeWs, Request { parts, data: None })
            .await
        {
            let error = block.client_error(ActionKind::HandshakeWs);
            return (StatusCode::UNAUTHORIZED, error.message().to_owned()).into_response();
        }
    }
    let max = shared.config.max_payload;
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER_SIZE)
        // A task of its own: axum's upgrade task (its upgrade and handshake state included) ends
        // here instead of living, and holding memory, as long as the socket.
        .on_upgrade(move |socket| async move {
            tokio::spawn(connection::run(socket, shared, request));
        })
}
