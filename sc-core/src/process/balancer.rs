//! Balancer processes: accept public connections (terminating TLS when configured) and relay each
//! one, byte for byte, to a worker's Unix socket, round-robin. The master owns those sockets, so
//! a connection routed to a restarting worker waits in its backlog instead of being refused; a
//! socket that cannot be reached at all is skipped. Workers behind balancers see no client IP
//! (the peer is a Unix socket); `RequestInfo` headers such as `x-forwarded-for` are not added.
//!
//! A relayed connection is bounded in time and number, so that the workers' defences against slow
//! and silent peers hold behind a balancer too:
//! - at most `balancer_max_connections` at once: one over it is accepted and closed at once (so
//!   the kernel's backlog never fills with connections nobody will serve);
//! - the TLS handshake and the client's first byte must both arrive within `handshake_timeout` of
//!   the accept; only then is a worker connection opened, so silent peers cost no worker anything;
//!   at most a quarter of the cap may be waiting for that first byte, so silent peers cannot take
//!   every slot;
//! - no byte in either direction for `balancer_idle_timeout` (unless 0): both sides are closed;
//! - when either side ends (or fails), its end is passed on and both are closed once the other
//!   side has been silent for [`CLOSE_GRACE`] (a client that half-closes cannot park a connection).
//!
//! On SIGTERM a balancer stops accepting and relays what it has until it ends, for
//! `shutdown_timeout` at most: at shutdown the master stops the workers first, whose 1001 close
//! frames then reach the clients through here; when a rolling restart replaces a balancer, the
//! connections still open after `shutdown_timeout` are cut (their clients reconnect, through
//! the new one).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::Config;
use crate::server::StartupError as Error;

/// Each direction of a relayed connection reads through a buffer this big (as
/// `copy_bidirectional` does); the client's first read uses the one its direction keeps.
const BUFFER: usize = 8 * 1024;

/// Once one side of a relayed connection has ended, how long the other may stay silent before both
/// are closed. Short: a peer that ended its side has nothing left to wait for but data in flight.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves until the master goes away or SIGTERM.
pub(crate) async fn run(
    listener: std::net::TcpListener,
    workers: Vec<PathBuf>,
    config: Config,
) -> Result<(), Error> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(crate::server::tls::acceptor(cert, key)?),
        _ => None,
    };
    let relay = Relay::new(workers, Limits::from_config(&config), tls);
    tokio::select! {
        _ = relay.clone().accept_loop(listener) => {}
        _ = super::child_shutdown_signal() => {}
    }
    // No new connections (they wait in the master's backlog for the other balancers, or the
    // one replacing this one); the relayed ones go on until they end, for `shutdown_timeout`
    // at most: at shutdown the workers, stopped first, close them with 1001.
    relay.drain(config.shutdown_timeout).await;
    Ok(())
}

/// The time and number bounds of relayed connections (see the module header).
#[derive(Clone, Copy, Debug)]
struct Limits {
    max_connections: usize,
    first_byte: Duration,
    idle: Duration,
    grace: Duration,
}

impl Limits {
    fn from_config(config: &Config) -> Self {
        Self {
            max_connections: config.balancer_max_connections,
            first_byte: config.handshake_timeout,
            idle: config.balancer_idle_timeout,
            grace: CLOSE_GRACE,
        }
    }
}

struct Relay {
    workers: Vec<PathBuf>,
    next: AtomicUsize,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    slots: Arc<Semaphore>,
    /// Connections waiting for their first byte: a quarter of the slots at most (all of a
    /// small cap, up to 16).
    waiting: Arc<Semaphore>,
    /// Connections closed at accept because the cap was reached: logged once per burst.
    refused: AtomicU64,
    refusing: AtomicBool,
}

impl Relay {
    fn new(
        workers: Vec<PathBuf>,
        limits: Limits,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Arc<Self> {
        Arc::new(Self {
            workers,
            next: AtomicUsize::new(0),
            // Semaphore::new panics above MAX_PERMITS; a cap that high is no cap anyway.
            slots: Arc::new(Semaphore::new(
                limits.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            waiting: Arc::new(Semaphore::new(
                (limits.max_connections / 4)
                    .max(limits.max_connections.min(16))
                    .clamp(1, Semaphore::MAX_PERMITS),
            )),
            limits,
            tls,
            refused: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
        })
    }

    /// Waits until no connection is relayed any more, or `within` has passed.
    async fn drain(&self, within: Duration) {
        let all = self.limits.max_connections.min(Semaphore::MAX_PERMITS);
        let deadline = Instant::now() + within;
        while self.slots.available_permits() < all && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = all - self.slots.available_permits();
        if left > 0 {
            tracing::info!(
                connections = left,
                "balancer stopping: closing connections still relayed after shutdown_timeout"
            );
        }
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "balancer accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                // Closed at once (dropped): the client learns now instead of waiting in the
                // backlog, and the connections already relayed are not slowed.
                let total = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                if !self.refusing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        max = self.limits.max_connections,
                        refused_since_start = total,
                        "balancer at balancer_max_connections; closing new connections until one ends"
                    );
                }
                continue;
            };
            self.refusing.store(false, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let relay = self.clone();
            tokio::spawn(async move {
                relay.serve(stream, peer).await;
                drop(slot);
            });
        }
    }

