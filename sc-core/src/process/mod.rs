//! The process model, the top layer: [`Builder::run`] reads this process's [`Role`] once and
//! runs it: a single server, a cluster's master ([`master`]), a worker (a server with the
//! placement its master decided), a broker ([`crate::broker::server`]) or a balancer
//! ([`balancer`]). Children talk to the master over the control channel ([`control`]).
//!
//! Everything process-wide is decided here and handed down: the server never reads the role
//! from the environment, and the session never exits the process; when a handler panics under
//! `crash_worker_on_error` it asks, and a worker's `run` ends the process with status 70.

mod balancer;
mod control;
mod master;
mod output;
mod role;

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use role::{cluster_secret, run_secret, Role, RunDir};

use crate::config::Config;
use crate::server::{
    take_inherited, Builder, ClusterMetrics, Inherited, Result, StartupError as Error,
};

/// The exit status of a worker that ends itself after a handler panic (`crash_worker_on_error`),
/// so the master replaces it.
const CRASH_EXIT_STATUS: i32 = 70;

impl Builder {
    /// Runs the server until SIGINT or SIGTERM, in the role this process has: with the default
    /// configuration a single process; with more workers, brokers or balancers
    /// ([`Config::is_cluster`]) this process becomes the master and starts the others (the same
    /// binary, re-executed with a role in the environment), so the same `main` serves every role.
    ///
    /// With `SC_EMIT_TYPES=<path>` it serves nothing: it writes the app's TypeScript contract
    /// there (see [`App::typescript`](crate::App::typescript)) and returns (what `sc types` runs).
    pub fn run(mut self) -> Result<()> {
        if let Some(path) = std::env::var_os("SC_EMIT_TYPES") {
            return self.write_types(std::path::Path::new(&path));
        }
        let role = Role::from_env();
        // Read and validated once; `bind` takes the result as it is.
        if self.use_env {
            self.config.apply_env()?;
        }
        self.config.validate()?;
        self.placement.config_resolved = true;
        let config = self.config.clone();
        match role {
            Role::Master if config.is_cluster() => {
                // Taken before any thread exists: listenfd edits the environment.
                let public = match take_inherited()? {
                    Some(Inherited::Tcp(l)) => l,
                    _ => {
                        let addr = SocketAddr::new(config.host, config.port);
                        std::net::TcpListener::bind(addr)
                            .map_err(|source| Error::Bind { addr, source })?
                    }
                };
                if let Some(f) = self.on_listening.take() {
                    f(public.local_addr()?);
                }
                self.warn_if_random_key();
                master::run(config, public)
            }
            Role::Broker(_) => {
                let listener = match take_inherited()? {
                    Some(Inherited::Unix(l)) => l,
                    _ => return Err(Error::App(
                        "a broker process needs the Unix socket its master hands over (LISTEN_FDS)"
                            .into(),
                    )),
                };
                let runtime = runtime_for(role, &config)?;
                let secret = run_secret();
                run_to_end(runtime, async move {
                    listener.set_nonblocking(true)?;
                    let listener = tokio::net::UnixListener::from_std(listener)?;
                    heartbeat(role, &config, &secret, || None);
                    let secret = bytes::Bytes::from(secret.into_bytes());
                    tokio::select! {
                        r = crate::broker::server::serve_limited(listener, secret, config.broker_queue_bytes, crate::server::history_limits(&config)) => r.map_err(Error::Io),
                        _ = child_shutdown_signal() => Ok(()),
                    }
                })
            }
            Role::Balancer(_) => {
                let listener = match take_inherited()? {
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
                run_to_end(runtime, async move {
                    heartbeat(role, &config, &run_secret(), || None);
                    balancer::run(listener, workers, config).await
                })
            }
            Role::Master => {
                let runtime = runtime_for(role, &config)?;
                run_to_end(runtime, async move {
                    let on_listening = self.on_listening.take();
                    let server = self.bind().await?;
                    if let Some(f) = on_listening {
                        f(server.local_addr());
                    }
                    let role = crate::server::SINGLE_ROLE;
                    tracing::info!(addr = ?server.listening_on(), %role, "sc listening");
                    server.serve_until(shutdown_signal()).await
                })
            }
            Role::Worker(_) => {
                let dir = RunDir::from_env();
                let secret = run_secret();
                self.placement.broker_secret = bytes::Bytes::from(secret.clone().into_bytes());
                self.placement.role = Some(role.to_string());
                self.placement.cluster_secret = cluster_secret(role);
                self.placement.exit_on_panic = config.crash_worker_on_error;
                // Workers share the public port; each serves `admin_addr` on its port + id.
                self.placement.admin_port_offset = u16::try_from(role.id()).ok();
                if config.effective_brokers() > 0 && config.redis_url.is_none() {
                    self.placement.broker_sockets = dir
                        .as_ref()
                        .map(|d| d.broker_sockets(config.effective_brokers()));
                }
                if let Some(dir) = dir.clone() {
                    let secret: Arc<str> = secret.clone().into();
                    let metrics: ClusterMetrics = Arc::new(move || {
                        let dir = dir.clone();
                        Box::pin(control::cluster_metrics(dir, secret.clone()))
                    });
                    self.placement.cluster_metrics = Some(metrics);
                }
                let runtime = runtime_for(role, &config)?;
                run_to_end(runtime, async move {
                    // Heartbeats start before `bind`, which waits for the brokers (or Redis): a
                    // worker started while its broker restarts is slow, not hung. Its counters
                    // join the heartbeat once the server exists.
                    type Source = Box<dyn Fn() -> crate::metrics::Snapshot + Send + Sync>;
                    let source: Arc<std::sync::OnceLock<Source>> = Arc::default();
                    if dir.is_some() {
                        let source = source.clone();
                        heartbeat(role, &config, &secret, move || source.get().map(|f| f()));
                    }
                    let server = self.bind().await?;
                    tracing::info!(addr = ?server.listening_on(), %role, "sc listening");
                    let _ = source.set(Box::new(server.snapshot_source()));
                    let exit = server.exit_requested();
                    tokio::select! {
                        r = server.serve_until(child_shutdown_signal()) => r,
                        () = exit => {
                            // The error reply is queued; a short delay lets the writer flush it.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            std::process::exit(CRASH_EXIT_STATUS);
                        }
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

/// How long a role's runtime may take, once its work is done, to drop its remaining tasks. The
/// runtime waits for blocking-pool work it cannot cancel: a key-pair token verification (well
/// under a millisecond) or what a user's handler left behind (a `spawn_blocking` still
/// running), which must not make the master SIGKILL the process.
const RUNTIME_DROP_GRACE: Duration = Duration::from_millis(200);

/// Runs `work` to its end, then drops the runtime within [`RUNTIME_DROP_GRACE`].
fn run_to_end<T>(
    runtime: tokio::runtime::Runtime,
    work: impl std::future::Future<Output = T>,
) -> T {
    let out = runtime.block_on(work);
    runtime.shutdown_timeout(RUNTIME_DROP_GRACE);
    out
}

/// In a cluster child (the run directory is in the environment): heartbeats to the master on
/// the control channel for the life of the runtime; a worker's heartbeat carries its counters.
fn heartbeat(
    role: Role,
    config: &Config,
    secret: &str,
    snapshot: impl Fn() -> Option<crate::metrics::Snapshot> + Send + 'static,
) {
    let Some(dir) = RunDir::from_env() else {
        return;
    };
    let every = control::heartbeat_every(config.heartbeat_timeout);
    tokio::spawn(control::report_to_master(
        role,
        dir,
        secret.into(),
        every,
        snapshot,
    ));
}

/// SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// In a child: completes when the master is gone (stdin closed) or SIGTERM/SIGINT arrives.
///
/// Stdin is watched as a pipe registered with the reactor (a duplicate of fd 0), not with
/// `tokio::io::stdin`: that one reads on the blocking pool, a read no one can cancel, so the
/// runtime's drop waited for the master to close the pipe and the master, waiting for the child,
/// SIGKILLed it after `shutdown_timeout`. A stdin that is not a pipe (a child started by hand)
/// is not watched; signals still work.
pub(crate) async fn child_shutdown_signal() {
    let master_gone = async {
        let pipe = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .and_then(tokio::net::unix::pipe::Receiver::from_owned_fd);
        let Ok(mut pipe) = pipe else {
            return std::future::pending::<()>().await;
        };
        let mut buf = [0u8; 64];
        loop {
            match tokio::io::AsyncReadExt::read(&mut pipe, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = master_gone => {}
        _ = shutdown_signal() => {}
    }
}
