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
mod role;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use role::{cluster_secret, Role, RunDir};

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
    pub fn run(mut self) -> Result<()> {
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
                runtime.block_on(async move {
                    listener.set_nonblocking(true)?;
                    let listener = tokio::net::UnixListener::from_std(listener)?;
                    tokio::select! {
                        r = crate::broker::server::serve_with(listener, config.broker_queue_bytes) => r.map_err(Error::Io),
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
                runtime.block_on(balancer::run(listener, workers, config))
            }
            Role::Master => {
                let runtime = runtime_for(role, &config)?;
                runtime.block_on(async move {
                    let on_listening = self.on_listening.take();
                    let server = self.bind().await?;
                    if let Some(f) = on_listening {
                        f(server.local_addr());
                    }
                    tracing::info!(addr = ?server.listening_on(), %role, "sc listening");
                    server.serve_until(shutdown_signal()).await
                })
            }
            Role::Worker(_) => {
                let dir = RunDir::from_env();
                self.placement.role = Some(role.to_string());
                self.placement.cluster_secret = cluster_secret(role);
                self.placement.exit_on_panic = config.crash_worker_on_error;
                if config.effective_brokers() > 0 && config.redis_url.is_none() {
                    self.placement.broker_sockets = dir
                        .as_ref()
                        .map(|d| d.broker_sockets(config.effective_brokers()));
                }
                if let Some(dir) = dir.clone() {
                    let metrics: ClusterMetrics = Arc::new(move || {
                        let dir = dir.clone();
                        Box::pin(control::cluster_metrics(dir))
                    });
                    self.placement.cluster_metrics = Some(metrics);
                }
                let runtime = runtime_for(role, &config)?;
                runtime.block_on(async move {
                    let server = self.bind().await?;
                    tracing::info!(addr = ?server.listening_on(), %role, "sc listening");
                    if let Some(dir) = dir {
                        let snapshot = server.snapshot_source();
                        tokio::spawn(control::report_to_master(role, dir, snapshot));
                    }
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
pub(crate) async fn child_shutdown_signal() {
    let master_gone = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        loop {
            match tokio::io::AsyncReadExt::read(&mut stdin, &mut buf).await {
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
