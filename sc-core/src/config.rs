//! Server options: every SocketCluster option we support, its safe default, and the `SC_*`
//! environment variables that override the builder for deployments. All times are milliseconds,
//! as in SocketCluster.

use std::net::IpAddr;
use std::time::Duration;

use crate::protocol::ProtocolVersion;

/// Every option of the realtime server. Build it through [`crate::SocketCluster::builder`], or
/// start from `Config::default()` and set fields (embedders and tests); it is `#[non_exhaustive]`
/// so that new options are not a breaking change.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// TCP port (`SC_PORT`, default 8000). `0` picks a free port.
    pub port: u16,
    /// Interface to bind (`SC_HOST`, default `0.0.0.0`).
    pub host: IpAddr,
    /// Path of the realtime endpoint (`SC_PATH`, default `/socketcluster/`). An upgrade request for
    /// any other path gets HTTP 400.
    pub path: String,
    /// How long the server waits for a client's answer to a server invoke (`SC_ACK_TIMEOUT`,
    /// default 10000 ms).
    pub ack_timeout: Duration,
    /// Interval between server pings (`SC_PING_INTERVAL`, default 8000 ms).
    pub ping_interval: Duration,
    /// A socket that sends no pong for this long is closed with 4001 (`SC_PING_TIMEOUT`,
    /// default 30000 ms). Sent to the client in the handshake reply.
    pub ping_timeout: Duration,
    /// No pings and no pong watchdog (`SC_PING_TIMEOUT_DISABLED`, default false).
    pub ping_timeout_disabled: bool,
    /// A socket that sends no `#handshake` for this long is closed with 4005
    /// (`SC_HANDSHAKE_TIMEOUT`, default 10000 ms).
    pub handshake_timeout: Duration,
    /// Ping/pong tokens: `V2` (`''`, default) or `V1` (`#1`/`#2`) (`SC_PROTOCOL_VERSION`).
    pub protocol_version: ProtocolVersion,
    /// Allowed `Origin`s of WebSocket upgrades (`SC_ORIGINS`, default `*:*` = any). A list of
    /// `host:port` entries separated by commas or spaces, where either side may be `*`. A request
    /// without an Origin is rejected once a list is set (HTTP 403), as in the reference.
    pub origins: String,
    /// Largest inbound message in bytes (`SC_MAX_PAYLOAD`, default 1 MiB). Larger: close 1009.
    pub max_payload: usize,
    /// Most channels one socket may be subscribed to (`SC_SOCKET_CHANNEL_LIMIT`, default 1000).
    pub socket_channel_limit: usize,
    /// Whether clients may publish at all (`SC_ALLOW_CLIENT_PUBLISH`, default true); `false`
    /// refuses every client `#publish`, on declared channels too.
    pub allow_client_publish: bool,
    /// Whether clients may publish on channel names no declared pattern matches
    /// (`SC_ALLOW_CLIENT_PUBLISH_UNDECLARED`, default true, as in SocketCluster). Declared
    /// channels follow their declaration (`publish = server` unless it says otherwise).
    pub allow_client_publish_undeclared: bool,
    /// Longest channel name a client may subscribe to, publish on or unsubscribe from, in bytes
    /// (`SC_MAX_CHANNEL_NAME`, default 1024).
    pub max_channel_name: usize,
    /// Most bytes waiting to be written to one socket (frames queued plus the batch being
    /// written; each frame counts its length plus 64) before the socket is a slow consumer
    /// (`SC_OUTBOUND_QUEUE_BYTES`, default 4 MiB). A frame always fits into an empty queue.
    pub outbound_queue_bytes: usize,
    /// What a slow consumer gets (`SC_SLOW_CONSUMER`: `disconnect`, the default, closes it with
    /// 4100; `drop` keeps it and drops what does not fit).
    pub slow_consumer: crate::limit::SlowConsumer,
    /// Most inbound messages of one socket waiting for its handlers; when full the server stops
    /// reading that socket, so a flood slows only its sender (`SC_INBOUND_QUEUE_LIMIT`, default 256).
    pub inbound_queue_limit: usize,
    /// Default auth token lifetime in **seconds** (`SC_AUTH_DEFAULT_EXPIRY`, default 86400).
    pub auth_default_expiry: u64,
    /// How long graceful shutdown waits for sockets to close (`SC_SHUTDOWN_TIMEOUT`, default 5000 ms).
    pub shutdown_timeout: Duration,
    /// Worker processes (`SC_WORKERS`, default 1). With 1 worker, no brokers and no balancers the
    /// server is a single process; anything else starts a supervised cluster.
    pub workers: usize,
    /// Broker processes (`SC_BROKERS`, default 0 = in-process broker). More than one worker needs
    /// at least one broker; if none is configured, one is started.
    pub brokers: usize,
    /// Balancer processes (`SC_BALANCERS`, default 0: workers accept connections themselves).
    pub balancers: usize,
    /// Respawn a worker that exits or is killed (`SC_REBOOT_WORKER_ON_CRASH`, default true).
    /// Brokers and balancers are always respawned.
    pub reboot_worker_on_crash: bool,
    /// A handler panic makes the worker exit after answering the call with an error, so the
    /// master replaces it (`SC_CRASH_WORKER_ON_ERROR`, default false: log and go on).
    pub crash_worker_on_error: bool,
    /// TLS certificate chain, PEM (`SC_TLS_CERT`). With `tls_key`, the server speaks `wss`/`https`.
    pub tls_cert: Option<std::path::PathBuf>,
    /// TLS private key, PEM (`SC_TLS_KEY`).
    pub tls_key: Option<std::path::PathBuf>,
    /// Redis URLs, comma-separated (`SC_REDIS_URL`): when set, and no engine is given in code,
    /// pub/sub and the key-value store go through Redis (feature `redis`), shared by every node
    /// that uses the same Redis and prefix. Broker processes are then not needed.
    pub redis_url: Option<String>,
    /// Prefix of the Redis channels and keys (`SC_REDIS_PREFIX`, default `sc:`).
    pub redis_prefix: String,
    /// Every socket's inbound message limit: each packet of a batch and each raw message counts
    /// (default 5000/s, bursts of 10000, then disconnect with 4429; `None`: no limit).
    /// `SC_MESSAGE_RATE_LIMIT=N` sets N/s with bursts of 2N (0 turns it off).
    pub message_rate_limit: Option<crate::limit::RateLimit>,
    /// A cluster child silent this long on the control channel is taken as hung: the master
    /// SIGKILLs it and respawns it (`SC_HEARTBEAT_TIMEOUT`, default 10000 ms; 0 turns it off).
    pub heartbeat_timeout: Duration,
    /// Longest line of a child's output the master copies; the rest of the line is cut and
    /// counted (`SC_LOG_LINE_MAX`, default 16384 bytes).
    pub log_line_max: usize,
    /// Memory one socket's inbound messages may hold while they wait for (or run in) its handlers,
    /// in bytes of their decoded form, measured per message (`SC_INBOUND_QUEUE_BYTES`, default
    /// 4 MiB). Past it the server stops reading that socket until they are handled; a message
    /// always fits an empty queue. `inbound_queue_limit` still caps their number.
    pub inbound_queue_bytes: usize,
    /// Largest WebSocket upgrade request head (request line and headers), in bytes
    /// (`SC_MAX_UPGRADE_HEADER_BYTES`, default 16 KiB, Node's `--max-http-header-size`). Larger:
    /// HTTP 431, as the socket would otherwise keep its headers for its whole life.
    pub max_upgrade_header_bytes: usize,
    /// Each socket's `#authenticate` limit (default 10/s, bursts of 20; the excess gets
    /// `RateLimitError`; `None`: only the socket-wide limit). `App::rate_limit("#authenticate",
    /// ..)` replaces it. `SC_AUTH_RATE_LIMIT=N` sets N/s with bursts of 2N (0 turns it off).
    pub auth_rate_limit: Option<crate::limit::RateLimit>,
    /// Most key-pair token verifications (RS/PS/ES/EdDSA) running at once, process-wide; they
    /// run on the blocking pool, the rest wait (`SC_AUTH_VERIFY_CONCURRENCY`, default: the number
    /// of cores). HMAC tokens are cheap and verified inline, unbounded.
    pub auth_verify_concurrency: usize,
    /// A second, plain-HTTP address serving only `/health` and `/metrics` (`SC_ADMIN_ADDR`, e.g.
    /// `127.0.0.1:9000`; default none). In a cluster, worker `i` listens on this port + `i`.
    pub admin_addr: Option<std::net::SocketAddr>,
    /// Whether the public port also serves `/health` and `/metrics` (`SC_ADMIN_ON_PUBLIC_PORT`,
    /// default true); false answers them with 404 there.
    pub admin_on_public_port: bool,
    /// Whether `/sc-types.d.ts` serves the app's TypeScript contract (`SC_SERVE_TYPES`, default
    /// true); false answers it with 404, for an app that keeps its event names and types' doc
    /// comments to itself.
    pub serve_types: bool,
    /// Most connections one balancer relays at once (`SC_BALANCER_MAX_CONNECTIONS`, default
    /// 10000); one over it is accepted and closed at once.
    pub balancer_max_connections: usize,
    /// A connection relayed by a balancer with no byte either way for this long is closed
    /// (`SC_BALANCER_IDLE_TIMEOUT`, default 60000 ms: above `ping_interval + ping_timeout`, so
    /// a live socket's pings keep it open and a dead one gets the worker's 4001 first).
    pub balancer_idle_timeout: Duration,
    /// Most bytes a broker process queues for one worker connection (`SC_BROKER_QUEUE_BYTES`,
    /// default 64 MiB); a worker that reads slower is disconnected, then reconnects and
    /// resubscribes (what was published in between is lost for it).
    pub broker_queue_bytes: usize,
    /// Most bytes of Redis messages received and not yet delivered to local sockets, per Redis
    /// instance (`SC_REDIS_QUEUE_BYTES`, default 64 MiB); messages beyond it are dropped and
    /// logged.
    pub redis_queue_bytes: usize,
    /// Publications kept per channel on every channel no declared pattern covers
    /// (`SC_HISTORY_SIZE`, default 0: no history); see `ChannelContract::history`.
    pub history_size: usize,
    /// How long each of them is kept (`SC_HISTORY_TTL`, in seconds, default 300).
    pub history_ttl: Duration,
    /// Most bytes of history one process keeps over all its channels, in-process engine or
    /// broker process (`SC_HISTORY_MAX_BYTES`, default 64 MiB): past it whole channels are
    /// dropped, least recently published first (see `broker::HistoryLimits`).
    pub history_max_bytes: usize,
    /// Most bytes of history tombstones (the position a channel keeps after its history went)
    /// one process keeps (`SC_HISTORY_TOMBSTONE_BYTES`, default 8 MiB).
    pub history_tombstone_bytes: usize,
    /// How long a channel keeps its position after its history went (`SC_HISTORY_TOMBSTONE_TTL`,
    /// in seconds, default 86400); on Redis, how much longer the position outlives the stream.
    pub history_tombstone_ttl: Duration,
    /// Presence on every channel no declared pattern covers (`SC_PRESENCE`, default false); see
    /// `ChannelContract::presence`.
    pub presence: bool,
    /// With `presence`, subscribers of those channels also get join/leave events
    /// (`SC_PRESENCE_JOIN_LEAVE`, default false).
    pub presence_join_leave: bool,
    /// The auth token claim that names a presence entry's user (`SC_PRESENCE_USER_CLAIM`,
    /// default `sub`); a socket without a token, or whose token lacks it, is a guest (`null`).
    pub presence_user_claim: String,
    /// Most entries a `#presence` answer carries, and most joins (and leaves) one join/leave
    /// event carries; past it the list is cut and says so (`"cut": true`)
    /// (`SC_PRESENCE_MAX_ENTRIES`, default 1000). Counts are always whole.
    pub presence_max_entries: usize,
    /// How long joins and leaves on one channel are gathered into one event
    /// (`SC_PRESENCE_WINDOW`, default 100 ms).
    pub presence_window: Duration,
    /// Connections the kernel queues on each listening socket before they are accepted
    /// (`SC_LISTEN_BACKLOG`, default the system's `net.core.somaxconn`, at least 1024): the
    /// public port, the admin port and the cluster's Unix sockets. Linux caps it at somaxconn.
    pub listen_backlog: u32,
    /// Most bytes (as JSON) of the info `Socket::set_presence_info` attaches, which is copied
    /// into every entry of the socket, on the engine and in answers and events
    /// (`SC_PRESENCE_MAX_INFO_BYTES`, default 1024); over it the call fails and nothing changes.
    pub presence_max_info_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            port: 8000,
            host: IpAddr::from([0, 0, 0, 0]),
            path: "/socketcluster/".into(),
            ack_timeout: Duration::from_millis(10_000),
            ping_interval: Duration::from_millis(8_000),
            ping_timeout: Duration::from_millis(30_000),
            ping_timeout_disabled: false,
            handshake_timeout: Duration::from_millis(10_000),
            protocol_version: ProtocolVersion::V2,
            origins: "*:*".into(),
            max_payload: 1024 * 1024,
            socket_channel_limit: 1000,
            allow_client_publish: true,
            allow_client_publish_undeclared: true,
            max_channel_name: 1024,
            outbound_queue_bytes: 4 * 1024 * 1024,
            slow_consumer: crate::limit::SlowConsumer::Disconnect,
            inbound_queue_limit: 256,
            auth_default_expiry: 86_400,
            shutdown_timeout: Duration::from_millis(5_000),
            workers: 1,
            brokers: 0,
            balancers: 0,
            reboot_worker_on_crash: true,
            crash_worker_on_error: false,
            tls_cert: None,
            tls_key: None,
            redis_url: None,
            redis_prefix: "sc:".to_owned(),
            message_rate_limit: Some(
                crate::limit::RateLimit::per_second(5000.0)
                    .burst(10000.0)
                    .action(crate::limit::LimitAction::Disconnect),
            ),
            heartbeat_timeout: Duration::from_millis(10_000),
            log_line_max: 16 * 1024,
            inbound_queue_bytes: 4 * 1024 * 1024,
            max_upgrade_header_bytes: 16 * 1024,
            auth_rate_limit: Some(crate::limit::RateLimit::per_second(10.0).burst(20.0)),
            auth_verify_concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
            admin_addr: None,
            admin_on_public_port: true,
            serve_types: true,
            balancer_max_connections: 10_000,
            balancer_idle_timeout: Duration::from_millis(60_000),
            broker_queue_bytes: 64 * 1024 * 1024,
            redis_queue_bytes: 64 * 1024 * 1024,
            history_size: 0,
            history_ttl: Duration::from_secs(300),
            history_max_bytes: 64 * 1024 * 1024,
            history_tombstone_bytes: 8 * 1024 * 1024,
            history_tombstone_ttl: Duration::from_secs(24 * 3600),
            presence: false,
            presence_join_leave: false,
            presence_user_claim: "sub".to_owned(),
            presence_max_entries: 1000,
            presence_window: Duration::from_millis(100),
            listen_backlog: crate::backlog::default_backlog(),
            presence_max_info_bytes: 1024,
        }
    }
}

