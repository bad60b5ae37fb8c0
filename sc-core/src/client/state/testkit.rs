//! A network-free rig for the state machine's unit tests: a [`State`] driven the way the
//! connection task drives it, with the writer queue and the event broadcast read back.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::super::errors::InvokeError;
use super::{
    ChannelOptions, ClientEvent, ClientOptions, Handshake, Outbound, Poke, State, SubscribeStart,
};

/// The ack timeout of [`options`]: what a call waits for at most.
pub(crate) const ACK: Duration = Duration::from_secs(10);

/// Default options (the URL is never dialled).
pub(crate) fn options() -> ClientOptions {
    ClientOptions {
        ack_timeout: ACK,
        ..ClientOptions::default()
    }
}

/// A handshake reply's status with this socket id and ping timeout, not authenticated.
pub(crate) fn status(id: &str, ping_timeout_ms: u64) -> Value {
    json!({"id": id, "pingTimeout": ping_timeout_ms, "isAuthenticated": false})
}

/// The outcome an invoke's caller receives.
pub(crate) type Reply = oneshot::Receiver<Result<Option<Value>, InvokeError>>;

/// A subscription handle's side: its id, its publications, what `subscribe()` waits for.
pub(crate) struct Sub {
    pub(crate) id: u64,
    pub(crate) rx: mpsc::UnboundedReceiver<Value>,
    pub(crate) start: SubscribeStart,
}

pub(crate) struct Rig {
    pub(crate) st: State,
    pub(crate) attempt: u64,
    pub(crate) hs: Handshake,
    opts: ClientOptions,
    wire: mpsc::UnboundedReceiver<Message>,
    events: broadcast::Receiver<ClientEvent>,
}

impl Rig {
    /// A client whose first WebSocket has just opened: its `#handshake` is on the wire, nothing
    /// has been read back yet.
    pub(crate) fn connecting(opts: ClientOptions) -> Self {
        let mut st = State::new(&opts);
        let events = st.subscribe_events();
        let (writer, wire) = mpsc::unbounded_channel();
        let attempt = st
            .begin_attempt()
            .expect("a new client is not closed for good");
        let hs = st
            .ws_open(attempt, writer, opts.connect_timeout)
            .expect("the attempt is current");
        Self {
            st,
            attempt,
            hs,
            opts,
            wire,
            events,
        }
    }

    /// A client past its first handshake (socket id `s1`, ping timeout 30 s, not
    /// authenticated), with the wire and the events read back.
    pub(crate) fn open() -> Self {
        let mut rig = Self::connecting(options());
        rig.reply_handshake(status("s1", 30_000));
        rig.sent();
        rig.events();
        rig
    }

    /// Inbound text on the current connection.
    pub(crate) fn feed(&mut self, text: &str) {
        self.st.handle_text(self.attempt, text, &mut self.hs);
    }

    pub(crate) fn reply_handshake(&mut self, status: Value) {
        let reply = json!({"rid": self.hs.cid, "data": status});
        self.feed(&reply.to_string());
    }

    /// The connection task's side of a close with `code` (no reason in the frame).
    pub(crate) fn close(&mut self, code: u16) -> Option<bool> {
        self.st.destroy(self.attempt, code, "", false)
    }

    /// The connection task reconnecting: a new attempt whose WebSocket opens at once.
    pub(crate) fn reconnect(&mut self) {
        let (writer, wire) = mpsc::unbounded_channel();
        self.attempt = self
            .st
            .begin_attempt()
            .expect("the client is not closed for good");
        self.hs = self
            .st
            .ws_open(self.attempt, writer, self.opts.connect_timeout)
            .expect("the attempt is current");
        self.wire = wire;
    }

    /// Frames queued on the current connection since the last call, in order.
    pub(crate) fn sent(&mut self) -> Vec<String> {
        let mut frames = Vec::new();
        while let Ok(message) = self.wire.try_recv() {
            frames.push(text_of(message));
        }
        frames
    }

    /// The next frame, waiting for it (a procedure answers from its own task).
    pub(crate) async fn next_sent(&mut self) -> String {
        let message = tokio::time::timeout(Duration::from_secs(5), self.wire.recv())
            .await
            .expect("a frame in time")
            .expect("the writer queue is open");
        text_of(message)
    }

    /// Events emitted since the last call, in order.
    pub(crate) fn events(&mut self) -> Vec<ClientEvent> {
        let mut events = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            events.push(event);
        }
        events
    }

    /// An API invoke with raw JSON data, as `Client::call` issues it.
    pub(crate) fn invoke(&mut self, event: &str, data: Option<&str>) -> (u64, Reply, Poke) {
        let (reply, rx) = oneshot::channel();
        let req = self.st.next_req();
        let poke = self
            .st
            .outbound(Outbound {
                req,
                event: event.to_owned(),
                data: data.map(str::to_owned),
                reply: Some(reply),
                deadline: Instant::now() + self.opts.ack_timeout,
            })
            .map_err(|_| "closed for good")
            .expect("accepted");
        (req, rx, poke)
    }

    /// An API transmit with raw JSON data.
    pub(crate) fn transmit(&mut self, event: &str, data: Option<&str>) -> Poke {
        let req = self.st.next_req();
        self.st
            .outbound(Outbound {
                req,
                event: event.to_owned(),
                data: data.map(str::to_owned),
                reply: None,
                deadline: Instant::now() + self.opts.ack_timeout,
            })
            .map_err(|_| "closed for good")
            .expect("accepted")
    }

    /// A `subscribe()` call with default options.
    pub(crate) fn subscribe(&mut self, channel: &str) -> Sub {
        self.subscribe_with(channel, false, None, 0)
    }

    pub(crate) fn subscribe_with(
        &mut self,
        channel: &str,
        wait_for_auth: bool,
        data: Option<Value>,
        priority: i32,
    ) -> Sub {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.st.next_req();
        let start = self.st.add_subscription(
            channel,
            id,
            tx,
            ChannelOptions {
                wait_for_auth,
                data,
                priority,
            },
        );
        Sub { id, rx, start }
    }
}

impl State {
    /// How many invokes and subscribes await a response.
    pub(crate) fn awaiting_responses(&self) -> usize {
        self.pending.len()
    }
}

fn text_of(message: Message) -> String {
    message.to_text().expect("a text frame").to_owned()
}
