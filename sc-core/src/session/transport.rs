//! The connection's two halves, polled in one task (`session::serve`): the reader (the handshake
//! phase, then messages in order through an inbox polled beside the reads, one timer for the pings
//! it queues and the pong watchdog, responses to server invokes) and the writer (the outbox
//! drained in batches, the close frame).

use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;

use super::inbox::{InboundMessage, Inbox, Running};
use super::limits::{Closed, Limits};
use super::procedures::handshake;
use super::Context;
use crate::app::middleware::MiddlewareKind;
use crate::metrics::Metrics;
use crate::protocol::{self, close, Inbound, Packet, ScError};
use crate::socket::{cost, CloseRequest, Outbound, Socket};

/// A writer's spare batch buffer larger than this is freed after use, so a burst does not pin
/// its memory to an idle socket.
const BATCH_KEEP: usize = 64;

// Not an `async fn`: those copy their arguments into the future's locals while keeping their
// original slots, and the writer lives as long as the socket; an async block uses the captures
// in place (64 bytes less per socket).
#[allow(clippy::manual_async_fn)]
pub(super) fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    socket: Socket,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let config = &socket.0.shared.config;
        let mut writer = BatchWriter {
            version: config.protocol_version,
            quiet: false,
            batch: std::collections::VecDeque::new(),
        };
        let outbox = &socket.0.out;
        // No timer: the reader queues the pings (`Outbound::Ping`).
        loop {
            match poll_fn(|cx| poll_writer_event(cx, &socket, &mut writer.batch)).await {
                WriterEvent::Close => {
                    // Boxed, and the close request read here rather than carried in the event:
                    // what the close path holds would otherwise size every idle socket's writer.
                    Box::pin(writer.close(&mut sink, &socket)).await;
                    break;
                }
                WriterEvent::Batch(false) => break,
                WriterEvent::Batch(true) => {
                    // Boxed: the write's state exists only while writing, not in every idle socket.
                    match Box::pin(writer.write(&mut sink, &socket)).await {
                        Ok(false) => {
                            if std::mem::take(&mut writer.quiet) {
                                // Past the handshake, and after a ping, most sockets are quiet:
                                // they keep no buffer (issue 19, idle memory).
                                writer.release_buffers(outbox);
                            }
                        }
                        Ok(true) | Err(()) => break,
                    }
                }
            }
        }
        outbox.close();
        // A failed write ends the connection for the reader too.
        socket.close_stop();
        let _ = sink.close().await;
    }
}

/// What wakes the writer: a close request (seen first; read from the socket's close signal), or
/// frames to write (`Batch(false)`: the outbox is closed and empty).
enum WriterEvent {
    Close,
    Batch(bool),
}

/// The writer's wait. One waker for both: a close request wakes the outbox's waker too
/// ([`Socket::close_now`], [`Socket::close_stop`]), so the writer holds no close waiter of its own.
fn poll_writer_event(
    cx: &mut std::task::Context<'_>,
    socket: &Socket,
    batch: &mut std::collections::VecDeque<Outbound>,
) -> Poll<WriterEvent> {
    let ready = |batch: &mut std::collections::VecDeque<Outbound>| {
        if socket.0.close.is_set() {
            return Some(WriterEvent::Close);
        }
        socket.0.out.take_now(batch).map(WriterEvent::Batch)
    };
    if let Some(event) = ready(batch) {
        return Poll::Ready(event);
    }
    socket.0.out.register_writer(cx.waker());
    // Anything that came between the check above and the registration woke nobody: seen here.
    ready(batch).map_or(Poll::Pending, Poll::Ready)
}

/// Writes batches taken from the outbox.
struct BatchWriter {
    version: crate::protocol::ProtocolVersion,
    /// The batch written last held the handshake's end or a ping: the socket is likely quiet now.
    quiet: bool,
    batch: std::collections::VecDeque<Outbound>,
}

impl BatchWriter {
    /// Frees the (empty) batch buffer and the outbox's, when it is empty too.
    fn release_buffers(&mut self, outbox: &crate::socket::Outbox) {
        if self.batch.capacity() > 0 {
            self.batch = std::collections::VecDeque::new();
        }
        outbox.shrink_if_empty();
    }

