//! The accept loop: each connection is served by hyper's HTTP/1 with upgrades (WebSocket), with
//! a header read timeout (the handshake timeout) that `axum::serve` does not set, so a client
//! that opens a connection and never finishes its request is dropped instead of holding a file
//! descriptor forever. The peer address reaches handlers as `ConnectInfo<SocketAddr>`. A
//! connection the server is done with lingers: see [`Lingering`]. Reads go through
//! [`ReadAhead`], one `recv` per batch of small WebSocket frames.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tower::ServiceExt;

use super::read_ahead::ReadAhead;

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
        // A burst drains here without waiting: `accept` answers at once while the kernel's queue
        // holds connections (tokio only yields every 128 operations, its fairness budget).
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
                .serve_connection(
                    TokioIo::new(Lingering(Some(ReadAhead::new(io)))),
                    TowerToHyperService::new(service),
                )
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

/// How long a closed connection goes on reading what its peer still sends, and how much of it.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: u64 = 16 * 1024 * 1024;

/// A connection that, when the server drops it, is shut down for writing and then read and
/// discarded until the peer closes it too, for at most [`LINGER_TIME`] and [`LINGER_BYTES`] (a
/// lingering close, as nginx does). Closing a socket with unread data makes the kernel reset the
/// connection; a client still streaming a frame over `max_payload` would then get a reset instead
/// of the 1009 close frame written just before.
struct Lingering<T: Io>(Option<T>);

/// What a connection is (the Drop impl's bounds must be the struct's).
trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

impl<T: Io> Lingering<T> {
    fn io(self: Pin<&mut Self>) -> io::Result<Pin<&mut T>> {
        match self.get_mut().0.as_mut() {
            Some(io) => Ok(Pin::new(io)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl<T: Io> AsyncRead for Lingering<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.io()?.poll_read(cx, buf)
    }
}

impl<T: Io> AsyncWrite for Lingering<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io()?.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io()?.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.as_ref().is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io()?.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io()?.poll_shutdown(cx)
    }
}

impl<T: Io> Drop for Lingering<T> {
    fn drop(&mut self) {
        let Some(mut io) = self.0.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let discard = async move {
                let _ = io.shutdown().await;
                // A small buffer: every closed connection passes here, most with nothing left.
                let mut buf = [0u8; 1024];
                let mut left = LINGER_BYTES;
                while left > 0 {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => left = left.saturating_sub(n as u64),
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER_TIME, discard).await;
        });
    }
}
