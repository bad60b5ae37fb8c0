//! One WebSocket connection from upgrade to close: the handshake, the reader (pong watchdog,
//! responses to server invokes, decoding), the writer (ordered queue, batched writes, pings) and
//! the dispatcher that runs middleware and handlers for that socket strictly in order, like the
//! reference. Every close code and error reply of `shared/protocol.md` sections 3 and 4 is
//! produced here.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::error::ScError;
use crate::handler::{ActionKind, Origin, Parts, Reply, Request};
use crate::limit::{Bucket, LimitAction};
use crate::metrics::Metrics;
use crate::middleware::MiddlewareKind;
use crate::protocol::{self, close, Inbound, Packet};
use crate::server::ServerShared;
use crate::socket::{lock, AuthState, CloseRequest, Outbound, RequestInfo, Socket};

/// A writer's spare batch buffer larger than this is freed after use, so a burst does not pin
/// its memory to an idle socket.
const BATCH_KEEP: usize = 64;

/// One decoded inbound message waiting for the dispatcher.
struct InboundMessage {
    /// The message text, kept only when inbound-raw middleware needs it.
    raw: Option<String>,
    packets: Vec<Packet>,
}

/// Serves one upgraded WebSocket until it closes.
pub(crate) fn run(
    ws: WebSocket,
    server: Arc<ServerShared>,
    request: Arc<RequestInfo>,
) -> impl std::future::Future<Output = ()> + Send {
    // Split and the writer started before the future exists: the future would otherwise keep
    // room for the unsplit WebSocket, or the sink, in its state for the socket's whole life.
    let (sink, stream) = ws.split();
    let socket = Socket::new(server.clone(), request);
    let writer = tokio::spawn(write_loop(sink, socket.clone()));
    serve(stream, socket, server, writer)
}

// Not an `async fn` (see write_loop).
#[allow(clippy::manual_async_fn)]
fn serve(
    stream: SplitStream<WebSocket>,
    socket: Socket,
    server: Arc<ServerShared>,
    mut writer: tokio::task::JoinHandle<()>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        // Boxed: only the reader's own state then lives as long as the socket, not room for every
        // later step of this function as well. Route handlers catch their own panics; one from
        // middleware (run here, in the reader) closes this socket with 1011 and still cleans up.
        let registered = AssertUnwindSafe(Box::pin(read_loop(stream, &socket)))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                tracing::error!(socket = %socket.id(), "middleware panicked; closing the socket with 1011");
                socket.close_now(close::INTERNAL_ERROR, "");
                true
            });

        // The peer is gone or we are closing: stop the writer (a pending close frame is still sent).
        socket.close_stop();
        if registered {
            server.unregister(&socket);
        }
        server.pubsub.remove_socket(&socket);
        socket.abort_pending();
        if tokio::time::timeout(Duration::from_secs(5), &mut writer)
            .await
            .is_err()
        {
            // A peer that stopped reading leaves the writer blocked on a full TCP buffer forever:
            // abort it, which drops the connection.
            tracing::debug!(socket = %socket.id(), "writer did not finish in time; dropping the connection");
            writer.abort();
        }
        socket.0.out.close();
    }
}

