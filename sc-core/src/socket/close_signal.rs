//! The one-way switch that ends a connection ([`CloseSignal`]) and what it carries
//! ([`CloseRequest`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use super::lock;

/// The one-way switch that ends a connection: set once (by whoever closes first), awaited by the
/// socket's reader and writer. Lighter than a watch channel, whose eight-way notifier would be
/// most of an idle socket's bookkeeping. The reader waits in a slot of its own and the writer
/// through the outbox's waker ([`Socket`]'s close methods wake it), so neither holds a
/// `Notified` for the socket's life; other waiters (the handshake, publish-out middleware) use
/// [`wait`](Self::wait).
#[derive(Default)]
pub(crate) struct CloseSignal {
    request: Mutex<Option<CloseRequest>>,
    /// `request.is_some()`, readable without the lock (checked after every handled packet).
    is_set: AtomicBool,
    notify: Notify,
    reader: AtomicWaker,
}

impl CloseSignal {
    /// Sets the request unless one is set; whether this call set it.
    pub(super) fn set(&self, request: CloseRequest) -> bool {
        {
            let mut current = lock(&self.request);
            if current.is_some() {
                return false;
            }
            *current = Some(request);
            self.is_set.store(true, Ordering::Release);
        }
        self.notify.notify_waiters();
        self.reader.wake();
        true
    }

    pub(crate) fn get(&self) -> Option<CloseRequest> {
        lock(&self.request).clone()
    }

    pub(crate) fn is_set(&self) -> bool {
        self.is_set.load(Ordering::Acquire)
    }

    /// Ready once a close is requested; the socket's message reader is the only caller.
    pub(crate) fn poll_reader(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_set() {
            return Poll::Ready(());
        }
        self.reader.register(cx.waker());
        // A set() between the check above and the registration woke nobody: seen here.
        if self.is_set() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Waits until a close is requested; the request.
    pub(crate) async fn wait(&self) -> CloseRequest {
        loop {
            // Registered before the check, so a set() in between still wakes this waiter.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(request) = self.get() {
                return request;
            }
            notified.await;
        }
    }
}

/// A request to stop a connection: `code: None` means the peer already closed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CloseRequest {
    pub code: Option<u16>,
    pub reason: String,
}