    /// Ends the connection for a close request: with its close frame, or, when the reader is done
    /// (the peer left, or we rejected it), after writing what is still queued, such as a
    /// rejection reply and its close frame.
    async fn close(&mut self, sink: &mut SplitSink<WebSocket, Message>, socket: &Socket) {
        match socket.0.close.get() {
            Some(CloseRequest {
                code: Some(code),
                reason,
            }) => {
                let _ = sink.send(close_frame(code, reason)).await;
            }
            _ => {
                if socket.0.out.take_now(&mut self.batch) == Some(true) {
                    let _ = self.write(sink, socket).await;
                }
            }
        }
    }

    /// Writes the batch and flushes once; `Ok(true)` when it ended with a close (sent, and the
    /// socket marked closed), `Err` when the connection failed. Releases the batch's bytes.
    async fn write(
        &mut self,
        sink: &mut SplitSink<WebSocket, Message>,
        socket: &Socket,
    ) -> Result<bool, ()> {
        let mut written = 0u64;
        // Every frame taken is released, also those after a close, which are never written.
        let bytes: usize = self.batch.iter().map(cost).sum();
        let mut closing = None;
        let mut failed = false;
        for item in self.batch.drain(..) {
            match item {
                Outbound::Frame(frame) => {
                    if failed {
                        continue;
                    }
                    if sink.feed(Message::Text(frame)).await.is_err() {
                        failed = true;
                    }
                    written += 1;
                }
                Outbound::HandshakeDone => self.quiet = true,
                Outbound::Ping => {
                    self.quiet = true;
                    if failed {
                        continue;
                    }
                    // Not a message: `messages_out` does not count it.
                    let ping = Message::Text(Utf8Bytes::from_static(self.version.ping()));
                    if sink.feed(ping).await.is_err() {
                        failed = true;
                    }
                }
                Outbound::Close(code, reason) => {
                    // Anything queued after a close is never written.
                    closing = Some((code, reason));
                    break;
                }
            }
        }
        self.batch.clear();
        if self.batch.capacity() > BATCH_KEEP {
            self.batch = std::collections::VecDeque::new();
        }
        Metrics::add(&socket.0.shared.metrics.messages_out, written);
        let flushed = !failed && sink.flush().await.is_ok();
        socket.0.out.release(bytes);
        if !flushed {
            return Err(());
        }
        let Some((code, reason)) = closing else {
            return Ok(false);
        };
        if self.version == crate::protocol::ProtocolVersion::V1 {
            let _ = sink.feed(v1_disconnect(code, &reason)).await;
        }
        let _ = sink.send(close_frame(code, reason.clone())).await;
        socket.close_now(code, reason);
        Ok(true)
    }
}

fn close_frame(code: u16, reason: String) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// v14 clients (protocol v1) learn the code and reason of a server disconnect from this event; the
/// close frame itself carried no reason there.
fn v1_disconnect(code: u16, reason: &str) -> Message {
    let data = serde_json::json!({ "code": code, "data": reason });
    let text = protocol::encode_event("#disconnect", None, Some(&data)).unwrap_or_default();
    Message::Text(text.into())
}

/// Converts a WebSocket message to text. Binary frames are accepted as UTF-8 JSON (the reference
/// does the same); invalid UTF-8 is treated as unreadable raw input.
fn text_of(msg: Message) -> Option<Result<Utf8Bytes, ()>> {
    match msg {
        Message::Text(t) => Some(Ok(t)),
        Message::Binary(b) => Some(Utf8Bytes::try_from(b).map_err(|_| ())),
        Message::Ping(_) | Message::Pong(_) => None,
        Message::Close(_) => Some(Err(())),
    }
}

enum ReadEvent {
    Message(Message),
    Closed,
    /// The peer broke the WebSocket rules: close with this code (1009 too big, 1007 invalid
    /// UTF-8 in a text frame, 1002 other protocol errors).
    Violation(u16),
}

async fn next_event(stream: &mut SplitStream<WebSocket>) -> ReadEvent {
    match stream.next().await {
        None => ReadEvent::Closed,
        Some(Ok(Message::Close(_))) => ReadEvent::Closed,
        Some(Ok(m)) => ReadEvent::Message(m),
        Some(Err(e)) => match violation_code(&e) {
            Some(code) => ReadEvent::Violation(code),
            None => {
                tracing::debug!(error = %e, "websocket read error");
                ReadEvent::Closed
            }
        },
    }
}

