//! Balancer processes: accept public connections (terminating TLS when configured) and relay each
//! one, byte for byte, to a worker's Unix socket, round-robin. The master owns those sockets, so
//! a connection routed to a restarting worker waits in its backlog instead of being refused; a
//! socket that cannot be reached at all is skipped. Workers behind balancers see no client IP
//! (the peer is a Unix socket); `RequestInfo` headers such as `x-forwarded-for` are not added.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;

use crate::config::Config;
use crate::server::StartupError as Error;

/// Serves until the master goes away or SIGTERM.
pub(crate) async fn run(
    listener: std::net::TcpListener,
    workers: Vec<PathBuf>,
    config: Config,
) -> Result<(), Error> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(crate::server::tls::acceptor(cert, key)?),
        _ => None,
    };
    let workers = Arc::new(workers);
    let next = Arc::new(AtomicUsize::new(0));
    let accept = async {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "balancer accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let workers = workers.clone();
            let next = next.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                // TLS first: a peer that never finishes its handshake costs no worker connection.
                match tls {
                    Some(acceptor) => {
                        let handshake = acceptor.accept(stream);
                        match tokio::time::timeout(crate::server::tls::HANDSHAKE_TIMEOUT, handshake)
                            .await
                        {
                            Ok(Ok(tls)) => relay(tls, &workers, &next, peer).await,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                    None => relay(stream, &workers, &next, peer).await,
                }
            });
        }
    };
    tokio::select! {
        _ = accept => Ok(()),
        _ = super::child_shutdown_signal() => Ok(()),
    }
}

async fn connect(workers: &[PathBuf], next: &AtomicUsize) -> Option<UnixStream> {
    for _ in 0..workers.len() {
        let i = next.fetch_add(1, Ordering::Relaxed) % workers.len();
        match UnixStream::connect(&workers[i]).await {
            Ok(s) => return Some(s),
            Err(e) => {
                tracing::debug!(worker = i, error = %e, "worker socket refused; trying the next")
            }
        }
    }
    None
}

async fn relay(
    mut client: impl AsyncRead + AsyncWrite + Unpin,
    workers: &[PathBuf],
    next: &AtomicUsize,
    peer: std::net::SocketAddr,
) {
    let Some(mut upstream) = connect(workers, next).await else {
        tracing::error!(%peer, "no worker accepted the connection");
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
