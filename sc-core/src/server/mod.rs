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
mod options;
mod read_ahead;
mod routes;
pub(crate) mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Extensions;
use axum::Router;

pub use routes::{BROWSER_CLIENT, BROWSER_CLIENT_TYPES};

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
use crate::protocol::{close, ScError};
use crate::pubsub::exchange::Exchange;
use crate::pubsub::PubSub;
use crate::session::Context;
use crate::socket::{Shared, Socket};

/// How `/metrics` asks for the whole cluster's counters.
pub(crate) type ClusterMetrics = Arc<dyn Fn() -> BoxFuture<'static, Option<String>> + Send + Sync>;

/// The role a process on its own reports (`/health`, its log): it supervises nothing.
pub(crate) const SINGLE_ROLE: &str = "single";

/// What the process model decided about this process before it binds (defaults: one process on
/// its own).
#[derive(Default)]
pub(crate) struct Placement {
    /// `/health`'s role; `None`: [`SINGLE_ROLE`].
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

impl Builder {
    /// Writes the app's TypeScript contract to `path` (`sc-types.d.ts`), its companion module
    /// next to it (`sc-types.js`: the hash the page is built against) and the browser client's
    /// declarations (`socketcluster.d.ts`), so a page beside them imports `./socketcluster.js`
    /// and `./sc-types.js` typed. The app is validated first: an invalid app writes nothing.
    pub fn write_types(&self, path: &std::path::Path) -> Result<()> {
        self.app.validate().map_err(StartupError::App)?;
        let Some([declarations, module, client]) = crate::app::typescript::files_for(path) else {
            return Err(StartupError::App(format!(
                "SC_EMIT_TYPES={} names no file: give the declaration file's path, e.g. public/sc-types.d.ts",
                path.display()
            )));
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        // Unchanged files are not rewritten: a watcher (`sc dev`) sees no change.
        let write = |path: &std::path::Path, text: &str| -> std::io::Result<()> {
            if std::fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
                return Ok(());
            }
            std::fs::write(path, text)
        };
        write(&declarations, &self.app.typescript())?;
        write(&module, &self.app.typescript_module())?;
        write(&client, BROWSER_CLIENT_TYPES)?;
        Ok(())
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
        app.contract = Some(Arc::new(crate::app::typescript::Rendered::of(&app)));
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
        // A `#presence` answer can list thousands of entries: a default limit per socket,
        // unless the app set its own, where any channel has presence.
        if crate::pubsub::presence::Presence::configured_by(&app, &config).is_some() {
            app.event_limits
                .entry("#presence".to_owned())
                .or_insert(crate::limit::RateLimit::per_second(10.0).burst(20.0));
        }
        let engine: Arc<dyn BrokerEngine> = match (self.engine, self.placement.broker_sockets) {
            (Some(engine), _) => engine,
            (None, _) if config.redis_url.is_some() => redis_engine(&config)?,
            (None, Some(sockets)) => Arc::new(ClusterBroker::with_secret(
                sockets,
                Default::default(),
                self.placement.broker_secret,
            )),
            (None, None) => Arc::new(LocalBroker::with_history_limits(history_limits(&config))),
        };
        // An engine without history would fail every publish on those channels: refuse now.
        if !engine.supports_history() {
            use crate::pubsub::recovery::{HistoryPolicies, HistorySource};
            const NO: &str = "but the broker engine does not keep history (the in-process engine and broker processes do)";
            match HistoryPolicies::configured_by(&app, &config) {
                Some(HistorySource::Declared(what)) => {
                    return Err(StartupError::App(format!(
                        "{what}, {NO}: remove it or change the engine"
                    )));
                }
                Some(HistorySource::Config) => {
                    return Err(ConfigError(format!("history_size (SC_HISTORY_SIZE) is set, {NO}: unset it or change the engine")).into());
                }
                None => {}
            }
        }
        if !engine.supports_presence() {
            if let Some(what) = crate::pubsub::presence::Presence::configured_by(&app, &config) {
                return Err(StartupError::App(format!(
                    "{what}, but the broker engine does not keep presence: remove it or change the engine"
                )));
            }
        }
        let addr = SocketAddr::new(config.host, config.port);

        // Bottom up: the registry (and the engine behind it), the exchange over it, the state
        // every socket shares, and what every connection runs with.
        let metrics = Arc::new(Metrics::default());
        let history = crate::pubsub::recovery::HistoryPolicies::new(&app, &config);
        let presence = crate::pubsub::presence::Presence::new(&app, &config);
        let pubsub = Arc::new(
            PubSub::new(engine.clone(), metrics.clone())
                .with_history(history)
                .with_presence(presence),
        );
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
        let backlog = ctx.shared.config.listen_backlog;
        let inherited = listener::inherited(backlog)?;
        // A supervisor's (the master's, `sc dev`'s) replacement overlaps the process it replaces.
        let supervised = inherited.is_some();
        let listener = match inherited {
            Some(l) => l,
            None => Listener::Tcp(
                listener::public(addr, backlog)
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
            role: self.placement.role.unwrap_or(SINGLE_ROLE.into()),
            cluster_metrics: self.placement.cluster_metrics,
        });
        let router = routes::build(state.clone(), self.router, self.serve_dir);
        let admin = match state.ctx.shared.config.admin_addr {
            Some(mut addr) => {
                let offset = self.placement.admin_port_offset;
                if addr.port() != 0 {
                    addr.set_port(addr.port().saturating_add(offset.unwrap_or(0)));
                }
                let listener = listener::admin(addr, supervised, backlog)
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
        crate::broker::Redis::with_urls(urls)
            .prefix(config.redis_prefix.clone())
            .queue_bytes(config.redis_queue_bytes)
            .history_tombstone_ttl(config.history_tombstone_ttl),
    ))
}

/// The bounds of an in-memory channel history (the in-process engine's, a broker process's)
/// that `config` sets.
pub(crate) fn history_limits(config: &Config) -> crate::broker::HistoryLimits {
    crate::broker::HistoryLimits {
        max_bytes: config.history_max_bytes,
        tombstone_bytes: config.history_tombstone_bytes,
        tombstone_ttl: config.history_tombstone_ttl,
    }
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
                let l = tls::TlsListener::new(l, acceptor, header_timeout)?;
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
