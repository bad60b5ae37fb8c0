//! A socket's outbound queue: frames in order, bounded in bytes, holding no allocation while the
//! socket is idle. Anyone pushes without waiting; the socket's writer takes everything queued
//! in one swap, writes it as one batch, and releases its bytes only once the batch is flushed, so
//! the queue plus the batch in flight stay within the limit.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::Waker;

use futures_util::task::AtomicWaker;

use super::{lock, Outbound};
use crate::limit::SlowConsumer;

/// What a queued frame costs beyond its text (the queue slot, the shared buffer's header), so that
/// a flood of tiny frames is bounded too.
pub(crate) const ENTRY_OVERHEAD: usize = 64;

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The writer is gone.
    Closed,
    /// Over the limit with [`SlowConsumer::Disconnect`]: the caller closes the socket.
    Full,
    /// Over the limit with [`SlowConsumer::Drop`]: this frame was discarded.
    Dropped,
}

pub(crate) struct Outbox {
    state: Mutex<State>,
    /// `state.closed`, readable without the lock the writer holds while it takes a batch.
    closed: AtomicBool,
    /// The writer, the only one who takes, waiting for something to take.
    ready: AtomicWaker,
    limit: usize,
    policy: SlowConsumer,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Outbound>,
    /// Bytes queued plus bytes the writer took and has not flushed yet.
    bytes: usize,
    closed: bool,
}

/// The bytes an item counts for against the limit (control items count nothing).
pub(crate) fn cost(item: &Outbound) -> usize {
    match item {
        Outbound::Frame(frame) => frame_cost(frame.len()),
        Outbound::HandshakeDone | Outbound::Ping | Outbound::Close(..) => 0,
    }
}

/// The bytes a frame of `len` bytes counts for.
pub(crate) fn frame_cost(len: usize) -> usize {
    len + ENTRY_OVERHEAD
}

impl Outbox {
    pub(crate) fn new(limit: usize, policy: SlowConsumer) -> Self {
        Self {
            state: Mutex::new(State::default()),
            closed: AtomicBool::new(false),
            ready: AtomicWaker::new(),
            limit,
            policy,
        }
    }

    /// Queues a frame (or a publication), or refuses it when the queue is over its limit. A
    /// frame always fits into an empty queue, however large: the application made it, and
    /// refusing it could never succeed.
    pub(crate) fn push(&self, item: Outbound) -> Result<(), PushError> {
        let size = cost(&item);
        {
            let mut state = lock(&self.state);
            self.admit(&mut state, size)?;
            state.queue.push_back(item);
        }
        self.ready.wake();
        Ok(())
    }

    /// Counts `size` bytes against the limit for something on its way to the queue (a
    /// publication in publish-out middleware), as [`push`](Self::push) would; the caller
    /// [`release`](Self::release)s them when it is through.
    pub(crate) fn reserve(&self, size: usize) -> Result<(), PushError> {
        self.admit(&mut lock(&self.state), size)
    }

    fn admit(&self, state: &mut State, size: usize) -> Result<(), PushError> {
        if state.closed {
            return Err(PushError::Closed);
        }
        if state.bytes > 0 && state.bytes + size > self.limit {
            return Err(match self.policy {
                SlowConsumer::Disconnect => PushError::Full,
                SlowConsumer::Drop => PushError::Dropped,
            });
        }
        state.bytes += size;
        Ok(())
    }

    /// The bytes that can still be queued before the limit.
    pub(crate) fn free(&self) -> usize {
        self.limit.saturating_sub(lock(&self.state).bytes)
    }

    /// Queues a control item (a ping, the handshake's end, close after the queue); never refused
    /// while open.
    pub(crate) fn push_control(&self, item: Outbound) -> bool {
        {
            let mut state = lock(&self.state);
            if state.closed {
                return false;
            }
            state.queue.push_back(item);
        }
        self.ready.wake();
        true
    }

    /// Moves everything queued into `batch` (empty on entry; its capacity becomes the queue's):
    /// `Some(true)` when there was something, `Some(false)` when the outbox is closed and empty,
    /// `None` when there is nothing yet (then [`register_writer`](Self::register_writer) and ask
    /// again, so that a push in between is not missed).
    pub(crate) fn take_now(&self, batch: &mut VecDeque<Outbound>) -> Option<bool> {
        let mut state = lock(&self.state);
        if !state.queue.is_empty() {
            std::mem::swap(&mut state.queue, batch);
            return Some(true);
        }
        state.closed.then_some(false)
    }

    /// The waker of the writer, the only one who takes (an `AtomicWaker`: smaller and cheaper to
    /// wake than a `Notify`): woken by every push, by [`close`](Self::close) and by
    /// [`wake`](Self::wake), until [`unregister_writer`](Self::unregister_writer).
    pub(crate) fn register_writer(&self, waker: &Waker) {
        self.ready.register(waker);
    }

    /// Forgets the writer's waker until it registers again: for a caller that polls the writer
    /// anyway once its current step is done (the connection's task, around its reader), so that
    /// what the step queues does not wake the task it runs in. The writer takes what was queued
    /// meanwhile when it is polled, and registers again before it waits.
    pub(crate) fn unregister_writer(&self) {
        drop(self.ready.take());
    }

    /// Wakes the writer without queueing anything (a close was requested).
    pub(crate) fn wake(&self) {
        self.ready.wake();
    }

