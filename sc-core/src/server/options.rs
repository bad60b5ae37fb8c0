//! The builder's options: one method per [`Config`] field (environment variables override
//! them, see [`Config::apply_env`]), the app, the auth key, the broker engine and the static
//! files. Starting the server is in the module above ([`Builder::bind`], [`Builder::run`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use super::{Builder, KeySource};
use crate::app::App;
use crate::auth::AuthKey;
use crate::broker::BrokerEngine;
use crate::config::Config;
use crate::protocol::ProtocolVersion;

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
        /// Most connections one balancer relays at once (default 10000; more are closed at
        /// accept). `SC_BALANCER_MAX_CONNECTIONS` overrides.
        balancer_max_connections: usize => balancer_max_connections;
        /// A balancer closes a relayed connection silent both ways for this long (default 60 s).
        /// `SC_BALANCER_IDLE_TIMEOUT` (ms) overrides.
        balancer_idle_timeout: Duration => balancer_idle_timeout;
        /// Bytes a broker process queues per worker before dropping that worker's link (default
        /// 64 MiB). `SC_BROKER_QUEUE_BYTES` overrides.
        broker_queue_bytes: usize => broker_queue_bytes;
        /// Bytes of received Redis messages waiting for delivery, per Redis instance, before
        /// new ones are dropped (default 64 MiB). `SC_REDIS_QUEUE_BYTES` overrides.
        redis_queue_bytes: usize => redis_queue_bytes;
    }

    setters! {
        /// Publications kept per channel on every channel no declared pattern covers (default
        /// 0: no history). `SC_HISTORY_SIZE` overrides.
        history_size: usize => history_size;
        /// How long each is kept (default 300 s). `SC_HISTORY_TTL` (s) overrides.
        history_ttl: Duration => history_ttl;
        /// Most bytes of history over all channels of a process (default 64 MiB; past it whole
        /// channels go, least recently published first). `SC_HISTORY_MAX_BYTES` overrides.
        history_max_bytes: usize => history_max_bytes;
        /// Most bytes of history tombstones of a process (default 8 MiB).
        /// `SC_HISTORY_TOMBSTONE_BYTES` overrides.
        history_tombstone_bytes: usize => history_tombstone_bytes;
        /// How long a channel keeps its position after its history went (default 1 day).
        /// `SC_HISTORY_TOMBSTONE_TTL` (s) overrides.
        history_tombstone_ttl: Duration => history_tombstone_ttl;
        /// Connections the kernel queues on each listening socket before they are accepted
        /// (default the system's `net.core.somaxconn`, at least 1024; Linux caps it there).
        /// `SC_LISTEN_BACKLOG` overrides.
        listen_backlog: u32 => listen_backlog;
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

    /// Whether `/sc-types.d.ts` serves the app's TypeScript contract (default true; false: 404).
    /// `SC_SERVE_TYPES` overrides.
    pub fn serve_types(mut self, on: bool) -> Self {
        self.config.serve_types = on;
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
}