// Not an `async fn`: those copy their arguments into the future's locals while keeping their
// original slots, and the writer lives as long as the socket; an async block uses the captures
// in place (64 bytes less per socket).
#[allow(clippy::manual_async_fn)]
fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    socket: Socket,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let config = &socket.0.server.config;
        let mut writer = BatchWriter {
            v1: config.protocol_version == crate::protocol::ProtocolVersion::V1,
            pinging: false,
            batch: std::collections::VecDeque::new(),
        };
        // One timer for the socket's life, moved when pinging starts and after each ping.
        let ping_timer = tokio::time::sleep(config.ping_interval);
        tokio::pin!(ping_timer);
        let outbox = &socket.0.out;
        // One close waiter for the writer's life, not one registration per batch.
        let closed = socket.0.close.wait();
        tokio::pin!(closed);

        loop {
            let ping_due =
                writer.pinging && !config.ping_timeout_disabled && !socket.pings_paused();
            tokio::select! {
                biased;
                request = &mut closed => {
                    match request {
                        CloseRequest { code: Some(code), reason } => {
                            let _ = Box::pin(sink.send(close_frame(code, reason))).await;
                            break;
                        }
                        CloseRequest { code: None, .. } => {
                            // The reader is done (the peer left, or we rejected it): write what is
                            // still queued, such as a rejection reply and its close frame.
                            if outbox.try_take(&mut writer.batch) {
                                let _ = Box::pin(writer.write(&mut sink, &socket)).await;
                            }
                            break;
                        }
                    }
                }
                more = outbox.take(&mut writer.batch) => {
                    if !more {
                        break;
                    }
                    let was_pinging = writer.pinging;
                    // Boxed: the write's state exists only while writing, not in every idle socket.
                    match Box::pin(writer.write(&mut sink, &socket)).await {
                        Ok(false) => {
                            if writer.pinging && !was_pinging {
                                ping_timer.as_mut().reset(Instant::now() + config.ping_interval);
                            }
                        }
                        Ok(true) | Err(()) => break,
                    }
                }
                _ = &mut ping_timer, if ping_due => {
                    let ping = Utf8Bytes::from_static(config.protocol_version.ping());
                    if Box::pin(sink.send(Message::Text(ping))).await.is_err() {
                        break;
                    }
                    ping_timer.as_mut().reset(Instant::now() + config.ping_interval);
                }
            }
        }
        outbox.close();
        // A failed write ends the connection for the reader too.
        socket.close_stop();
        let _ = sink.close().await;
    }
}

/// Writes batches taken from the outbox.
struct BatchWriter {
    v1: bool,
    pinging: bool,
    batch: std::collections::VecDeque<Outbound>,
}