    /// Frees the queue's buffer when it holds nothing: a socket gone idle keeps no allocation
    /// (the writer's batches swap buffers with the queue, so it would otherwise keep one).
    pub(crate) fn shrink_if_empty(&self) {
        let mut state = lock(&self.state);
        if state.queue.is_empty() && state.queue.capacity() > 0 {
            state.queue = VecDeque::new();
        }
    }

    /// The writer flushed frames worth `bytes` (as counted by [`cost`]).
    pub(crate) fn release(&self, bytes: usize) {
        let mut state = lock(&self.state);
        state.bytes = state.bytes.saturating_sub(bytes);
    }

    /// The writer is done: later pushes fail with [`PushError::Closed`] and queued items are freed.
    pub(crate) fn close(&self) {
        let queue = {
            let mut state = lock(&self.state);
            state.closed = true;
            self.closed.store(true, Ordering::Release);
            state.bytes = 0;
            std::mem::take(&mut state.queue)
        };
        drop(queue);
        self.ready.wake();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Outbound {
        Outbound::Frame("x".repeat(n).into())
    }

    #[test]
    fn an_empty_queue_gives_its_buffer_back_and_a_busy_one_keeps_it() {
        let outbox = Outbox::new(10_000, SlowConsumer::Disconnect);
        outbox.push(frame(10)).expect("queued");
        outbox.shrink_if_empty();
        assert!(lock(&outbox.state).queue.capacity() > 0, "it holds a frame");
        // The writer's batch swaps its (empty, allocated) buffer into the queue.
        let mut batch = VecDeque::with_capacity(8);
        assert_eq!(outbox.take_now(&mut batch), Some(true));
        assert!(lock(&outbox.state).queue.capacity() >= 8);
        outbox.shrink_if_empty();
        assert_eq!(
            lock(&outbox.state).queue.capacity(),
            0,
            "idle: no allocation"
        );
    }

    #[test]
    fn the_queue_stays_within_its_byte_limit_until_the_writer_releases() {
        let outbox = Outbox::new(10_000, SlowConsumer::Disconnect);
        let mut accepted = 0;
        let mut refused = 0;
        for _ in 0..100 {
            match outbox.push(frame(1000)) {
                Ok(()) => accepted += 1,
                Err(e) => {
                    assert_eq!(e, PushError::Full);
                    refused += 1;
                }
            }
        }
        // 1064 bytes each: 9 fit into 10 000.
        assert_eq!(accepted, 9);
        assert_eq!(refused, 91);
        assert!(lock(&outbox.state).bytes <= 10_000);

        // Taking is not enough: the bytes are in flight until the writer flushed them.
        let mut batch = VecDeque::new();
        assert_eq!(outbox.take_now(&mut batch), Some(true));
        assert_eq!(batch.len(), 9);
        assert_eq!(outbox.push(frame(1000)), Err(PushError::Full));
        outbox.release(9 * cost(&frame(1000)));
        assert_eq!(outbox.push(frame(1000)), Ok(()));
    }

    #[test]
    fn drop_policy_discards_and_an_empty_queue_takes_any_frame() {
        let outbox = Outbox::new(100, SlowConsumer::Drop);
        assert_eq!(outbox.push(frame(5000)), Ok(()), "empty: always fits");
        assert_eq!(outbox.push(frame(1)), Err(PushError::Dropped));
        // Control items are never refused while open, so a close still gets through.
        assert!(outbox.push_control(Outbound::HandshakeDone));
        outbox.close();
        assert_eq!(outbox.push(frame(1)), Err(PushError::Closed));
        assert!(!outbox.push_control(Outbound::HandshakeDone));
        assert!(outbox.is_closed());
    }

    #[tokio::test]
    async fn the_writer_is_woken_by_a_push_and_ends_after_close() {
        let outbox = std::sync::Arc::new(Outbox::new(1000, SlowConsumer::Disconnect));
        let o = outbox.clone();
        let taker = tokio::spawn(async move {
            let mut batch = VecDeque::new();
            let mut seen = 0;
            let take = |cx: &mut std::task::Context<'_>, batch: &mut VecDeque<Outbound>| {
                if let Some(more) = o.take_now(batch) {
                    return std::task::Poll::Ready(more);
                }
                o.register_writer(cx.waker());
                o.take_now(batch)
                    .map_or(std::task::Poll::Pending, std::task::Poll::Ready)
            };
            while std::future::poll_fn(|cx| take(cx, &mut batch)).await {
                seen += batch.len();
                batch.clear();
            }
            seen
        });
        tokio::task::yield_now().await;
        outbox.push(frame(1)).expect("queued");
        outbox.push(frame(1)).expect("queued");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        outbox.close();
        let seen = taker.await.expect("taker");
        assert_eq!(seen, 2);
    }

    /// Counts its wakeups.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn an_unregistered_writer_is_not_woken_but_finds_what_was_queued() {
        let outbox = Outbox::new(1000, SlowConsumer::Disconnect);
        let count = std::sync::Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        outbox.register_writer(&waker);
        outbox.unregister_writer();
        outbox.push(frame(1)).expect("queued");
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "no wakeup");
        let mut batch = VecDeque::new();
        assert_eq!(outbox.take_now(&mut batch), Some(true));
        assert_eq!(
            batch.len(),
            1,
            "the frame is there for the writer's next poll"
        );
        // Registered again, it is woken as before.
        outbox.register_writer(&waker);
        outbox.push(frame(1)).expect("queued");
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
}