/// The close code for a read error that is the peer's fault (not a dropped connection).
fn violation_code(e: &axum::Error) -> Option<u16> {
    use std::error::Error as _;
    use tokio_tungstenite::tungstenite::Error as WsError;
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(err) = source {
        if let Some(t) = err.downcast_ref::<WsError>() {
            return match t {
                WsError::Capacity(_) => Some(close::MESSAGE_TOO_BIG),
                WsError::Utf8(_) => Some(close::INVALID_PAYLOAD),
                WsError::Protocol(_) => Some(close::PROTOCOL_ERROR),
                _ => None,
            };
        }
        source = err.source();
    }
    None
}

/// The error for a message holding a lone UTF-16 surrogate escape, naming the first one.
fn lone_surrogate_error(text: &str) -> ScError {
    let escape = protocol::lone_surrogate(text).unwrap_or("\\ud800");
    ScError::new(
        "InvalidMessageError",
        format!(
            "The message holds a lone UTF-16 surrogate ({escape}): JSON.parse accepts it, but \
             sc does not support it; send well-formed Unicode text"
        ),
    )
}

/// Answers an invoke whose message holds a lone surrogate with `error` (see
/// [`lone_surrogate_error`], built once per message: a batch may hold many packets); a transmit
/// has no one to answer, so it returns false for the caller to count and log once.
fn refuse_lone_surrogate(socket: &Socket, error: &ScError, cid: Option<u64>) -> bool {
    match cid {
        Some(cid) => {
            let _ = socket.push(protocol::encode_error_response(cid, error).into());
            true
        }
        None => false,
    }
}

/// The cid of a first message that is a `#handshake` holding a lone surrogate.
fn handshake_with_lone_surrogate(text: &str) -> Option<u64> {
    match protocol::decode_lone_surrogates(text)?.into_iter().next()? {
        Packet::Event { event, cid, .. } if event == "#handshake" => cid,
        _ => None,
    }
}

/// A message's text as what the inbox runs: `None` when nothing is left to run (responses to
/// server invokes resolved here, refusals answered here, messages over a rate limit dropped),
/// `Err` when a limit closed the socket.
fn inbound_message(
    ctx: &Context,
    socket: &Socket,
    limits: &mut Limits,
    text: &str,
    raw_middleware: bool,
    now: std::time::Instant,
) -> Result<Option<InboundMessage>, Closed> {
    // One app event (most messages): its payload stays the client's text.
    if !raw_middleware {
        if let Some(event) = protocol::decode_event(text) {
            let admitted = limits.apply_one((socket, &ctx.app), &event, now)?;
            return Ok(admitted.then(|| InboundMessage {
                raw: None,
                packets: Vec::new(),
                event: Some(event),
            }));
        }
    }
    let (packets, lone_surrogate) = match protocol::decode(text) {
        Inbound::Raw => match protocol::decode_lone_surrogates(text) {
            Some(packets) => (packets, true),
            None => (Vec::new(), false),
        },
        Inbound::Packets(packets) => (packets, false),
    };
    let surrogate_error = lone_surrogate.then(|| lone_surrogate_error(text));
    let packets: Vec<Packet> = packets
        .into_iter()
        .filter(|p| match p {
            Packet::Response { rid, data, error } => {
                let result = match (&surrogate_error, error) {
                    (Some(e), _) => Err(e.clone()),
                    (None, Some(e)) => Err(ScError::from_wire(e)),
                    (None, None) => Ok(data.clone()),
                };
                socket.resolve(*rid, result);
                false
            }
            _ => true,
        })
        .collect();
    let mut packets = limits.apply(socket, &ctx.app, packets, now)?;
    if let Some(error) = &surrogate_error {
        // Answered here, never handled: the data is not what the client sent. Like a
        // rate-limit refusal, the answer may overtake replies to earlier messages.
        let transmits = packets
            .drain(..)
            .filter(|p| match p {
                Packet::Event { cid, .. } => !refuse_lone_surrogate(socket, error, *cid),
                _ => false,
            })
            .count();
        if transmits > 0 {
            tracing::warn!(socket = %socket.id(), transmits, %error, "transmits refused");
        }
    }
    if packets.is_empty() && !raw_middleware {
        return Ok(None);
    }
    Ok(Some(InboundMessage {
        raw: raw_middleware.then(|| text.to_string()),
        packets,
        event: None,
    }))
}

/// How the reader ended.
pub(super) struct ReadEnd<'a> {
    /// The socket completed its handshake (and so was registered with the server).
    pub(super) registered: bool,
    /// A handler still running when the reader gave up waiting for it: the caller lets it finish
    /// after cleaning up.
    pub(super) unfinished: Option<Running<'a>>,
}