/// A configuration value that cannot be used. The message is one sentence naming the option.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Overrides options from `SC_*` environment variables (see each field). An unparsable value
    /// is an error naming the variable, never silently ignored.
    pub fn apply_env(&mut self) -> Result<(), ConfigError> {
        self.apply_vars(|name| std::env::var(name).ok())
    }

    fn apply_vars(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(name: &str, raw: &str) -> Result<T, ConfigError> {
            raw.trim().parse().map_err(|_| {
                ConfigError(format!(
                    "environment variable {name}={raw:?} is not a valid value"
                ))
            })
        }
        fn ms(name: &str, raw: &str) -> Result<Duration, ConfigError> {
            parse::<u64>(name, raw).map(Duration::from_millis)
        }
        fn flag(name: &str, raw: &str) -> Result<bool, ConfigError> {
            match raw.trim() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(ConfigError(format!(
                    "environment variable {name}={raw:?} must be true or false"
                ))),
            }
        }
        macro_rules! env {
            ($name:literal, $conv:expr, $field:expr) => {
                if let Some(raw) = var($name) {
                    $field = $conv($name, &raw)?;
                }
            };
        }
        env!("SC_PORT", parse, self.port);
        env!("SC_HOST", parse, self.host);
        env!(
            "SC_PATH",
            |_: &str, r: &str| Ok::<_, ConfigError>(r.to_owned()),
            self.path
        );
        env!("SC_ACK_TIMEOUT", ms, self.ack_timeout);
        env!("SC_PING_INTERVAL", ms, self.ping_interval);
        env!("SC_PING_TIMEOUT", ms, self.ping_timeout);
        env!("SC_PING_TIMEOUT_DISABLED", flag, self.ping_timeout_disabled);
        env!("SC_HANDSHAKE_TIMEOUT", ms, self.handshake_timeout);
        env!(
            "SC_PROTOCOL_VERSION",
            |n: &str, r: &str| match r.trim() {
                "1" => Ok(ProtocolVersion::V1),
                "2" => Ok(ProtocolVersion::V2),
                _ => Err(ConfigError(format!(
                    "environment variable {n}={r:?} must be 1 or 2"
                ))),
            },
            self.protocol_version
        );
        env!(
            "SC_ORIGINS",
            |_: &str, r: &str| Ok::<_, ConfigError>(r.to_owned()),
            self.origins
        );
        env!("SC_MAX_PAYLOAD", parse, self.max_payload);
        env!("SC_SOCKET_CHANNEL_LIMIT", parse, self.socket_channel_limit);
        env!("SC_ALLOW_CLIENT_PUBLISH", flag, self.allow_client_publish);
        env!(
            "SC_ALLOW_CLIENT_PUBLISH_UNDECLARED",
            flag,
            self.allow_client_publish_undeclared
        );
        env!("SC_MAX_CHANNEL_NAME", parse, self.max_channel_name);
        env!("SC_OUTBOUND_QUEUE_BYTES", parse, self.outbound_queue_bytes);
        env!("SC_SLOW_CONSUMER", parse, self.slow_consumer);
        env!("SC_INBOUND_QUEUE_LIMIT", parse, self.inbound_queue_limit);
        env!("SC_AUTH_DEFAULT_EXPIRY", parse, self.auth_default_expiry);
        env!("SC_SHUTDOWN_TIMEOUT", ms, self.shutdown_timeout);
        env!("SC_WORKERS", parse, self.workers);
        env!("SC_BROKERS", parse, self.brokers);
        env!("SC_BALANCERS", parse, self.balancers);
        env!(
            "SC_REBOOT_WORKER_ON_CRASH",
            flag,
            self.reboot_worker_on_crash
        );
        env!("SC_CRASH_WORKER_ON_ERROR", flag, self.crash_worker_on_error);
        let path = |_: &str, r: &str| Ok::<_, ConfigError>(Some(std::path::PathBuf::from(r)));
        env!("SC_TLS_CERT", path, self.tls_cert);
        env!("SC_TLS_KEY", path, self.tls_key);
        let text = |_: &str, r: &str| Ok::<_, ConfigError>(r.to_owned());
        let optional = |_: &str, r: &str| {
            Ok::<_, ConfigError>(Some(r.to_owned()).filter(|r| !r.trim().is_empty()))
        };
        env!("SC_REDIS_URL", optional, self.redis_url);
        env!("SC_REDIS_PREFIX", text, self.redis_prefix);
        env!(
            "SC_MESSAGE_RATE_LIMIT",
            |n: &str, r: &str| {
                match r.trim().parse::<f64>() {
                Ok(0.0) => Ok(None),
                Ok(v) if v.is_finite() && v > 0.0 => Ok(Some(
                    crate::limit::RateLimit::per_second(v)
                        .burst(2.0 * v)
                        .action(crate::limit::LimitAction::Disconnect),
                )),
                _ => Err(ConfigError(format!(
                    "environment variable {n}={r:?} must be a number of messages per second (0: no limit)"
                ))),
            }
            },
            self.message_rate_limit
        );
        env!("SC_HEARTBEAT_TIMEOUT", ms, self.heartbeat_timeout);
        env!("SC_LOG_LINE_MAX", parse, self.log_line_max);
        env!("SC_INBOUND_QUEUE_BYTES", parse, self.inbound_queue_bytes);
        env!(
            "SC_MAX_UPGRADE_HEADER_BYTES",
            parse,
            self.max_upgrade_header_bytes
        );
        env!(
            "SC_AUTH_RATE_LIMIT",
            |n: &str, r: &str| {
                match r.trim().parse::<f64>() {
                Ok(0.0) => Ok(None),
                Ok(v) if v.is_finite() && v > 0.0 => {
                    Ok(Some(crate::limit::RateLimit::per_second(v).burst(2.0 * v)))
                }
                _ => Err(ConfigError(format!(
                    "environment variable {n}={r:?} must be a number of #authenticate per second (0: no limit)"
                ))),
            }
            },
            self.auth_rate_limit
        );
        env!(
            "SC_AUTH_VERIFY_CONCURRENCY",
            parse,
            self.auth_verify_concurrency
        );
        let addr = |n: &str, r: &str| {
            Ok::<_, ConfigError>(match r.trim() {
                "" => None,
                a => Some(parse(n, a)?),
            })
        };
        env!("SC_ADMIN_ADDR", addr, self.admin_addr);
        env!("SC_ADMIN_ON_PUBLIC_PORT", flag, self.admin_on_public_port);
        env!("SC_SERVE_TYPES", flag, self.serve_types);
        env!(
            "SC_BALANCER_MAX_CONNECTIONS",
            parse,
            self.balancer_max_connections
        );
        env!("SC_BALANCER_IDLE_TIMEOUT", ms, self.balancer_idle_timeout);
        env!("SC_BROKER_QUEUE_BYTES", parse, self.broker_queue_bytes);
        env!("SC_REDIS_QUEUE_BYTES", parse, self.redis_queue_bytes);
        env!("SC_HISTORY_SIZE", parse, self.history_size);
        let secs = |n: &str, r: &str| parse::<u64>(n, r).map(Duration::from_secs);
        env!("SC_HISTORY_TTL", secs, self.history_ttl);
        env!("SC_HISTORY_MAX_BYTES", parse, self.history_max_bytes);
        env!(
            "SC_HISTORY_TOMBSTONE_BYTES",
            parse,
            self.history_tombstone_bytes
        );
        env!("SC_HISTORY_TOMBSTONE_TTL", secs, self.history_tombstone_ttl);
        env!("SC_PRESENCE", flag, self.presence);
        env!("SC_PRESENCE_JOIN_LEAVE", flag, self.presence_join_leave);
        env!("SC_PRESENCE_USER_CLAIM", text, self.presence_user_claim);
        env!("SC_PRESENCE_MAX_ENTRIES", parse, self.presence_max_entries);
        env!("SC_PRESENCE_WINDOW", ms, self.presence_window);
        env!("SC_LISTEN_BACKLOG", parse, self.listen_backlog);
        env!(
            "SC_PRESENCE_MAX_INFO_BYTES",
            parse,
            self.presence_max_info_bytes
        );
        Ok(())
    }

    /// Checks the options together; the error is one sentence naming the option.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.path.starts_with('/') {
            return Err(ConfigError(format!(
                "path {:?} must start with '/'",
                self.path
            )));
        }
        if self.history_size > 0 && self.history_ttl < Duration::from_secs(1) {
            return Err(ConfigError(
                "history_ttl (SC_HISTORY_TTL) must be at least 1 second when history_size is set"
                    .into(),
            ));
        }
        // Redis refuses expiries past i64 milliseconds; ten years is far beyond any use.
        let ten_years = Duration::from_secs(10 * 365 * 24 * 3600);
        if self.history_ttl > ten_years || self.history_tombstone_ttl > ten_years {
            return Err(ConfigError(
                "history_ttl and history_tombstone_ttl (SC_HISTORY_TTL, SC_HISTORY_TOMBSTONE_TTL) must be at most 10 years".into(),
            ));
        }
        if self.history_max_bytes < 64 * 1024 {
            return Err(ConfigError(
                "history_max_bytes (SC_HISTORY_MAX_BYTES) must be at least 65536".into(),
            ));
        }
        if !self.ping_timeout_disabled && self.ping_interval.is_zero() {
            return Err(ConfigError("ping_interval must be greater than 0".into()));
        }
        if !self.ping_timeout_disabled && self.ping_timeout <= self.ping_interval {
            return Err(ConfigError(format!(
                "ping_timeout ({} ms) must be longer than ping_interval ({} ms), or clients time out between pings",
                self.ping_timeout.as_millis(),
                self.ping_interval.as_millis()
            )));
        }
        if self.max_payload < 64 {
            return Err(ConfigError(
                "max_payload must be at least 64 bytes, or no handshake fits".into(),
            ));
        }
        if self.outbound_queue_bytes < 1024 || self.inbound_queue_limit == 0 {
            return Err(ConfigError(
                "outbound_queue_bytes must be at least 1024 and inbound_queue_limit at least 1"
                    .into(),
            ));
        }
        if self.max_channel_name == 0 {
            return Err(ConfigError(
                "max_channel_name must be at least 1 byte, or no channel can be used".into(),
            ));
        }
        if self.workers == 0 {
            return Err(ConfigError("workers must be at least 1".into()));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError(
                "tls_cert and tls_key must be set together (SC_TLS_CERT and SC_TLS_KEY)".into(),
            ));
        }
        if !self.heartbeat_timeout.is_zero() && self.heartbeat_timeout < MIN_HEARTBEAT_TIMEOUT {
            return Err(ConfigError(format!(
                "heartbeat_timeout ({} ms) must be 0 (off) or at least {} ms: children heartbeat every {} ms at most",
                self.heartbeat_timeout.as_millis(),
                MIN_HEARTBEAT_TIMEOUT.as_millis(),
                MIN_HEARTBEAT_TIMEOUT.as_millis() / 4
            )));
        }
        if self.log_line_max < 80 {
            return Err(ConfigError(
                "log_line_max must be at least 80 bytes, or log lines are unreadable".into(),
            ));
        }
        if self.inbound_queue_bytes < 1024 {
            return Err(ConfigError(
                "inbound_queue_bytes must be at least 1024".into(),
            ));
        }
        if self.max_upgrade_header_bytes < 1024 {
            return Err(ConfigError(
                "max_upgrade_header_bytes must be at least 1024, or no browser can connect".into(),
            ));
        }
        if self.auth_verify_concurrency == 0 {
            return Err(ConfigError(
                "auth_verify_concurrency must be at least 1, or no key-pair token is ever verified"
                    .into(),
            ));
        }
        if let Some(admin) = self.admin_addr {
            // Worker i listens on the admin port + i.
            let last = usize::from(admin.port()) + self.workers - 1;
            let ports = usize::from(admin.port())..=last;
            if admin.port() != 0 && (last > 65535 || ports.contains(&usize::from(self.port))) {
                return Err(ConfigError(format!(
                    "admin_addr {admin} needs ports {}..={last} (one per worker), which must be free of the public port {} and at most 65535",
                    admin.port(),
                    self.port
                )));
            }
        }
        self.validate_edges()?;
        Origins::parse(&self.origins).map(|_| ())
    }

    /// The balancer, broker-queue and Redis options.
    fn validate_edges(&self) -> Result<(), ConfigError> {
        if self.balancer_max_connections == 0 {
            return Err(ConfigError(
                "balancer_max_connections must be at least 1".into(),
            ));
        }
        // Checked only with balancers: a single process with long pings must not trip on it.
        // A live socket is never silent longer than ping_interval, and a dead one gets the
        // worker's 4001 after ping_timeout: the idle timeout must not come before either.
        if self.balancers > 0
            && !self.ping_timeout_disabled
            && !self.balancer_idle_timeout.is_zero()
            && self.balancer_idle_timeout < self.ping_interval + self.ping_timeout
        {
            return Err(ConfigError(format!(
                "balancer_idle_timeout ({} ms) must be 0 (off) or at least ping_interval + ping_timeout ({} ms), or balancers close live sockets between pings",
                self.balancer_idle_timeout.as_millis(),
                (self.ping_interval + self.ping_timeout).as_millis()
            )));
        }
        if self.broker_queue_bytes < 64 * 1024 || self.redis_queue_bytes < 64 * 1024 {
            return Err(ConfigError(
                "broker_queue_bytes and redis_queue_bytes must be at least 65536".into(),
            ));
        }
        if self.listen_backlog == 0 {
            return Err(ConfigError(
                "listen_backlog must be at least 1, or every connection waits for a SYN retransmit"
                    .into(),
            ));
        }
        crate::broker::validate_redis_prefix(&self.redis_prefix).map_err(ConfigError)
    }

    /// Whether this configuration runs as a supervised cluster of processes.
    pub fn is_cluster(&self) -> bool {
        self.workers > 1 || self.brokers > 0 || self.balancers > 0
    }

    /// Brokers actually started: several workers need at least one (unless they use Redis).
    pub fn effective_brokers(&self) -> usize {
        if self.workers > 1 && self.redis_url.is_none() {
            self.brokers.max(1)
        } else {
            self.brokers
        }
    }
}

