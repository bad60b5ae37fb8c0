//! The client's shared state and every synchronous protocol decision.
//!
//! One `Mutex<State>` is shared by the API ([`super::Client`], [`super::Subscription`]) and the
//! connection task ([`super::driver`]). Every frame bound for the current connection is pushed
//! into that connection's writer queue **while the lock is held**, so the order of frames on the
//! wire is the order in which the lock was taken. No lock is ever held across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::codec::{self, Packet, ScError};
use super::errors::InvokeError;
use super::{ClientEvent, ClientOptions, ConnectionState};

/// Where an invoke's outcome goes.
pub(crate) type ReplyTx = oneshot::Sender<Result<Option<Value>, InvokeError>>;

/// A boxed future returned by a client procedure handler.
pub(crate) type HandlerFuture =
    Pin<Box<dyn Future<Output = Result<Option<Value>, ScError>> + Send>>;

/// A client procedure handler (answers server invokes).
pub(crate) type Handler = Arc<dyn Fn(Option<Value>) -> HandlerFuture + Send + Sync>;

/// Close reason the official client uses when it replaces a stale connection.
pub(crate) const STALE_REASON: &str =
    "Stale socket was disconnected by the client to initiate a new connection";

/// The state of the connection attempt `State::attempt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No connection: waiting to reconnect, or closed for good (`State::terminal`).
    Closed,
    /// WebSocket being opened, or open and waiting for the handshake reply.
    Connecting,
    /// Handshake done.
    Open,
}

/// What the caller of [`State::outbound`] must tell the connection task.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Poke {
    /// Nothing.
    None,
    /// The client is waiting to reconnect: connect now (the official client's `connect()` on a
    /// closed socket).
    ConnectNow,
    /// The connection was stale and has been destroyed: close it and reconnect now.
    Restart { target: u64 },
}

/// An invoke (or subscribe) that was sent and awaits its response.
enum Pending {
    Invoke {
        req: u64,
        event: String,
        reply: ReplyTx,
    },
    Subscribe {
        channel: String,
    },
}

/// An outbound transmit (`reply: None`) or invoke, with its data already encoded as JSON.
pub(crate) struct Outbound {
    pub(crate) req: u64,
    pub(crate) event: String,
    pub(crate) data: Option<String>,
    pub(crate) reply: Option<ReplyTx>,
    pub(crate) deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChannelState {
    Pending,
    Subscribed,
}

/// A channel the client wants to be subscribed to (official `_channelMap` entry).
struct Channel {
    state: ChannelState,
    /// Insertion order, the tie-break of `priority` when resubscribing.
    seq: u64,
    wait_for_auth: bool,
    data: Option<Value>,
    priority: i32,
    /// Call id of the `#subscribe` in flight (only one per channel).
    in_flight: Option<u64>,
    /// One sender per live [`super::Subscription`] handle, by handle id.
    listeners: Vec<(u64, mpsc::UnboundedSender<Value>)>,
    /// `subscribe()` calls waiting for the server's ack, by handle id.
    waiters: Vec<(u64, oneshot::Sender<Result<(), InvokeError>>)>,
}

/// Options of a new channel entry.
pub(crate) struct ChannelOptions {
    pub(crate) wait_for_auth: bool,
    pub(crate) data: Option<Value>,
    pub(crate) priority: i32,
}

/// What a new `subscribe()` call waits for.
pub(crate) enum SubscribeStart {
    /// The channel is already subscribed.
    Ready,
    /// Wait for the ack (or failure).
    Wait(oneshot::Receiver<Result<(), InvokeError>>),
}

/// Session-local handshake bookkeeping, filled in by [`State::handle_text`].
pub(crate) struct Handshake {
    /// The call id of this connection's `#handshake`.
    pub(crate) cid: u64,
    /// The token sent in it.
    pub(crate) token: Option<String>,
    /// Set when the reply arrives: the ping timeout to arm, or the server's error.
    pub(crate) outcome: Option<Result<Duration, ScError>>,
}

/// Everything shared between the API and the connection task.
pub(crate) struct Shared {
    pub(crate) opts: ClientOptions,
    pub(crate) state: Mutex<State>,
}

impl Shared {
    pub(crate) fn new(opts: ClientOptions) -> Self {
        let (events, _) = broadcast::channel(opts.event_capacity.max(1));
        let state = State {
            events,
            phase: Phase::Closed,
            attempt: 0,
            conn: None,
            terminal: None,
            last_close: (1000, String::new()),
            id: None,
            ping_timeout: opts.connect_timeout,
            watchdog: opts.ping_watchdog,
            last_ping: Instant::now(),
            next_cid: 1,
            next_req: 1,
            stored_token: opts.auth_token.clone(),
            authenticated: false,
            signed_token: None,
            claims: None,
            auth_error: None,
            pending: HashMap::new(),
            buffer: VecDeque::new(),
            channels: HashMap::new(),
            channel_seq: 0,
            receivers: HashMap::new(),
            procedures: HashMap::new(),
        };
        Self {
            opts,
            state: Mutex::new(state),
        }
    }