/// Phase 1: the first message must be `#handshake` with a numeric cid. The packets that came
/// after it in the same message, or `None` when the socket is closing.
async fn read_handshake(
    stream: &mut SplitStream<WebSocket>,
    ctx: &Context,
    socket: &Socket,
) -> Option<Vec<Packet>> {
    let deadline = Instant::now() + ctx.shared.config.handshake_timeout;
    loop {
        let event = tokio::select! {
            _ = socket.0.close.wait() => return None,
            r = tokio::time::timeout_at(deadline, next_event(stream)) => match r {
                Ok(e) => e,
                Err(_) => {
                    socket.close_now(close::HANDSHAKE_TIMEOUT, "");
                    return None;
                }
            },
        };
        let msg = match event {
            ReadEvent::Closed => return None,
            ReadEvent::Violation(code) => {
                socket.close_now(code, "");
                return None;
            }
            ReadEvent::Message(m) => m,
        };
        let Some(text) = text_of(msg) else { continue };
        let Ok(text) = text else {
            socket.close_now(close::MESSAGE_BEFORE_HANDSHAKE, "");
            return None;
        };
        let mut packets = match protocol::decode(&text) {
            Inbound::Packets(p) if !p.is_empty() => p,
            _ => {
                if let Some(cid) = handshake_with_lone_surrogate(&text) {
                    // Refused with a reason, not 4009: the client did send a handshake.
                    refuse_lone_surrogate(socket, &lone_surrogate_error(&text), Some(cid));
                    socket.disconnect(close::HANDSHAKE_REJECTED, "");
                    return None;
                }
                socket.close_now(close::MESSAGE_BEFORE_HANDSHAKE, "");
                return None;
            }
        };
        let first = packets.remove(0);
        match first {
            Packet::Event { event, data, cid } if event == "#handshake" => {
                let Some(cid) = cid else {
                    tracing::warn!("InvalidActionError: Handshake request was malformatted");
                    socket.close_now(close::HANDSHAKE_REJECTED, "");
                    return None;
                };
                if !handshake(ctx, socket, cid, data).await {
                    return None;
                }
                return Some(packets);
            }
            _ => {
                socket.close_now(close::MESSAGE_BEFORE_HANDSHAKE, "");
                return None;
            }
        }
    }
}

