//! Large reads without a large buffer per connection. tungstenite reads a WebSocket into its own
//! buffer, which every socket keeps for its life and which is kept small (`routes`) so idle sockets
//! stay small. Read straight into it (then 512 B), a client's batch of ten 100-byte frames took
//! three `recv` calls (two full ones and one that found the socket drained), about 20% of the
//! server's CPU in `sc bench rpc`. [`ReadAhead`] reads into a stack buffer instead and keeps what
//! the caller had no room for until its next read, so a batch is one `recv`, and tokio learns from
//! the short read that the socket is drained. An idle connection holds nothing: the spill is freed
//! once read.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One `recv` reads up to this much. Callers with at least this much room read directly.
const CHUNK: usize = 8 * 1024;

/// Wraps a connection's reads (writes pass through).
pub(crate) struct ReadAhead<T> {
    io: T,
    /// Read from the connection, not yet handed to the caller. Boxed: one pointer in every
    /// connection, the spill itself only while there is one.
    spill: Option<Box<Bytes>>,
}

impl<T> ReadAhead<T> {
    pub(crate) fn new(io: T) -> Self {
        Self { io, spill: None }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadAhead<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(spill) = this.spill.as_mut() {
            let n = buf.remaining().min(spill.len());
            buf.put_slice(&spill[..n]);
            spill.advance(n);
            if spill.is_empty() {
                // Give the allocation back: the connection may now go idle for hours.
                this.spill = None;
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= CHUNK {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let mut chunk = [MaybeUninit::<u8>::uninit(); CHUNK];
        let mut read = ReadBuf::uninit(&mut chunk);
        ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
        let data = read.filled();
        let n = buf.remaining().min(data.len());
        buf.put_slice(&data[..n]);
        if n < data.len() {
            this.spill = Some(Box::new(Bytes::copy_from_slice(&data[n..])));
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadAhead<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_reads_get_every_byte_in_order_and_nothing_is_kept_after() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let sent: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&sent).await.expect("write");
        drop(client);
        let mut reader = ReadAhead::new(server);
        let mut got = Vec::new();
        let mut small = [0u8; 300];
        loop {
            let n = reader.read(&mut small).await.expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
            // A 300-byte read takes what a whole chunk brought in, bit by bit.
            assert!(n <= 300);
        }
        assert_eq!(got, sent);
        assert!(reader.spill.is_none());
    }

    #[tokio::test]
    async fn one_read_from_the_connection_serves_several_small_reads() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(&[7u8; 1000]).await.expect("write");
        let mut reader = ReadAhead::new(server);
        let mut small = [0u8; 512];
        assert_eq!(reader.read(&mut small).await.expect("read"), 512);
        // The rest came with the first read: it is there without the connection being asked.
        assert_eq!(reader.spill.as_ref().map(|s| s.len()), Some(488));
        assert_eq!(reader.read(&mut small).await.expect("read"), 488);
        assert!(reader.spill.is_none());
        // Large reads go straight to the connection.
        client.write_all(&[9u8; 100]).await.expect("write");
        let mut large = vec![0u8; CHUNK];
        assert_eq!(reader.read(&mut large).await.expect("read"), 100);
        assert!(reader.spill.is_none());
    }
}
