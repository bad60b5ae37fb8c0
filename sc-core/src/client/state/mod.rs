//! The client's sans-IO state machine: the state shared by the API and the connection task, and
//! every synchronous protocol decision.
//!
//! One `Mutex<State>` is shared by the API ([`super::Client`], [`super::Subscription`]) and the
//! connection task ([`super::driver`]). Every frame bound for the current connection is pushed
//! into that connection's writer queue **while the lock is held**, so the order of frames on the
//! wire is the order in which the lock was taken. No lock is ever held across an `.await`.
//!
//! The machine does no IO and never waits: the driver feeds it inbound text, pings and closes,
//! the API feeds it calls, and it answers with frames on the writer queue, [`ClientEvent`]s,
//! replies on oneshot channels and [`Poke`]s for the driver. (The one task it starts runs an
//! application procedure handler.) This file holds the state and routes inbound packets; the
//! concerns live in:
//!
//! - `connection`: attempts, the handshake and its reply, tear-down, closing for good;
//! - `calls`: transmits and invokes both ways (offline buffer, responses by rid, cancellation,
//!   receivers and procedures);
//! - `channels`: subscriptions, resubscription, `#publish` delivery, `#kickOut`;
//! - `auth`: the token and the authenticated state, `#setAuthToken`, `#removeAuthToken`;
//! - `ping`: the ping clock, the stale-socket check, the pong.

mod auth;
mod calls;
mod channels;
mod connection;
mod ping;
mod presence;

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::Message;

use super::codec::{self, Packet};
use super::{ClientEvent, ClientOptions, ConnectionState};
use auth::AuthState;
use calls::Pending;
use channels::Channel;
use ping::PingClock;

pub(crate) use calls::{Handler, Outbound, Poke};
pub(crate) use channels::{ChannelOptions, SubscribeStart};
pub(crate) use connection::{rejection_code, Handshake};
pub(crate) use ping::{pong_for, STALE_REASON};

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

/// Everything shared between the API and the connection task.
pub(crate) struct Shared {
    pub(crate) opts: ClientOptions,
    pub(crate) state: Mutex<State>,
}

impl Shared {
    pub(crate) fn new(opts: ClientOptions) -> Self {
        let state = State::new(&opts);
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

/// The client's state; see the module docs for the locking rule. Each field is read and written
/// by the file of its concern (named beside it); this file only routes.
pub(crate) struct State {
    events: broadcast::Sender<ClientEvent>,
    // connection.rs
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
    /// The official client's call-id counter: on the client, continuing across reconnects.
    next_cid: u64,
    // ping.rs
    ping: PingClock,
    // auth.rs
    auth: AuthState,
    // calls.rs
    next_req: u64,
    pending: HashMap<u64, Pending>,
    /// Transmits and invokes issued while the connection was not open, in order.
    buffer: VecDeque<Outbound>,
    receivers: HashMap<String, Vec<mpsc::UnboundedSender<Option<Value>>>>,
    procedures: HashMap<String, Handler>,
    // channels.rs
    channels: HashMap<String, Channel>,
    channel_seq: u64,
}

fn emit(events: &broadcast::Sender<ClientEvent>, event: ClientEvent) {
    tracing::trace!(?event, "client event");
    // No receiver is fine.
    let _ = events.send(event);
}

impl State {
    fn new(opts: &ClientOptions) -> Self {
        let (events, _) = broadcast::channel(opts.event_capacity.max(1));
        Self {
            events,
            phase: Phase::Closed,
            attempt: 0,
            conn: None,
            terminal: None,
            last_close: (1000, String::new()),
            id: None,
            next_cid: 1,
            ping: PingClock::new(opts.ping_watchdog, opts.connect_timeout),
            auth: AuthState::new(opts.auth_token.clone()),
            next_req: 1,
            pending: HashMap::new(),
            buffer: VecDeque::new(),
            receivers: HashMap::new(),
            procedures: HashMap::new(),
            channels: HashMap::new(),
            channel_seq: 0,
        }
    }

    pub(crate) fn subscribe_events(&self) -> broadcast::Receiver<ClientEvent> {
        self.events.subscribe()
    }

    /// Emits an event to every [`super::Client::events`] receiver.
    pub(crate) fn emit(&self, event: ClientEvent) {
        emit(&self.events, event);
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

    pub(crate) fn is_terminal(&self) -> bool {
        self.terminal.is_some()
    }

    fn next_cid(&mut self) -> u64 {
        let cid = self.next_cid;
        self.next_cid += 1;
        cid
    }

    /// Queues a frame on the current connection. Returns false if there is none.
    fn send(&self, frame: String) -> bool {
        match &self.conn {
            Some(conn) => conn.send(Message::text(frame)).is_ok(),
            None => false,
        }
    }

    /// Ends every subscription and receiver stream (the client is gone).
    pub(crate) fn clear_streams(&mut self) {
        self.channels.clear();
        self.receivers.clear();
        self.procedures.clear();
    }

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
                } else {
                    self.on_response(rid, data, error);
                }
            }
            // The auth events are handled as transmits and as invokes; `#publish` and
            // `#kickOut` only as transmits (as invokes they are ordinary procedures, like in
            // the official client).
            Packet::Event { event, data, cid } => match (event.as_str(), cid) {
                ("#setAuthToken", _) => self.on_set_auth_token(data, cid),
                ("#removeAuthToken", _) => self.on_remove_auth_token(cid),
                ("#publish", None) => self.on_publish(data),
                ("#kickOut", None) => self.on_kick_out(data),
                ("#presence", None) => {
                    self.on_presence(data.as_ref());
                    self.on_server_transmit(&event, data);
                }
                ("#recoveryFailed", None) => {
                    self.on_recovery_failed(data.as_ref());
                    self.on_server_transmit(&event, data);
                }
                (_, Some(cid)) => self.on_server_invoke(event, data, cid),
                (_, None) => self.on_server_transmit(&event, data),
            },
            Packet::Other => tracing::trace!("ignoring a non-packet"),
        }
    }
}

#[cfg(test)]
pub(crate) mod testkit;