    async fn serve(&self, stream: tokio::net::TcpStream, peer: std::net::SocketAddr) {
        let deadline = Instant::now() + self.limits.first_byte;
        match &self.tls {
            // TLS first: a peer that never finishes its handshake costs no worker connection.
            Some(acceptor) => {
                match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => self.relay(tls, peer, deadline).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }
            None => self.relay(stream, peer, deadline).await,
        }
    }

    async fn connect(&self) -> Option<UnixStream> {
        let workers = &self.workers;
        for _ in 0..workers.len() {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % workers.len();
            match UnixStream::connect(&workers[i]).await {
                Ok(s) => return Some(s),
                Err(e) => {
                    tracing::debug!(worker = i, error = %e, "worker socket refused; trying the next")
                }
            }
        }
        None
    }

    /// Waits for the client's first bytes (until `deadline`), then connects to a worker and relays.
    async fn relay(
        &self,
        mut client: impl AsyncRead + AsyncWrite + Unpin,
        peer: std::net::SocketAddr,
        deadline: Instant,
    ) {
        // Connections still waiting for their first byte have a budget of their own (a quarter
        // of the cap): silent peers cannot take every slot and lock real clients out.
        let Ok(waiting) = self.waiting.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many connections waiting for their first byte; closed");
            return;
        };
        let mut first = vec![0u8; BUFFER];
        let n = match tokio::time::timeout_at(deadline, client.read(&mut first)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => n,
            Err(_) => {
                tracing::debug!(%peer, "no request within handshake_timeout; closed");
                return;
            }
        };
        let Some(mut upstream) = self.connect().await else {
            tracing::error!(%peer, "no worker accepted the connection");
            return;
        };
        drop(waiting);
        if upstream.write_all(&first[..n]).await.is_err() {
            return;
        }
        pipe_both(client, upstream, first, self.limits.idle, self.limits.grace).await;
    }
}

/// Copies both ways until both sides ended, or either side is silent (no byte either way) for
/// `idle`, or one side ended and the other stayed silent for `grace` after it. Dropping the
/// streams on return closes both.
async fn pipe_both(
    client: impl AsyncRead + AsyncWrite + Unpin,
    upstream: impl AsyncRead + AsyncWrite + Unpin,
    client_buffer: Vec<u8>,
    idle: Duration,
    grace: Duration,
) {
    let start = Instant::now();
    // Milliseconds since `start` of the last byte moved, either way.
    let last = AtomicU64::new(0);
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let up = copy_one_way(client_read, upstream_write, client_buffer, &last, start);
    let down = copy_one_way(upstream_read, client_write, vec![0u8; BUFFER], &last, start);
    tokio::pin!(up, down);
    let silent_for = |limit: Duration| {
        let last = &last;
        async move {
            loop {
                let at = start + Duration::from_millis(last.load(Ordering::Relaxed)) + limit;
                if Instant::now() >= at {
                    return;
                }
                tokio::time::sleep_until(at).await;
            }
        }
    };
    tokio::select! {
        _ = &mut up => {
            tokio::select! { _ = &mut down => {}, _ = silent_for(grace) => {} }
        }
        _ = &mut down => {
            tokio::select! { _ = &mut up => {}, _ = silent_for(grace) => {} }
        }
        // 0: no idle timeout (pings disabled, say).
        _ = silent_for(idle), if !idle.is_zero() => {}
    }
}

/// Copies until `from` ends or fails, then passes the end on (shuts `to`'s write side down).
async fn copy_one_way(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut buf: Vec<u8>,
    last: &AtomicU64,
    start: Instant,
) {
    'copy: loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut sent = 0;
        while sent < n {
            match to.write(&buf[sent..n]).await {
                Ok(0) | Err(_) => break 'copy,
                Ok(k) => sent += k,
            }
            // Every byte written is progress: a client reading slowly but steadily (after a
            // half-close too) is not silent.
            last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        // TLS keeps what the socket did not take inside rustls until a flush (TCP and Unix
        // sockets flush for free): without it the end of a burst would wait for the next write.
        if to.flush().await.is_err() {
            break;
        }
    }
    // The end counts as activity: the other side gets the whole grace from now to finish.
    last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests;