    /// Locks the state. A panic elsewhere while it was held cannot leave it half-updated in a
    /// way that matters more than stopping would, so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The client's state; see the module docs for the locking rule.
pub(crate) struct State {
    events: broadcast::Sender<ClientEvent>,
    phase: Phase,
    /// Number of the current (or last) connection attempt.
    attempt: u64,
    /// Writer queue of the current attempt's WebSocket, once it is open.
    conn: Option<mpsc::UnboundedSender<Message>>,
    /// Set while the client is closed for good (`disconnect()`, or a close that does not
    /// reconnect): calls fail at once instead of buffering.
    terminal: Option<(u16, String)>,
    /// Code and reason of the last close.
    last_close: (u16, String),
    id: Option<String>,
    ping_timeout: Duration,
    watchdog: bool,
    last_ping: Instant,
    /// The official client's call-id counter: on the client, continuing across reconnects.
    next_cid: u64,
    next_req: u64,
    /// The token sent in the next `#handshake` (the official client's token storage).
    stored_token: Option<String>,
    authenticated: bool,
    /// The token the client is authenticated with.
    signed_token: Option<String>,
    claims: Option<Map<String, Value>>,
    /// `authError` of the last handshake reply.
    auth_error: Option<ScError>,
    pending: HashMap<u64, Pending>,
    /// Transmits and invokes issued while the connection was not open, in order.
    buffer: VecDeque<Outbound>,
    channels: HashMap<String, Channel>,
    channel_seq: u64,
    receivers: HashMap<String, Vec<mpsc::UnboundedSender<Option<Value>>>>,
    procedures: HashMap<String, Handler>,
}

fn emit(events: &broadcast::Sender<ClientEvent>, event: ClientEvent) {
    tracing::trace!(?event, "client event");
    // No receiver is fine.
    let _ = events.send(event);
}

fn bad_connection(event: &str, code: u16, reason: &str) -> InvokeError {
    InvokeError::BadConnection {
        event: event.to_owned(),
        code,
        reason: reason.to_owned(),
    }
}

impl State {
    // ----- getters -------------------------------------------------------------------------

    pub(crate) fn subscribe_events(&self) -> broadcast::Receiver<ClientEvent> {
        self.events.subscribe()
    }

