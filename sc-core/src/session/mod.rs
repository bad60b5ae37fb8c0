//! One WebSocket connection from upgrade to close, produced by [`run`]:
//!
//! - [`transport`]: the reader (handshake phase, pings and the pong watchdog, responses to server
//!   invokes, decoding) and the writer (ordered queue, batched writes), both polled in the
//!   connection's one task ([`serve`]);
//! - [`inbox`]: the in-order inbound queue, bounded in messages and in bytes;
//! - [`dispatch`]: one message through inbound-raw middleware and each packet to its handler;
//!   publish-out middleware on the socket's own task;
//! - [`procedures`]: the protocol's own `#` procedures (`#handshake`, `#authenticate`,
//!   `#subscribe`, `#unsubscribe`, `#publish`);
//! - [`presence`]: the reserved `#presence` query;
//! - [`contracts`]: declared channels' contracts and the channel-name bound, for `#subscribe`
//!   and `#publish`;
//! - [`limits`]: the per-socket rate limits.
//!
//! Every close code and error reply of `shared/protocol.md` sections 3 and 4 is produced here.
//! The session never decides the process's fate: a handler panic with `crash_worker_on_error`
//! only asks the process model to end the process ([`Shared::request_exit`]).

mod contracts;
mod dispatch;
mod inbox;
mod limits;
mod presence;
mod procedures;
mod transport;

use std::future::Future as _;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocket;
use futures_util::{FutureExt, StreamExt};

use crate::app::middleware::MiddlewareKind;
use crate::app::App;
use crate::protocol::close;
use crate::pubsub::exchange::Exchange;
use crate::pubsub::PubSub;
use crate::socket::{KeptRequest, Shared, Socket};

/// What every connection of one server runs with: the shared state, the app's handlers and
/// middleware, and the channel registry. Built once by the server.
pub(crate) struct Context {
    pub(crate) shared: Arc<Shared>,
    pub(crate) app: App,
    pub(crate) pubsub: Arc<PubSub>,
    pub(crate) exchange: Exchange,
}

/// Serves one upgraded WebSocket until it closes.
pub(crate) fn run(
    ws: WebSocket,
    ctx: Arc<Context>,
    request: KeptRequest,
) -> impl std::future::Future<Output = ()> + Send {
    // Split and the writer started before the future exists: the future would otherwise keep
    // room for the unsplit WebSocket, or the sink, in its state for the socket's whole life.
    let (sink, stream) = ws.split();
    // With publish-out middleware, a task of the socket's own runs it for each publication, in
    // order: a slow call delays this subscriber only, and the writer keeps draining meanwhile
    // (the middleware may itself send to this socket, even invoke it).
    let (publish_out, publications) = if ctx.app.middleware.has(MiddlewareKind::PublishOut) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let socket = Socket::new(ctx.shared.clone(), request, publish_out);
    if let Some(publications) = publications {
        tokio::spawn(dispatch::publish_out_loop(
            publications,
            socket.clone(),
            ctx.clone(),
        ));
    }
    // Boxed: polled beside the reader in the connection's task (no task of its own).
    let writer = Box::pin(transport::write_loop(sink, socket.clone()));
    serve(stream, socket, ctx, writer)
}

// Not an `async fn` (see transport::write_loop).
#[allow(clippy::manual_async_fn)]
fn serve(
    stream: futures_util::stream::SplitStream<WebSocket>,
    socket: Socket,
    ctx: Arc<Context>,
    mut writer: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        // Boxed: only the reader's own state then lives as long as the socket, not room for every
        // later step of this function as well. Route handlers catch their own panics; one from
        // middleware (run here, in the reader) closes this socket with 1011 and still cleans up.
        let mut reading =
            AssertUnwindSafe(Box::pin(transport::read_loop(stream, &ctx, &socket))).catch_unwind();
        let mut writer_done = false;
        // The reader is polled only when something woke it (its own waker), not at every write.
        let reader_wake = Arc::new(ReaderWake::default());
        let reader_waker = std::task::Waker::from(reader_wake.clone());
        let ended = std::future::poll_fn(|cx| {
            reader_wake.task.register(cx.waker());
            let mut read = std::task::Poll::Pending;
            if reader_wake.woken.swap(false, Ordering::AcqRel) {
                // The writer is polled right after the reader: what the reader queues (a reply,
                // an ack) need not wake this task, which would only be polled again for nothing.
                // (A frame another task queues meanwhile is taken by that same poll, or, when the
                // writer is in the middle of a write, once that write is done: it looks at the
                // outbox again before it registers.)
                if !writer_done {
                    socket.0.out.unregister_writer();
                }
                let mut reader_cx = std::task::Context::from_waker(&reader_waker);
                read = std::pin::Pin::new(&mut reading).poll(&mut reader_cx);
            }
            // The reader first: what it queued (an ack, a reply) is written in the same pass.
            if !writer_done && writer.as_mut().poll(cx).is_ready() {
                writer_done = true;
            }
            read
        })
        .await
        .unwrap_or_else(|_| {
            tracing::error!(socket = %socket.id(), "middleware panicked; closing the socket with 1011");
            socket.close_now(close::INTERNAL_ERROR, "");
            transport::ReadEnd {
                registered: true,
                unfinished: None,
            }
        });
        // The peer is gone or we are closing: stop the writer (a pending close frame is still sent).
        socket.close_stop();
        if ended.registered {
            ctx.shared.unregister(&socket);
        }
        ctx.pubsub.remove_socket(&socket);
        socket.abort_pending();
        // Boxed: the timer exists only while closing, not in every idle socket's task.
        if !writer_done
            && Box::pin(tokio::time::timeout(Duration::from_secs(5), &mut writer))
                .await
                .is_err()
        {
            // A peer that stopped reading leaves the writer blocked on a full TCP buffer forever:
            // drop it, which drops the connection.
            tracing::debug!(socket = %socket.id(), "writer did not finish in time; dropping the connection");
        }
        drop(writer);
        socket.0.out.close();
        // A handler still running is not cut off halfway (it may be writing to a database): it
        // finishes here, after the socket is gone. Messages not started yet were dropped.
        if let Some(unfinished) = ended.unfinished {
            if AssertUnwindSafe(unfinished).catch_unwind().await.is_err() {
                tracing::error!(socket = %socket.id(), "middleware panicked after the socket closed");
            }
        }
    }
}

/// The reader's waker inside the connection's task: marks the reader as woken, then wakes the
/// task, so a wakeup for the writer alone (a delivery) does not poll the reader.
struct ReaderWake {
    woken: AtomicBool,
    task: futures_util::task::AtomicWaker,
}

impl Default for ReaderWake {
    fn default() -> Self {
        Self {
            // The first poll polls the reader.
            woken: AtomicBool::new(true),
            task: futures_util::task::AtomicWaker::new(),
        }
    }
}

impl std::task::Wake for ReaderWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}