/// The shortest `heartbeat_timeout`: children heartbeat four times per timeout, at most every
/// second, so a shorter one would kill healthy children on a loaded machine.
pub(crate) const MIN_HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(400);

/// The parsed `origins` option.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Origins {
    Any,
    List(Vec<(String, String)>),
}

impl Origins {
    pub(crate) fn parse(raw: &str) -> Result<Self, ConfigError> {
        let entries: Vec<&str> = raw
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
            .collect();
        if entries.contains(&"*:*") || entries.contains(&"*") {
            return Ok(Self::Any);
        }
        let mut list = Vec::new();
        for entry in entries {
            let Some((host, port)) = entry.rsplit_once(':') else {
                return Err(ConfigError(format!(
                    "origins entry {entry:?} must be host:port, where either may be *"
                )));
            };
            list.push((host.to_ascii_lowercase(), port.to_owned()));
        }
        Ok(Self::List(list))
    }

    /// Whether an `Origin` header value is allowed. Entries match whole hosts and ports, unlike
    /// the reference's substring search.
    pub(crate) fn allows(&self, origin: Option<&str>) -> bool {
        let Self::List(list) = self else {
            return true;
        };
        let Some(origin) = origin.filter(|o| *o != "null") else {
            return false;
        };
        let (scheme, rest) = origin.split_once("://").unwrap_or(("http", origin));
        let rest = rest.split('/').next().unwrap_or(rest);
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (h, p.to_owned()),
            _ => (
                rest,
                if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss") {
                    "443".to_owned()
                } else {
                    "80".to_owned()
                },
            ),
        };
        let host = host.to_ascii_lowercase();
        list.iter()
            .any(|(h, p)| (h == "*" || *h == host) && (p == "*" || *p == port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_and_rejects_garbage() {
        let mut c = Config::default();
        let vars = |n: &str| match n {
            "SC_PORT" => Some("0".to_string()),
            "SC_PING_INTERVAL" => Some("200".to_string()),
            "SC_PROTOCOL_VERSION" => Some("1".to_string()),
            "SC_ALLOW_CLIENT_PUBLISH" => Some("false".to_string()),
            _ => None,
        };
        c.apply_vars(vars).expect("valid env");
        assert_eq!(c.port, 0);
        assert_eq!(c.ping_interval, Duration::from_millis(200));
        assert_eq!(c.protocol_version, ProtocolVersion::V1);
        assert!(!c.allow_client_publish);
        let err = c
            .apply_vars(|n| (n == "SC_PORT").then(|| "eighty".to_string()))
            .expect_err("bad port");
        assert!(err.to_string().contains("SC_PORT"));
    }

    #[test]
    fn auth_and_admin_options_from_the_environment() {
        let mut c = Config::default();
        assert_eq!(
            c.auth_rate_limit,
            Some(crate::limit::RateLimit::per_second(10.0).burst(20.0))
        );
        assert!(c.admin_on_public_port && c.admin_addr.is_none());
        let vars = |n: &str| match n {
            "SC_AUTH_RATE_LIMIT" => Some("3".to_string()),
            "SC_AUTH_VERIFY_CONCURRENCY" => Some("2".to_string()),
            "SC_ADMIN_ADDR" => Some("127.0.0.1:9000".to_string()),
            "SC_ADMIN_ON_PUBLIC_PORT" => Some("false".to_string()),
            _ => None,
        };
        c.apply_vars(vars).expect("valid env");
        assert_eq!(
            c.auth_rate_limit,
            Some(crate::limit::RateLimit::per_second(3.0).burst(6.0))
        );
        assert_eq!(c.auth_verify_concurrency, 2);
        assert_eq!(c.admin_addr, Some(([127, 0, 0, 1], 9000).into()));
        assert!(!c.admin_on_public_port);
        assert!(c.validate().is_ok());
        c.apply_vars(|n| (n == "SC_AUTH_RATE_LIMIT").then(|| "0".to_string()))
            .expect("0 turns it off");
        assert_eq!(c.auth_rate_limit, None);
        for (name, raw) in [("SC_ADMIN_ADDR", "9000"), ("SC_AUTH_RATE_LIMIT", "-1")] {
            let err = c
                .apply_vars(|n| (n == name).then(|| raw.to_string()))
                .expect_err(name);
            assert!(err.to_string().contains(name), "{err}");
        }
        // Workers 0..4 use 9000..=9003: the public port may not be among them.
        c.workers = 4;
        c.port = 9003;
        assert!(c.validate().is_err());
        c.port = 9004;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn validates_ping_settings() {
        let c = Config {
            ping_timeout: Duration::from_millis(100),
            ping_interval: Duration::from_millis(200),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn balancer_broker_and_redis_limits_parse_and_validate() {
        let mut c = Config::default();
        let vars = |n: &str| match n {
            "SC_BALANCER_MAX_CONNECTIONS" => Some("5".to_string()),
            "SC_BALANCER_IDLE_TIMEOUT" => Some("45000".to_string()),
            "SC_BROKER_QUEUE_BYTES" => Some("1048576".to_string()),
            "SC_REDIS_QUEUE_BYTES" => Some("2097152".to_string()),
            _ => None,
        };
        c.apply_vars(vars).expect("valid env");
        assert_eq!(c.balancer_max_connections, 5);
        assert_eq!(c.balancer_idle_timeout, Duration::from_millis(45_000));
        assert_eq!(
            (c.broker_queue_bytes, c.redis_queue_bytes),
            (1 << 20, 2 << 20)
        );
        assert!(c.validate().is_ok());
        let short_idle = Config {
            balancers: 1,
            balancer_idle_timeout: Duration::from_millis(8_000),
            ..Config::default()
        };
        let err = short_idle.validate().expect_err("idle <= ping_interval");
        assert!(err.to_string().contains("balancer_idle_timeout"));
        let hash = Config {
            redis_prefix: "app#2:".into(),
            ..Config::default()
        };
        assert!(hash.validate().is_err());
        let none = Config {
            balancer_max_connections: 0,
            ..Config::default()
        };
        assert!(none.validate().is_err());
    }

    #[test]
    fn origins_match_whole_entries() {
        let o = Origins::parse("good.example:*, localhost:3000").expect("parse");
        assert!(o.allows(Some("https://good.example")));
        assert!(o.allows(Some("http://localhost:3000")));
        assert!(!o.allows(Some("http://localhost:3001")));
        assert!(!o.allows(Some("http://od.example")));
        assert!(!o.allows(None));
        assert!(!o.allows(Some("null")));
        assert!(Origins::parse("*:*").expect("parse").allows(None));
        assert!(Origins::parse("nonsense").is_err());
    }

    #[test]
    fn heartbeat_and_log_line_limits_are_read_and_validated() {
        let mut c = Config::default();
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(10));
        c.apply_vars(|n| match n {
            "SC_HEARTBEAT_TIMEOUT" => Some("0".to_string()),
            "SC_LOG_LINE_MAX" => Some("200".to_string()),
            _ => None,
        })
        .expect("valid env");
        assert!(c.heartbeat_timeout.is_zero(), "0 turns it off");
        assert_eq!(c.log_line_max, 200);
        assert!(c.validate().is_ok());
        c.heartbeat_timeout = Duration::from_millis(50);
        let err = c.validate().expect_err("too short");
        assert!(err.to_string().contains("heartbeat_timeout"), "{err}");
        c.heartbeat_timeout = Duration::from_secs(1);
        c.log_line_max = 10;
        assert!(c.validate().is_err());
    }

    #[test]
    fn inbound_queue_bytes_and_upgrade_header_cap_come_from_env_and_are_validated() {
        let mut c = Config::default();
        c.apply_vars(|n| match n {
            "SC_INBOUND_QUEUE_BYTES" => Some("65536".to_string()),
            "SC_MAX_UPGRADE_HEADER_BYTES" => Some("8192".to_string()),
            _ => None,
        })
        .expect("valid env");
        assert_eq!(
            (c.inbound_queue_bytes, c.max_upgrade_header_bytes),
            (65536, 8192)
        );
        assert!(c.validate().is_ok());
        for bad in [
            Config {
                inbound_queue_bytes: 10,
                ..Config::default()
            },
            Config {
                max_upgrade_header_bytes: 10,
                ..Config::default()
            },
        ] {
            assert!(bad.validate().is_err());
        }
    }

    #[test]
    fn presence_defaults_off_and_comes_from_env() {
        let c = Config::default();
        assert!(!c.presence && !c.presence_join_leave);
        assert_eq!(c.presence_user_claim, "sub");
        assert_eq!(c.presence_max_entries, 1000);
        assert_eq!(c.presence_window, Duration::from_millis(100));
        let mut c = Config::default();
        c.apply_vars(|n| match n {
            "SC_PRESENCE" => Some("1".to_string()),
            "SC_PRESENCE_JOIN_LEAVE" => Some("true".to_string()),
            "SC_PRESENCE_USER_CLAIM" => Some("name".to_string()),
            "SC_PRESENCE_MAX_ENTRIES" => Some("10".to_string()),
            "SC_PRESENCE_WINDOW" => Some("250".to_string()),
            "SC_PRESENCE_MAX_INFO_BYTES" => Some("64".to_string()),
            _ => None,
        })
        .expect("valid env");
        assert!(c.presence && c.presence_join_leave);
        assert_eq!(
            (
                c.presence_user_claim.as_str(),
                c.presence_max_entries,
                c.presence_window
            ),
            ("name", 10, Duration::from_millis(250))
        );
        assert_eq!(c.presence_max_info_bytes, 64);
        assert_eq!(Config::default().presence_max_info_bytes, 1024);
        let mut c = Config::default();
        assert!(c
            .apply_vars(|n| (n == "SC_PRESENCE").then(|| "maybe".to_string()))
            .is_err());
    }

    #[test]
    fn history_defaults_off_parses_seconds_and_needs_a_ttl() {
        assert_eq!(Config::default().history_size, 0);
        let mut c = Config::default();
        let vars = |n: &str| match n {
            "SC_HISTORY_SIZE" => Some("100".to_string()),
            "SC_HISTORY_TTL" => Some("30".to_string()),
            _ => None,
        };
        c.apply_vars(vars).expect("valid env");
        assert_eq!(
            (c.history_size, c.history_ttl),
            (100, Duration::from_secs(30))
        );
        assert!(c.validate().is_ok());
        c.history_ttl = Duration::from_millis(500);
        assert!(c.validate().is_err(), "under a second");
        c.history_ttl = Duration::ZERO;
        assert!(c.validate().is_err());
    }

    #[test]
    fn history_memory_limits_parse_and_have_a_floor() {
        let c = Config::default();
        assert_eq!(
            (c.history_max_bytes, c.history_tombstone_bytes),
            (64 << 20, 8 << 20)
        );
        let mut c = Config::default();
        let vars = |n: &str| match n {
            "SC_HISTORY_MAX_BYTES" => Some("1000000".to_string()),
            "SC_HISTORY_TOMBSTONE_BYTES" => Some("5000".to_string()),
            "SC_HISTORY_TOMBSTONE_TTL" => Some("60".to_string()),
            _ => None,
        };
        c.apply_vars(vars).expect("valid env");
        assert_eq!(
            (
                c.history_max_bytes,
                c.history_tombstone_bytes,
                c.history_tombstone_ttl
            ),
            (1_000_000, 5000, Duration::from_secs(60))
        );
        assert!(c.validate().is_ok());
        c.history_max_bytes = 1000;
        assert!(c.validate().is_err(), "under 64 KiB");
    }
}