/// Reads until the connection ends: the handshake, then the socket's messages.
// Not an `async fn` (see write_loop): the reader lives as long as the socket. One async block
// for both phases: a second one nested in it would keep the captures twice, and what the
// handshake left over would keep its slot for the socket's life (56 bytes per socket).
#[allow(clippy::manual_async_fn)]
pub(super) fn read_loop<'a>(
    mut stream: SplitStream<WebSocket>,
    ctx: &'a Context,
    socket: &'a Socket,
) -> impl std::future::Future<Output = ReadEnd<'a>> + Send + 'a {
    async move {
        // Phase 1, the handshake, in a block of its own: what it left over is not kept across
        // later awaits. Then phase 2: messages run through middleware and handlers one at a
        // time, in order, from the inbox, a future polled beside the reads (no task or channel of
        // their own: an idle socket holds neither). The reader keeps answering pongs and
        // resolving the client's responses to server invokes while a handler runs, so a handler
        // awaiting one never deadlocks its own socket.
        let mut inbox = {
            // Boxed, and gone once the handshake is done: its state would otherwise size the
            // reader (and so every idle socket) for the socket's whole life.
            let Some(rest) = Box::pin(read_handshake(&mut stream, ctx, socket)).await else {
                return ReadEnd {
                    registered: false,
                    unfinished: None,
                };
            };
            let mut inbox = Inbox::default();
            // An empty `rest` is dropped here: with capacity it would stay allocated.
            if !rest.is_empty() {
                inbox.push(
                    ctx,
                    socket,
                    InboundMessage {
                        raw: None,
                        packets: rest,
                        event: None,
                    },
                );
            }
            inbox
        };
        let config = &ctx.shared.config;
        let raw_middleware = ctx.app.middleware.has(MiddlewareKind::InboundRaw);

        let mut limits = Limits::new(config, std::time::Instant::now());
        // One timer for the socket's life, for both the pings and the pong watchdog: it fires at
        // whichever is due first and is moved only then (a pong or any message just moves
        // `alive_until`). Pings are queued behind the handshake reply, which is queued already.
        // (What lives across an await is kept in every idle socket's reader: no local copies of
        // the config, no message text, only what the loop needs.)
        let (mut next_ping, mut alive_until) = {
            let started = Instant::now();
            (
                started + config.ping_interval,
                started + config.ping_timeout,
            )
        };
        let timer = tokio::time::sleep_until(next_ping.min(alive_until));
        tokio::pin!(timer);
        let mut unreported_in = 0;
        loop {
            let watching = !config.ping_timeout_disabled && !socket.pings_paused();
            let reading = inbox.has_room(config);
            // Biased, in the order that polls least per message (a random order costs a random
            // number each time): the running handler first, so a message read in one pass is
            // handled in the next without polling anything else; the close waiter before each
            // read, so a closing socket reads no more; the timer (pings, pong watchdog) last, polled
            // only when nothing else is ready (a message arriving proves liveness anyway). Paused
            // pings (a test hook) and a disabled timeout stop both the pings and the watchdog.
            let event = tokio::select! {
                biased;
                () = inbox.run(), if inbox.running.is_some() => {
                    inbox.next(ctx, socket);
                    continue;
                }
                // The reader's own slot in the close signal: no waiter held for the socket's life.
                () = poll_fn(|cx| socket.0.close.poll_reader(cx)) => break,
                e = next_event(&mut stream), if reading => e,
                _ = &mut timer, if watching => {
                    let now = Instant::now();
                    if now >= alive_until {
                        socket.close_now(close::PONG_TIMEOUT, "");
                        break;
                    }
                    if now >= next_ping {
                        socket.ping();
                        next_ping = now + config.ping_interval;
                    }
                    timer.as_mut().reset(next_ping.min(alive_until));
                    continue;
                }
            };
            let message = {
                let msg = match event {
                    ReadEvent::Closed => break,
                    ReadEvent::Violation(code) => {
                        socket.close_now(code, "");
                        break;
                    }
                    ReadEvent::Message(m) => m,
                };
                let Some(Ok(text)) = text_of(msg) else {
                    continue;
                };
                // Counted here and added to the shared counter in batches (every socket's reader
                // bumping one atomic per message contends on it): at 64, at each pong, and when
                // the reader ends.
                unreported_in += 1;
                if unreported_in == 64 {
                    Metrics::add(&ctx.shared.metrics.messages_in, unreported_in);
                    unreported_in = 0;
                }
                let now = Instant::now();
                // Any message proves liveness (the timer is not moved: it fires when it was due
                // and finds the new time).
                alive_until = now + config.ping_timeout;
                if text.as_str() == config.protocol_version.pong() {
                    if unreported_in > 0 {
                        Metrics::add(&ctx.shared.metrics.messages_in, unreported_in);
                        unreported_in = 0;
                    }
                    socket.count_pong();
                    socket.check_expiry();
                    continue;
                }
                match inbound_message(
                    ctx,
                    socket,
                    &mut limits,
                    &text,
                    raw_middleware,
                    now.into_std(),
                ) {
                    Ok(Some(message)) => message,
                    Ok(None) => continue,
                    Err(Closed) => break,
                }
            };
            let idle = inbox.running.is_none();
            inbox.push(ctx, socket, message);
            // Most handlers finish at once: polled here, they are done without another pass
            // through the select above.
            if idle && poll_fn(|cx| Poll::Ready(inbox.poll_running(cx))).await {
                inbox.next(ctx, socket);
            }
        }
        Metrics::add(&ctx.shared.metrics.messages_in, unreported_in);
        // Let the handlers finish what they are doing (one may be writing a reply), bounded.
        // Meanwhile read and discard until the peer answers our close frame: closing with its data
        // unread would make the kernel reset the connection, and a flooding client would then never
        // see the close code it was given.
        // Both end by themselves or time out; either way the connection is over.
        let _ = Box::pin(async {
            let finish = async {
                while inbox.running.is_some() {
                    inbox.run().await;
                    inbox.next(ctx, socket);
                }
            };
            let drain = async {
                while let Some(Ok(msg)) = stream.next().await {
                    if matches!(msg, Message::Close(_)) {
                        break;
                    }
                }
            };
            tokio::join!(
                tokio::time::timeout(Duration::from_secs(1), finish),
                tokio::time::timeout(Duration::from_secs(1), drain),
            )
        })
        .await;
        // A handler still running is not cut off halfway (it may be writing to a database): the
        // caller lets it finish. Messages not started yet are dropped with the socket.
        ReadEnd {
            registered: true,
            unfinished: inbox.running.take(),
        }
    }
}
