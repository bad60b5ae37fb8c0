//! The accept loop: each connection is served by hyper's HTTP/1 with upgrades (WebSocket), with
//! a header read timeout (the handshake timeout) that `axum::serve` does not set, so a client
//! that opens a connection and never finishes its request is dropped instead of holding a file
//! descriptor forever. The peer address reaches handlers as `ConnectInfo<SocketAddr>`.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tower::ServiceExt;

/// The client address of an accepted connection, when there is one (not behind balancers).
pub(crate) trait PeerAddr {
    fn peer(&self) -> Option<SocketAddr>;
}

impl PeerAddr for SocketAddr {
    fn peer(&self) -> Option<SocketAddr> {
        Some(*self)
    }
}

impl PeerAddr for tokio::net::unix::SocketAddr {
    fn peer(&self) -> Option<SocketAddr> {
        None
    }
}

/// Serves `router` on `listener` until `shutdown` completes; then stops accepting, lets open
/// HTTP exchanges finish (at most `drain`) and returns. Upgraded connections (WebSockets) are
/// not waited for here: the server closes them itself.
pub(crate) async fn serve<L>(
    mut listener: L,
    router: Router,
    header_timeout: Duration,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
) where
    L: Listener,
    L::Addr: PeerAddr,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (io, addr) = tokio::select! {
            conn = listener.accept() => conn,
            _ = &mut shutdown => break,
        };
        let peer = addr.peer();
        let service = router
            .clone()
            .map_request(move |req: hyper::Request<Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                if let Some(peer) = peer {
                    req.extensions_mut().insert(ConnectInfo(peer));
                }
                req
            });
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder
                .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::trace!(error = %e, "connection ended with an error");
                    }
                }
                _ = async { stop.wait_for(|stopped| *stopped).await.map(|_| ()) } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(stop);
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(drain, stop_tx.closed()).await;
}