    pub(crate) fn connection_state(&self) -> ConnectionState {
        match self.phase {
            Phase::Closed => ConnectionState::Closed,
            Phase::Connecting => ConnectionState::Connecting,
            Phase::Open => ConnectionState::Open,
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    pub(crate) fn id(&self) -> Option<String> {
        self.id.clone()
    }

    pub(crate) fn signed_token(&self) -> Option<String> {
        self.signed_token.clone()
    }

    pub(crate) fn claims(&self) -> Option<Map<String, Value>> {
        self.claims.clone()
    }

    pub(crate) fn auth_error(&self) -> Option<ScError> {
        self.auth_error.clone()
    }

    pub(crate) fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    pub(crate) fn is_terminal(&self) -> bool {
        self.terminal.is_some()
    }

    pub(crate) fn next_req(&mut self) -> u64 {
        let req = self.next_req;
        self.next_req += 1;
        req
    }

    fn next_cid(&mut self) -> u64 {
        let cid = self.next_cid;
        self.next_cid += 1;
        cid
    }

    /// Names of the channels in the given states.
    pub(crate) fn subscriptions(&self, include_pending: bool) -> Vec<String> {
        let mut list: Vec<(&String, &Channel)> = self
            .channels
            .iter()
            .filter(|(_, c)| include_pending || c.state == ChannelState::Subscribed)
            .collect();
        list.sort_by_key(|(_, c)| c.seq);
        list.into_iter().map(|(n, _)| n.clone()).collect()
    }

    pub(crate) fn is_subscribed(&self, channel: &str, include_pending: bool) -> bool {
        self.channels
            .get(channel)
            .is_some_and(|c| include_pending || c.state == ChannelState::Subscribed)
    }

    // ----- sending -------------------------------------------------------------------------

    /// Queues a frame on the current connection. Returns false if there is none.
    fn send(&self, frame: String) -> bool {
        match &self.conn {
            Some(conn) => conn.send(Message::text(frame)).is_ok(),
            None => false,
        }
    }

    /// A transmit or invoke from the API: sent now when open, buffered otherwise.
    /// Fails with the last close's code and reason when the client is closed for good.
    pub(crate) fn outbound(&mut self, ob: Outbound) -> Result<Poke, Outbound> {
        if self.terminal.is_some() {
            return Err(ob);
        }
        let mut poke = Poke::None;
        if self.phase == Phase::Open
            && self.watchdog
            && self.last_ping.elapsed() >= self.ping_timeout
        {
            // The official client's stale-socket check on every send.
            let target = self.attempt;
            self.destroy(target, 1000, STALE_REASON, false);
            poke = Poke::Restart { target };
        }
        match self.phase {
            Phase::Open => self.send_now(ob),
            Phase::Connecting => self.buffer.push_back(ob),
            Phase::Closed => {
                self.buffer.push_back(ob);
                if poke == Poke::None {
                    poke = Poke::ConnectNow;
                }
            }
        }
        Ok(poke)
    }

    fn send_now(&mut self, ob: Outbound) {
        match ob.reply {
            Some(reply) => {
                let cid = self.next_cid();
                let frame = codec::event_frame(&ob.event, ob.data.as_deref(), Some(cid));
                self.pending.insert(
                    cid,
                    Pending::Invoke {
                        req: ob.req,
                        event: ob.event,
                        reply,
                    },
                );
                self.send(frame);
            }
            None => {
                self.send(codec::event_frame(&ob.event, ob.data.as_deref(), None));
            }
        }
    }

    /// Sends every buffered item in order; items past their deadline are dropped (their
    /// callers time out on their own), as are invokes whose caller has gone.
    fn flush_buffer(&mut self) {
        let now = Instant::now();
        while let Some(b) = self.buffer.pop_front() {
            if b.deadline <= now || b.reply.as_ref().is_some_and(|r| r.is_closed()) {
                continue;
            }
            self.send_now(b);
        }
    }

    /// Forgets request `req` (its caller timed out or went away): out of the buffer, or out of
    /// the pending map.
    pub(crate) fn cancel(&mut self, req: u64) {
        if let Some(pos) = self.buffer.iter().position(|b| b.req == req) {
            self.buffer.remove(pos);
            return;
        }
        let cid = self.pending.iter().find_map(|(cid, p)| match p {
            Pending::Invoke { req: r, .. } if *r == req => Some(*cid),
            _ => None,
        });
        if let Some(cid) = cid {
            self.pending.remove(&cid);
        }
    }

    /// The last close, for calls on a closed client.
    pub(crate) fn last_close(&self) -> (u16, String) {
        self.terminal
            .clone()
            .unwrap_or_else(|| self.last_close.clone())
    }

    // ----- connection lifecycle ------------------------------------------------------------

    /// Starts connection attempt N+1 unless the client is closed for good.
    pub(crate) fn begin_attempt(&mut self) -> Option<u64> {
        if self.terminal.is_some() {
            return None;
        }
        self.attempt += 1;
        self.phase = Phase::Connecting;
        self.conn = None;
        self.ping_timeout = Duration::ZERO;
        emit(&self.events, ClientEvent::Connecting);
        Some(self.attempt)
    }

    /// The WebSocket of `attempt` is open: registers its writer and queues the `#handshake`.
    /// Returns the handshake bookkeeping, or `None` if the attempt was abandoned meanwhile.
    pub(crate) fn ws_open(
        &mut self,
        attempt: u64,
        writer: mpsc::UnboundedSender<Message>,
        connect_timeout: Duration,
    ) -> Option<Handshake> {
        if attempt != self.attempt || self.phase != Phase::Connecting {
            return None;
        }
        self.conn = Some(writer);
        // Until the reply, the official client's ping timeout is its connect timeout.
        self.ping_timeout = connect_timeout;
        self.last_ping = Instant::now();
        let cid = self.next_cid();
        let token = self.stored_token.clone();
        let data = match &token {
            Some(t) => format!("{{\"authToken\":{}}}", codec::json_string(t)),
            None => "{\"authToken\":null}".to_owned(),
        };
        self.send(codec::event_frame("#handshake", Some(&data), Some(cid)));
        Some(Handshake {
            cid,
            token,
            outcome: None,
        })
    }

    /// A ping arrived on `attempt`.
    pub(crate) fn pinged(&mut self, attempt: u64) {
        if attempt == self.attempt {
            self.last_ping = Instant::now();
        }
    }

    /// Tears down connection `attempt` (the official `_destroy`): pending invokes and the
    /// offline buffer fail with `BadConnection`, channels go back to pending, `Disconnect`
    /// (or `ConnectAbort` when the handshake had not completed) and, for codes other than
    /// 1000/1001, `Error` are emitted. With `terminal`, the client is closed for good in the
    /// same step. Returns `None` if that attempt was already torn down (by an API call, which
    /// then also told the connection task what to do next), else whether it had been open.
    pub(crate) fn destroy(
        &mut self,
        attempt: u64,
        code: u16,
        reason: &str,
        terminal: bool,
    ) -> Option<bool> {
        if attempt != self.attempt || self.phase == Phase::Closed {
            return None;
        }
        let was_open = self.phase == Phase::Open;
        let reason = if reason.is_empty() {
            codec::close_status(code).unwrap_or("").to_owned()
        } else {
            reason.to_owned()
        };
        tracing::debug!(code, %reason, was_open, "connection closed");
        self.phase = Phase::Closed;
        self.conn = None;
        self.id = None;
        self.last_close = (code, reason.clone());
        if terminal {
            self.terminal = Some((code, reason.clone()));
        }

        // Suspend subscriptions: every channel becomes pending again.
        let mut order: Vec<(u64, String)> = Vec::new();
        for (name, ch) in self.channels.iter_mut() {
            ch.in_flight = None;
            if ch.state == ChannelState::Subscribed {
                ch.state = ChannelState::Pending;
                order.push((ch.seq, name.clone()));
            }
        }
        order.sort();
        for (_, channel) in order {
            emit(&self.events, ClientEvent::Unsubscribe { channel });
        }

        emit(
            &self.events,
            if was_open {
                ClientEvent::Disconnect {
                    code,
                    reason: reason.clone(),
                }
            } else {
                ClientEvent::ConnectAbort {
                    code,
                    reason: reason.clone(),
                }
            },
        );
        if code != 1000 && code != 1001 {
            let message = match codec::close_status(code) {
                Some(s) => s.to_owned(),
                None => {
                    format!("Socket connection closed with status code {code} and reason: {reason}")
                }
            };
            emit(
                &self.events,
                ClientEvent::Error(ScError::new("SocketProtocolError", message).with("code", code)),
            );
        }

        for (_, p) in self.pending.drain() {
            if let Pending::Invoke { event, reply, .. } = p {
                let _ = reply.send(Err(bad_connection(&event, code, &reason)));
            }
        }
        for b in self.buffer.drain(..) {
            if let Some(reply) = b.reply {
                let _ = reply.send(Err(bad_connection(&b.event, code, &reason)));
            }
        }
        if terminal {
            self.fail_waiters(code, &reason);
        }
        Some(was_open)
    }

    /// Closes the client for good from the API (`disconnect()`): tears down the current
    /// attempt if any, and fails everything that waits for a connection.
    pub(crate) fn close_for_good(&mut self, code: u16, reason: &str) {
        let attempt = self.attempt;
        if self.destroy(attempt, code, reason, true).is_none() {
            self.terminal = Some((code, reason.to_owned()));
            for b in self.buffer.drain(..) {
                if let Some(reply) = b.reply {
                    let _ = reply.send(Err(bad_connection(&b.event, code, reason)));
                }
            }
            self.fail_waiters(code, reason);
        }
    }

    /// `reconnect()` from the API: tears down the current attempt (code 1000) and lifts the
    /// closed-for-good state. Returns the attempt the connection task must abandon.
    pub(crate) fn restart(&mut self) -> u64 {
        self.terminal = None;
        let attempt = self.attempt;
        self.destroy(attempt, 1000, "", false);
        attempt
    }

    /// Subscribe calls still waiting fail: the client will not reconnect by itself.
    fn fail_waiters(&mut self, code: u16, reason: &str) {
        for ch in self.channels.values_mut() {
            for (_, w) in ch.waiters.drain(..) {
                let _ = w.send(Err(bad_connection("#subscribe", code, reason)));
            }
        }
    }

    // ----- inbound -------------------------------------------------------------------------

    /// Handles one inbound text message (not a ping) of connection `attempt`.
    pub(crate) fn handle_text(&mut self, attempt: u64, text: &str, hs: &mut Handshake) {
        if attempt != self.attempt || self.phase == Phase::Closed {
            return;
        }
        match codec::decode(text) {
            codec::Inbound::Packets(packets) => {
                for packet in packets {
                    if attempt != self.attempt || self.phase == Phase::Closed {
                        return;
                    }
                    self.handle_packet(packet, hs);
                }
            }
            codec::Inbound::Raw => {
                tracing::trace!(len = text.len(), "ignoring raw message");
            }
        }
    }

    fn handle_packet(&mut self, packet: Packet, hs: &mut Handshake) {
        match packet {
            Packet::Response { rid, data, error } => {
                if self.phase == Phase::Connecting && rid == hs.cid && hs.outcome.is_none() {
                    self.on_handshake(data, error, hs);
                    return;
                }
                match self.pending.remove(&rid) {
                    Some(Pending::Invoke { reply, .. }) => {
                        let result = match error {
                            Some(e) => Err(InvokeError::Remote(ScError::from_wire(&e))),
                            None => Ok(data),
                        };
                        let _ = reply.send(result);
                    }
                    Some(Pending::Subscribe { channel }) => {
                        self.on_subscribe_reply(&channel, rid, error);
                    }
                    None => tracing::trace!(rid, "response to an unknown call id"),
                }
            }
            Packet::Event {
                event,
                data,
                cid: Some(cid),
            } => self.on_inbound_invoke(event, data, cid),
            Packet::Event {
                event,
                data,
                cid: None,
            } => self.on_inbound_transmit(&event, data),
            Packet::Other => tracing::trace!("ignoring a non-packet"),
        }
    }

    fn on_handshake(&mut self, data: Option<Value>, error: Option<Value>, hs: &mut Handshake) {
        if let Some(error) = error {
            hs.outcome = Some(Err(ScError::from_wire(&error)));
            return;
        }
        let status = data.as_ref().and_then(Value::as_object);
        let ping_timeout = match status {
            // A missing or invalid pingTimeout makes the official client's watchdog fire at
            // once (setTimeout with undefined).
            Some(s) => s
                .get("pingTimeout")
                .and_then(Value::as_f64)
                .filter(|ms| ms.is_finite() && *ms > 0.0)
                .map(|ms| Duration::from_millis(ms.min(u32::MAX as f64) as u64))
                .unwrap_or(Duration::ZERO),
            None => self.ping_timeout,
        };
        let id = status
            .and_then(|s| s.get("id"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let is_authenticated = status
            .and_then(|s| s.get("isAuthenticated"))
            .is_some_and(codec::is_truthy);
        let auth_error = status
            .and_then(|s| s.get("authError"))
            .filter(|e| !e.is_null())
            .map(ScError::from_wire);

        self.phase = Phase::Open;
        self.id = Some(id.clone());
        self.auth_error.clone_from(&auth_error);
        self.ping_timeout = ping_timeout;
        self.last_ping = Instant::now();
        match (is_authenticated, hs.token.clone()) {
            (true, Some(token)) => self.set_authenticated(token),
            _ => self.set_unauthenticated(),
        }
        self.process_pending_subscriptions();
        emit(
            &self.events,
            ClientEvent::Connect {
                id,
                is_authenticated: self.authenticated,
                auth_error,
                ping_timeout,
            },
        );
        self.flush_buffer();
        hs.outcome = Some(Ok(ping_timeout));
    }

    fn on_inbound_invoke(&mut self, event: String, data: Option<Value>, cid: u64) {
        match event.as_str() {
            "#setAuthToken" => {
                let token = data
                    .as_ref()
                    .and_then(|d| d.get("token"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let result = match token {
                    Some(token) => {
                        self.stored_token = Some(token.clone());
                        self.set_authenticated(token);
                        Ok(None)
                    }
                    None => Err(ScError::new(
                        "InvalidMessageError",
                        "No token data provided by #setAuthToken event",
                    )),
                };
                self.send(codec::response_frame(cid, &result));
            }
            "#removeAuthToken" => {
                self.remove_token();
                self.send(codec::response_frame(cid, &Ok(None)));
            }
            _ => {
                let Some(handler) = self.procedures.get(&event).cloned() else {
                    // The official client never answers a procedure nobody consumes.
                    tracing::debug!(%event, "no handler for server invoke");
                    return;
                };
                let Some(conn) = self.conn.clone() else {
                    return;
                };
                tokio::spawn(async move {
                    let result = handler(data).await;
                    // The connection may be gone by now; then the answer is dropped.
                    let _ = conn.send(Message::text(codec::response_frame(cid, &result)));
                });
            }
        }
    }

    fn on_inbound_transmit(&mut self, event: &str, data: Option<Value>) {
        match event {
            "#publish" => {
                let Some(Value::Object(mut d)) = data else {
                    return;
                };
                let Some(Value::String(name)) = d.get("channel") else {
                    return;
                };
                let Some(ch) = self.channels.get_mut(name.as_str()) else {
                    return;
                };
                let payload = d.remove("data").unwrap_or(Value::Null);
                ch.listeners
                    .retain(|(_, tx)| tx.send(payload.clone()).is_ok());
            }
            "#kickOut" => {
                let Some(Value::Object(d)) = data else {
                    return;
                };
                let Some(Value::String(name)) = d.get("channel") else {
                    return;
                };
                if self.channels.contains_key(name.as_str()) {
                    let channel = name.clone();
                    emit(
                        &self.events,
                        ClientEvent::KickOut {
                            channel: channel.clone(),
                            message: d.get("message").cloned(),
                        },
                    );
                    self.drop_channel(&channel, false);
                }
            }
            "#setAuthToken" => {
                if let Some(token) = data
                    .as_ref()
                    .and_then(|d| d.get("token"))
                    .and_then(Value::as_str)
                {
                    self.stored_token = Some(token.to_owned());
                    self.set_authenticated(token.to_owned());
                }
            }
            "#removeAuthToken" => self.remove_token(),
            _ => {
                if let Some(list) = self.receivers.get_mut(event) {
                    list.retain(|tx| tx.send(data.clone()).is_ok());
                    if list.is_empty() {
                        self.receivers.remove(event);
                    }
                }
            }
        }
    }

    // ----- auth ----------------------------------------------------------------------------

    /// The official `_changeToAuthenticatedState`.
    pub(crate) fn set_authenticated(&mut self, token: String) {
        self.claims = codec::token_claims(&token);
        self.signed_token = Some(token.clone());
        if !self.authenticated {
            self.authenticated = true;
            self.process_pending_subscriptions();
        }
        emit(
            &self.events,
            ClientEvent::Authenticate {
                signed_token: token,
            },
        );
    }

    /// The official `_changeToUnauthenticatedStateAndClearTokens`.
    pub(crate) fn set_unauthenticated(&mut self) {
        if self.authenticated {
            self.authenticated = false;
            self.signed_token = None;
            self.claims = None;
            emit(&self.events, ClientEvent::Deauthenticate);
        }
    }

    /// `#removeAuthToken` from the server, or `deauthenticate()`: drops the stored token too.
    pub(crate) fn remove_token(&mut self) {
        self.stored_token = None;
        self.set_unauthenticated();
    }

    /// Stores `token` for the next handshakes (official `auth.saveToken`).
    pub(crate) fn store_token(&mut self, token: String) {
        self.stored_token = Some(token);
    }

    // ----- pub/sub -------------------------------------------------------------------------

    /// Adds a subscription handle `sub` to `name` (creating the channel, pending, if needed)
    /// and tries to subscribe.
    pub(crate) fn add_subscription(
        &mut self,
        name: &str,
        sub: u64,
        tx: mpsc::UnboundedSender<Value>,
        options: ChannelOptions,
    ) -> SubscribeStart {
        if !self.channels.contains_key(name) {
            self.channel_seq += 1;
            self.channels.insert(
                name.to_owned(),
                Channel {
                    state: ChannelState::Pending,
                    seq: self.channel_seq,
                    wait_for_auth: options.wait_for_auth,
                    data: options.data,
                    priority: options.priority,
                    in_flight: None,
                    listeners: Vec::new(),
                    waiters: Vec::new(),
                },
            );
        }
        let Some(ch) = self.channels.get_mut(name) else {
            return SubscribeStart::Ready;
        };
        ch.listeners.push((sub, tx));
        if ch.state == ChannelState::Subscribed {
            return SubscribeStart::Ready;
        }
        let (wtx, wrx) = oneshot::channel();
        ch.waiters.push((sub, wtx));
        self.try_subscribe(name);
        SubscribeStart::Wait(wrx)
    }

    /// A subscription handle went away: when it was the channel's last, unsubscribe.
    pub(crate) fn remove_subscription(&mut self, name: &str, sub: u64) {
        let Some(ch) = self.channels.get_mut(name) else {
            return;
        };
        ch.listeners.retain(|(id, _)| *id != sub);
        ch.waiters.retain(|(id, _)| *id != sub);
        if ch.listeners.is_empty() {
            self.drop_channel(name, true);
        }
    }

    /// The official `_trySubscribe`: sends `#subscribe` when open, none in flight, and the
    /// auth requirement is met. Subscribe invokes have no timeout.
    fn try_subscribe(&mut self, name: &str) {
        if self.phase != Phase::Open {
            return;
        }
        let authenticated = self.authenticated;
        let Some(ch) = self.channels.get(name) else {
            return;
        };
        if ch.in_flight.is_some()
            || ch.state == ChannelState::Subscribed
            || (ch.wait_for_auth && !authenticated)
        {
            return;
        }
        let data = codec::subscribe_data(name, ch.wait_for_auth, ch.data.as_ref());
        let cid = self.next_cid();
        if let Some(ch) = self.channels.get_mut(name) {
            ch.in_flight = Some(cid);
        }
        self.pending.insert(
            cid,
            Pending::Subscribe {
                channel: name.to_owned(),
            },
        );
        self.send(codec::event_frame("#subscribe", Some(&data), Some(cid)));
    }

    /// Subscribes every pending channel, highest priority first, then in creation order.
    fn process_pending_subscriptions(&mut self) {
        let mut pending: Vec<(i32, u64, String)> = self
            .channels
            .iter()
            .filter(|(_, c)| c.state == ChannelState::Pending)
            .map(|(n, c)| (c.priority, c.seq, n.clone()))
            .collect();
        pending.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, _, name) in pending {
            self.try_subscribe(&name);
        }
    }

    fn on_subscribe_reply(&mut self, name: &str, cid: u64, error: Option<Value>) {
        let authenticated = self.authenticated;
        let Some(ch) = self.channels.get_mut(name) else {
            return;
        };
        if ch.in_flight != Some(cid) {
            return;
        }
        ch.in_flight = None;
        match error {
            None => {
                if ch.state != ChannelState::Subscribed {
                    ch.state = ChannelState::Subscribed;
                    emit(
                        &self.events,
                        ClientEvent::Subscribe {
                            channel: name.to_owned(),
                        },
                    );
                }
                for (_, w) in ch.waiters.drain(..) {
                    let _ = w.send(Ok(()));
                }
            }
            Some(error) => {
                let error = ScError::from_wire(&error);
                // Official `_triggerChannelSubscribeFail`: only when the auth requirement is
                // (still) met; otherwise the channel stays pending.
                if !ch.wait_for_auth || authenticated {
                    if let Some(ch) = self.channels.remove(name) {
                        for (_, w) in ch.waiters {
                            let _ = w.send(Err(InvokeError::Remote(error.clone())));
                        }
                    }
                    emit(
                        &self.events,
                        ClientEvent::SubscribeFail {
                            channel: name.to_owned(),
                            error,
                        },
                    );
                }
            }
        }
    }

    /// Removes channel `name` (unsubscribe, last handle dropped, kick-out): its streams end,
    /// its pending `subscribe()` calls fail, an in-flight `#subscribe` is forgotten. With
    /// `notify_server`, `#unsubscribe` (a transmit, no cid, like the official client) is sent
    /// when the server may hold the subscription.
    pub(crate) fn drop_channel(&mut self, name: &str, notify_server: bool) {
        let Some(ch) = self.channels.remove(name) else {
            return;
        };
        if let Some(cid) = ch.in_flight {
            self.pending.remove(&cid);
        }
        let was_subscribed = ch.state == ChannelState::Subscribed;
        if was_subscribed {
            emit(
                &self.events,
                ClientEvent::Unsubscribe {
                    channel: name.to_owned(),
                },
            );
        }
        if notify_server && self.phase == Phase::Open && (was_subscribed || ch.in_flight.is_some())
        {
            self.send(codec::event_frame(
                "#unsubscribe",
                Some(&codec::json_string(name)),
                None,
            ));
        }
        for (_, w) in ch.waiters {
            let _ = w.send(Err(InvokeError::Unsubscribed {
                channel: name.to_owned(),
            }));
        }
    }

    /// Emits an event to every [`super::Client::events`] receiver.
    pub(crate) fn emit(&self, event: ClientEvent) {
        emit(&self.events, event);
    }

    /// Ends every subscription and receiver stream (the client is gone).
    pub(crate) fn clear_streams(&mut self) {
        self.channels.clear();
        self.receivers.clear();
        self.procedures.clear();
    }

    // ----- receivers and procedures --------------------------------------------------------

    pub(crate) fn add_receiver(&mut self, event: &str, tx: mpsc::UnboundedSender<Option<Value>>) {
        self.receivers.entry(event.to_owned()).or_default().push(tx);
    }

    pub(crate) fn set_procedure(&mut self, procedure: &str, handler: Handler) {
        self.procedures.insert(procedure.to_owned(), handler);
    }

    pub(crate) fn remove_procedure(&mut self, procedure: &str) {
        self.procedures.remove(procedure);
    }
}