impl BatchWriter {
    /// Writes the batch and flushes once; `Ok(true)` when it ended with a close (sent, and the
    /// socket marked closed), `Err` when the connection failed. Releases the batch's bytes.
    async fn write(
        &mut self,
        sink: &mut SplitSink<WebSocket, Message>,
        socket: &Socket,
    ) -> Result<bool, ()> {
        let mut written = 0u64;
        // Every frame taken is released, also those after a close, which are never written.
        let bytes: usize = self
            .batch
            .iter()
            .map(|item| match item {
                Outbound::Frame(frame) => crate::outbox::cost(frame),
                _ => 0,
            })
            .sum();
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
                Outbound::StartPing => self.pinging = true,
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
        Metrics::add(&socket.0.server.metrics.messages_out, written);
        let flushed = !failed && sink.flush().await.is_ok();
        socket.0.out.release(bytes);
        if !flushed {
            return Err(());
        }
        let Some((code, reason)) = closing else {
            return Ok(false);
        };
        if self.v1 {
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

/// Reads until the connection ends. Returns whether the socket completed its handshake (and so
/// was registered with the server).
// Not `async fn`s (see write_loop): the reader lives as long as the socket.
#[allow(clippy::manual_async_fn)]
fn read_loop(
    mut stream: SplitStream<WebSocket>,
    socket: &Socket,
) -> impl std::future::Future<Output = bool> + Send + '_ {
    async move {
        // Boxed, and gone once the handshake is done: its state would otherwise size the reader
        // (and so every idle socket) for the socket's whole life.
        let Some(rest) = Box::pin(read_handshake(&mut stream, socket)).await else {
            return false;
        };
        read_messages(stream, socket, rest).await
    }
}

/// Phase 1: the first message must be `#handshake` with a numeric cid. The packets that came
/// after it in the same message, or `None` when the socket is closing.
async fn read_handshake(
    stream: &mut SplitStream<WebSocket>,
    socket: &Socket,
) -> Option<Vec<Packet>> {
    let deadline = Instant::now() + socket.0.server.config.handshake_timeout;
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
                if !handshake(socket, cid, data).await {
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

/// Phase 2, for the rest of the socket's life (not an `async fn`, see write_loop).
#[allow(clippy::manual_async_fn)]
fn read_messages(
    mut stream: SplitStream<WebSocket>,
    socket: &Socket,
    rest: Vec<Packet>,
) -> impl std::future::Future<Output = bool> + Send + '_ {
    async move {
        let server = socket.0.server.clone();
        let config = &server.config;

        // Phase 2: messages run through middleware and handlers one at a time, in order, as a
        // future polled beside the reads (no task or channel of their own: an idle socket holds
        // neither). The reader keeps answering pongs and resolving the client's responses to server
        // invokes while a handler runs, so a handler awaiting one never deadlocks its own socket.
        let raw_middleware = server.app.middleware.has(MiddlewareKind::InboundRaw);
        let mut inbox = Inbox::default();
        if rest.is_empty() {
            // Not kept: an empty Vec with capacity would stay allocated for the socket's life.
            drop(rest);
        } else {
            inbox.push(
                socket,
                InboundMessage {
                    raw: None,
                    packets: rest,
                },
            );
        }

        let pong = config.protocol_version.pong();
        let ping_timeout = config.ping_timeout;
        let mut limits = Limits::new(&server, std::time::Instant::now());
        let mut last_reset = Instant::now();
        // One timer for the socket's life, moved only when a pong (or, at most every quarter of the
        // timeout, any message) arrives.
        let watchdog = tokio::time::sleep(ping_timeout);
        tokio::pin!(watchdog);
        // One close waiter for the reader's life, not one registration per message.
        let closed = socket.0.close.wait();
        tokio::pin!(closed);
        let mut unreported_in = 0;
        loop {
            let watching = !config.ping_timeout_disabled && !socket.pings_paused();
            let reading = inbox.queued.len() < config.inbound_queue_limit;
            let event = tokio::select! {
                _ = &mut closed => break,
                _ = &mut watchdog, if watching => {
                    if socket.pings_paused() {
                        continue;
                    }
                    socket.close_now(close::PONG_TIMEOUT, "");
                    break;
                }
                () = inbox.run(), if inbox.running.is_some() => {
                    inbox.next(socket);
                    continue;
                }
                e = next_event(&mut stream), if reading => e,
            };
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
            // Counted here and added to the shared counter in batches (every socket's reader bumping
            // one atomic per message contends on it): at 64, at each pong, and when the reader ends.
            unreported_in += 1;
            if unreported_in == 64 {
                Metrics::add(&server.metrics.messages_in, unreported_in);
                unreported_in = 0;
            }
            let now = Instant::now();
            if text.as_str() == pong {
                if unreported_in > 0 {
                    Metrics::add(&server.metrics.messages_in, unreported_in);
                    unreported_in = 0;
                }
                socket.count_pong();
                last_reset = now;
                watchdog.as_mut().reset(now + ping_timeout);
                socket.check_expiry();
                continue;
            }
            // Any message proves liveness too, but re-arming the timer on every message is wasted
            // work: the reference only does it when a quarter of the timeout has passed.
            if now.duration_since(last_reset) > ping_timeout / 4 {
                last_reset = now;
                watchdog.as_mut().reset(now + ping_timeout);
            }
            let packets = match protocol::decode(&text) {
                Inbound::Raw => Vec::new(),
                Inbound::Packets(packets) => packets
                    .into_iter()
                    .filter(|p| match p {
                        Packet::Response { rid, data, error } => {
                            let result = match error {
                                Some(e) => Err(ScError::from_wire(e)),
                                None => Ok(data.clone()),
                            };
                            socket.resolve(*rid, result);
                            false
                        }
                        _ => true,
                    })
                    .collect(),
            };
            let packets = match limits.apply(socket, packets, now.into_std()) {
                Ok(packets) => packets,
                Err(Closed) => break,
            };
            if packets.is_empty() && !raw_middleware {
                continue;
            }
            inbox.push(
                socket,
                InboundMessage {
                    raw: raw_middleware.then(|| text.to_string()),
                    packets,
                },
            );
        }
        Metrics::add(&server.metrics.messages_in, unreported_in);
        // Let the handlers finish what they are doing (one may be writing a reply), bounded.
        // Meanwhile read and discard until the peer answers our close frame: closing with its data
        // unread would make the kernel reset the connection, and a flooding client would then never
        // see the close code it was given.
        let finish = async {
            while inbox.running.is_some() {
                inbox.run().await;
                inbox.next(socket);
            }
        };
        let drain = async {
            while let Some(Ok(msg)) = stream.next().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        };
        // Both end by themselves or time out; either way the connection is over.
        let _ = Box::pin(async {
            tokio::join!(
                tokio::time::timeout(Duration::from_secs(1), finish),
                tokio::time::timeout(Duration::from_secs(1), drain),
            )
        })
        .await;
        // A handler still running is not cut off halfway (it may be writing to a database): it
        // finishes on its own task. Messages not started yet are dropped with the socket.
        if let Some(running) = inbox.running.take() {
            tokio::spawn(running);
        }
        true
    }
}

/// The socket's inbound messages: the one being handled, as a boxed future, and those waiting
/// (at most `inbound_queue_limit`; past that the reader stops reading that socket).
#[derive(Default)]
struct Inbox {
    running: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    queued: std::collections::VecDeque<InboundMessage>,
}

impl Inbox {
    fn push(&mut self, socket: &Socket, message: InboundMessage) {
        if self.running.is_none() {
            self.running = Some(Box::pin(dispatch(socket.clone(), message)));
        } else {
            self.queued.push_back(message);
        }
    }

    /// Polls the running message's handling to completion (cancel-safe: the future stays here).
    async fn run(&mut self) {
        if let Some(running) = self.running.as_mut() {
            running.await;
        }
    }

    /// The running message is done: start the next one, if any (and if the socket is open).
    fn next(&mut self, socket: &Socket) {
        self.running = None;
        if !socket.is_open() {
            self.queued.clear();
        }
        if let Some(message) = self.queued.pop_front() {
            self.running = Some(Box::pin(dispatch(socket.clone(), message)));
        }
        if self.queued.capacity() > 64 && self.queued.is_empty() {
            self.queued = std::collections::VecDeque::new();
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HandshakeReply<'a> {
    id: &'a str,
    ping_timeout: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_error: Option<&'a ScError>,
    is_authenticated: bool,
}

/// Processes `#handshake`; returns false when the socket was rejected (and is closing).
async fn handshake(socket: &Socket, cid: u64, data: Option<Value>) -> bool {
    let server = socket.0.server.clone();
    let token = data
        .as_ref()
        .and_then(|d| d.get("authToken"))
        .filter(|t| !t.is_null())
        .cloned();
    let auth_error = match token {
        None => None,
        Some(token) => authenticate(socket, &token).await.err(),
    };

    let req = Request {
        parts: parts(socket, ActionKind::Handshake, None, None, None),
        data,
    };
    if server.app.middleware.has(MiddlewareKind::Handshake) {
        if let Err(block) = server
            .app
            .middleware
            .run(MiddlewareKind::Handshake, req)
            .await
        {
            let code = block.code().unwrap_or(close::HANDSHAKE_REJECTED);
            let error = block
                .client_error(ActionKind::Handshake)
                .with("statusCode", code);
            let _ = socket.push(protocol::encode_error_response(cid, &error).into());
            socket.disconnect(code, "");
            return false;
        }
    }

    let reply = HandshakeReply {
        id: socket.id(),
        ping_timeout: server.config.ping_timeout.as_millis() as u64,
        auth_error: auth_error.as_ref(),
        is_authenticated: socket.is_authenticated(),
    };
    match protocol::encode_response(cid, Some(&reply)) {
        Ok(frame) => {
            let _ = socket.push(frame.into());
        }
        Err(e) => {
            tracing::error!(error = %e, "could not encode the handshake reply");
            socket.close_now(close::HANDSHAKE_REJECTED, "");
            return false;
        }
    }
    if auth_error.as_ref().is_some_and(is_bad_token) {
        let _ = socket.push(Utf8Bytes::from_static(r##"{"event":"#removeAuthToken"}"##));
    }
    server.register(socket);
    socket.start_ping();
    true
}

fn is_bad_token(e: &ScError) -> bool {
    e.get("isBadToken") == Some(&Value::Bool(true))
}

/// Verifies a token and runs authenticate middleware. On success the socket is authenticated;
/// on failure it is not, and the error is the `authError` the client receives.
async fn authenticate(socket: &Socket, token: &Value) -> Result<(), ScError> {
    let server = socket.0.server.clone();
    let result = match token.as_str() {
        Some(signed) => server.auth.verify(signed).map_err(ScError::from),
        None => Err(
            ScError::new("AuthTokenInvalidError", "jwt must be a string").with("isBadToken", true),
        ),
    };
    let payload = match result {
        Ok(p) => Arc::new(p),
        Err(e) => {
            socket.forget_auth();
            return Err(e);
        }
    };
    if server.app.middleware.has(MiddlewareKind::Authenticate) {
        let mut p = parts(socket, ActionKind::Authenticate, None, None, None);
        p.auth = Some(payload.clone());
        let req = Request {
            parts: p,
            data: Some(token.clone()),
        };
        if let Err(block) = server
            .app
            .middleware
            .run(MiddlewareKind::Authenticate, req)
            .await
        {
            socket.forget_auth();
            return Err(block.client_error(ActionKind::Authenticate));
        }
    }
    let signed: Arc<str> = token.as_str().unwrap_or_default().into();
    socket.set_auth_state(Some(AuthState { signed, payload }));
    Ok(())
}

fn parts(
    socket: &Socket,
    kind: ActionKind,
    event: Option<Arc<str>>,
    channel: Option<Arc<str>>,
    expired: Option<ScError>,
) -> Parts {
    Parts {
        origin: Origin::Socket(socket.clone()),
        kind,
        event,
        channel,
        auth: socket.auth_token(),
        auth_token_expired: expired,
        wait_for_auth: false,
    }
}

/// Runs one inbound message through inbound-raw middleware and its packets' handlers, in order.
async fn dispatch(socket: Socket, message: InboundMessage) {
    let server = &socket.0.server;
    if let Some(raw) = message.raw {
        let req = Request {
            parts: parts(&socket, ActionKind::InboundRaw, None, None, None),
            data: Some(Value::String(raw)),
        };
        if let Err(block) =
            Box::pin(server.app.middleware.run(MiddlewareKind::InboundRaw, req)).await
        {
            tracing::debug!(socket = %socket.id(), %block, "inbound message dropped by middleware");
            return;
        }
    }
    for packet in message.packets {
        if let Packet::Event { event, data, cid } = packet {
            handle_event(&socket, event, data, cid).await;
        }
        if !socket.is_open() {
            return;
        }
    }
}

fn reply(socket: &Socket, cid: Option<u64>, result: Result<(), ScError>) {
    let Some(cid) = cid else { return };
    let frame = match result {
        Ok(()) => protocol::encode_raw_response(cid, None),
        Err(e) => protocol::encode_error_response(cid, &e),
    };
    let _ = socket.push(frame.into());
}

async fn handle_event(socket: &Socket, event: String, data: Option<Value>, cid: Option<u64>) {
    match event.as_str() {
        "#handshake" => match cid {
            Some(_) => reply(
                socket,
                cid,
                Err(ScError::invalid_action(
                    "The socket has already completed its handshake",
                )),
            ),
            None => {
                socket.close_now(close::HANDSHAKE_REJECTED, "");
            }
        },
        "#authenticate" => {
            let Some(cid) = cid else {
                socket.close_now(close::HANDSHAKE_REJECTED, "");
                return;
            };
            let token = data.unwrap_or(Value::Null);
            let frame = match Box::pin(authenticate(socket, &token)).await {
                Ok(()) => protocol::encode_raw_response(
                    cid,
                    serde_json::value::RawValue::from_string(
                        r#"{"isAuthenticated":true,"authError":null}"#.into(),
                    )
                    .ok()
                    .as_deref(),
                ),
                Err(e) if is_bad_token(&e) => {
                    let frame = protocol::encode_error_response(cid, &e);
                    let _ = socket.push(frame.into());
                    let _ =
                        socket.push(Utf8Bytes::from_static(r##"{"event":"#removeAuthToken"}"##));
                    return;
                }
                Err(e) => protocol::encode_response(
                    cid,
                    Some(&serde_json::json!({"isAuthenticated": false, "authError": e})),
                )
                .unwrap_or_default(),
            };
            let _ = socket.push(frame.into());
        }
        "#removeAuthToken" => socket.forget_auth(),
        // Boxed, like authentication above: their state would otherwise make every message's
        // dispatch future (allocated and moved per message) as large as the largest of them.
        "#subscribe" => Box::pin(subscribe(socket, data, cid)).await,
        "#unsubscribe" => unsubscribe(socket, data, cid),
        "#publish" => Box::pin(publish(socket, data, cid)).await,
        _ => call_handler(socket, event, data, cid).await,
    }
}

fn channel_field(data: &Option<Value>) -> Option<(Arc<str>, &Map<String, Value>)> {
    let obj = data.as_ref()?.as_object()?;
    let channel = obj.get("channel")?.as_str()?;
    Some((channel.into(), obj))
}

async fn subscribe(socket: &Socket, data: Option<Value>, cid: Option<u64>) {
    let server = socket.0.server.clone();
    let expired = socket.check_expiry();
    let Some((channel, obj)) = channel_field(&data) else {
        reply(
            socket,
            cid,
            Err(ScError::invalid_action(
                "Subscribe channel name was malformatted",
            )),
        );
        return;
    };
    let sub_data = obj.get("data").cloned();
    let wait_for_auth = obj.get("waitForAuth") == Some(&Value::Bool(true));

    if cid.is_some() {
        let limit = server.config.socket_channel_limit;
        // As in the reference, the limit is checked before the already-subscribed check.
        if lock(&socket.0.subscriptions).len() >= limit {
            reply(
                socket,
                cid,
                Err(ScError::broker(format!(
                    "Failed to subscribe socket to the {channel} channel - InvalidActionError: Socket {} tried to exceed the channel subscription limit of {limit}",
                    socket.id()
                ))),
            );
            return;
        }
    }

    let mut p = parts(
        socket,
        ActionKind::Subscribe,
        None,
        Some(channel.clone()),
        expired,
    );
    p.wait_for_auth = wait_for_auth;
    if let Err(block) = server
        .app
        .middleware
        .run(
            MiddlewareKind::Subscribe,
            Request {
                parts: p,
                data: sub_data,
            },
        )
        .await
    {
        reply(socket, cid, Err(block.client_error(ActionKind::Subscribe)));
        return;
    }
    // A #subscribe without a cid passes middleware but subscribes nothing (v20 reference).
    if cid.is_none() {
        return;
    }
    let result = server
        .pubsub
        .subscribe_socket(socket, channel.clone())
        .await
        .map_err(|e| {
            ScError::broker(format!(
                "Failed to subscribe socket to the {channel} channel - {e}"
            ))
        });
    reply(socket, cid, result);
}

fn unsubscribe(socket: &Socket, data: Option<Value>, cid: Option<u64>) {
    let Some(channel) = data.as_ref().and_then(Value::as_str) else {
        reply(
            socket,
            cid,
            Err(ScError::invalid_action(
                "Unsubscribe channel name was malformatted",
            )),
        );
        return;
    };
    if socket.0.server.pubsub.unsubscribe_socket(socket, channel) {
        reply(socket, cid, Ok(()));
    } else {
        let message = format!(
            "Failed to unsubscribe socket from the {channel} channel - InvalidActionError: Socket {} tried to unsubscribe from a channel which it is not subscribed to",
            socket.id()
        );
        if cid.is_none() {
            tracing::debug!(socket = %socket.id(), "{message}");
        }
        reply(socket, cid, Err(ScError::broker(message)));
    }
}

async fn publish(socket: &Socket, data: Option<Value>, cid: Option<u64>) {
    let server = socket.0.server.clone();
    let expired = socket.check_expiry();
    if !server.config.allow_client_publish {
        reply(
            socket,
            cid,
            Err(ScError::invalid_action(
                "Client publish feature is disabled",
            )),
        );
        return;
    }
    let Some((channel, obj)) = channel_field(&data) else {
        reply(
            socket,
            cid,
            Err(ScError::invalid_action(
                "Publish channel name was malformatted",
            )),
        );
        return;
    };
    let pub_data = obj.get("data").cloned();
    let req = Request {
        parts: parts(
            socket,
            ActionKind::PublishIn,
            None,
            Some(channel.clone()),
            expired,
        ),
        data: pub_data,
    };
    let pub_data = match server
        .app
        .middleware
        .run(MiddlewareKind::PublishIn, req)
        .await
    {
        Ok(d) => d,
        Err(block) => {
            reply(socket, cid, Err(block.client_error(ActionKind::PublishIn)));
            return;
        }
    };
    let result = server
        .exchange
        .publish_value(&channel, pub_data)
        .await
        .map_err(ScError::from);
    if let Err(e) = &result {
        tracing::warn!(socket = %socket.id(), %channel, error = %e, "client publish failed");
    }
    reply(socket, cid, result);
}

async fn call_handler(socket: &Socket, event: String, data: Option<Value>, cid: Option<u64>) {
    let server = &socket.0.server;
    let expired = socket.check_expiry();
    let (kind, mw_kind) = match cid {
        Some(_) => (ActionKind::Invoke, MiddlewareKind::Invoke),
        None => (ActionKind::Transmit, MiddlewareKind::Transmit),
    };
    let event: Arc<str> = event.into();
    let p = parts(socket, kind, Some(event.clone()), None, expired);
    // No middleware of this kind (the common case): no copy of the request, no middleware
    // future in every message's dispatch state.
    let data = if server.app.middleware.has(mw_kind) {
        let request = Request {
            parts: p.clone(),
            data,
        };
        match Box::pin(server.app.middleware.run(mw_kind, request)).await {
            Ok(d) => d,
            Err(block) => {
                reply(socket, cid, Err(block.client_error(kind)));
                return;
            }
        }
    } else {
        data
    };
    let Some(route) = server.app.route(&event) else {
        match cid {
            Some(_) => reply(
                socket,
                cid,
                Err(ScError::new(
                    "UnhandledEventError",
                    format!("No handler for event '{event}'"),
                )),
            ),
            None => tracing::debug!(socket = %socket.id(), %event, "transmit with no handler"),
        }
        return;
    };
    let fut = (route.handler)(Request { parts: p, data });
    let outcome = match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(Ok(reply)) => reply,
        Ok(Err(extraction)) => Reply::Error(extraction),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(socket = %socket.id(), %event, source = %route.source, panic = %what, "handler panicked");
            if server.config.crash_worker_on_error
                && matches!(
                    crate::master::Role::current(),
                    crate::master::Role::Worker(_)
                )
            {
                crash_worker_soon();
            }
            Reply::Error(ScError::internal())
        }
    };
    match (cid, outcome) {
        (Some(cid), Reply::Data(d)) => {
            let _ = socket.push(protocol::encode_raw_response(cid, d.as_deref()).into());
        }
        (Some(cid), Reply::Error(e)) => {
            let _ = socket.push(protocol::encode_error_response(cid, &e).into());
        }
        (None, Reply::Error(e)) => {
            tracing::debug!(socket = %socket.id(), %event, error = %e, "transmit handler failed");
        }
        (None, Reply::Data(_)) => {}
    }
}

/// `crash_worker_on_error`: the worker exits so the master replaces it with a fresh process. The
/// error reply is queued first; the short delay lets the writer flush it before the exit.
fn crash_worker_soon() {
    tracing::error!("crash_worker_on_error is set: this worker exits and the master replaces it");
    tokio::spawn(async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        std::process::exit(70);
    });
}

/// The socket went over a limit whose action is to disconnect it.
struct Closed;

/// This socket's rate-limit buckets (see [`crate::limit`]).
struct Limits {
    socket: Option<Bucket>,
    /// Created on the first limited event: most apps limit none, and an empty map is 48 bytes
    /// in every idle socket's reader (boxed, it is 8).
    #[allow(clippy::box_collection)]
    events: Option<Box<HashMap<String, Bucket>>>,
}

impl Limits {
    fn new(server: &Arc<ServerShared>, now: std::time::Instant) -> Self {
        Self {
            socket: server
                .config
                .message_rate_limit
                .map(|l| Bucket::new(l, now)),
            events: None,
        }
    }

    /// Charges each event packet, or one token for a message without events; returns what may
    /// go on. Refused invokes are answered here; a disconnecting limit closes the socket.
    fn apply(
        &mut self,
        socket: &Socket,
        mut packets: Vec<Packet>,
        now: std::time::Instant,
    ) -> Result<Vec<Packet>, Closed> {
        // A message without events (raw text, responses, JSON that is no packet) still costs
        // one token: otherwise such messages could be sent without bound.
        if !packets.iter().any(|p| matches!(p, Packet::Event { .. })) {
            let over = match &mut self.socket {
                Some(bucket) => !bucket.take(now) && bucket.limit.action == LimitAction::Disconnect,
                None => false,
            };
            return if over {
                Err(self.close(socket))
            } else {
                Ok(packets)
            };
        }
        // Filtered in place: no second Vec per message.
        let mut disconnect = false;
        packets.retain(|packet| {
            let Packet::Event { event, cid, .. } = packet else {
                return true;
            };
            if disconnect {
                return false;
            }
            let mut refused = None;
            if let Some(bucket) = &mut self.socket {
                if !bucket.take(now) {
                    refused = Some((bucket.limit, ""));
                }
            }
            let event_limits = &socket.0.server.app.event_limits;
            if refused.is_none() && !event_limits.is_empty() {
                if let Some(limit) = event_limits.get(event.as_str()) {
                    let bucket = self
                        .events
                        .get_or_insert_with(Box::default)
                        .entry(event.clone())
                        .or_insert_with(|| Bucket::new(*limit, now));
                    if !bucket.take(now) {
                        refused = Some((*limit, " for this event"));
                    }
                }
            }
            match refused {
                None => true,
                Some((limit, _)) if limit.action == LimitAction::Disconnect => {
                    disconnect = true;
                    false
                }
                Some((limit, what)) => {
                    if let Some(cid) = cid {
                        let error = limit.error(what);
                        let _ = socket.push(protocol::encode_error_response(*cid, &error).into());
                    }
                    false
                }
            }
        });
        if disconnect {
            return Err(self.close(socket));
        }
        Ok(packets)
    }

    fn close(&self, socket: &Socket) -> Closed {
        tracing::warn!(socket = %socket.id(), "message rate limit exceeded: disconnecting");
        socket.close_now(close::RATE_LIMITED, "Rate limit exceeded");
        Closed
    }
}
