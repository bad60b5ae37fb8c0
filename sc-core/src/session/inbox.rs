//! A socket's inbound queue: the message being handled and those waiting behind it, bounded in
//! number (`inbound_queue_limit`) and in the memory their decoded form holds
//! (`inbound_queue_bytes`). The reader stops reading the socket while it is full, so a client
//! flooding a slow handler is slowed down by TCP, not buffered.
//!
//! The bytes are measured on the decoded packets, not taken from the wire length: JSON grows
//! when parsed (each `0,` of an array is a 32-byte [`Value`]), so 1 MB of `[0,0,...]` holds about
//! 16 MB, while 1 MB of string holds 1 MB. A message of one app event is held as its text (the
//! fast path of `protocol::decode_event`) and measured as such; only the running one may grow
//! into a tree, when its handler asks for one.

use std::collections::VecDeque;
use std::mem::size_of;

use serde_json::Value;

use super::dispatch::dispatch;
use super::Context;
use crate::config::Config;
use crate::protocol::{Packet, RawEvent};
use crate::socket::Socket;

/// The handling of one message, borrowing the connection's context and socket (no clone of
/// either per message).
pub(super) type Running<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// One decoded inbound message waiting for the dispatcher.
pub(super) struct InboundMessage {
    /// The message text, kept only when inbound-raw middleware needs it.
    pub(super) raw: Option<String>,
    pub(super) packets: Vec<Packet>,
    /// The one app event of a message that took the fast path (`packets` is empty then).
    pub(super) event: Option<RawEvent>,
}

/// The socket's inbound messages: the one being handled, as a boxed future, and those waiting.
#[derive(Default)]
pub(super) struct Inbox<'a> {
    pub(super) running: Option<Running<'a>>,
    /// Each waiting message with its cost.
    queued: VecDeque<(InboundMessage, usize)>,
    /// The cost of the running message (its data is the handler's until it returns).
    running_cost: usize,
    /// The cost of the running and the waiting messages.
    bytes: usize,
}

impl<'a> Inbox<'a> {
    /// Whether the reader may read another message. The one it reads may take the queue over
    /// `inbound_queue_bytes` (a message always fits an empty queue), so a socket holds at most
    /// that plus one message.
    pub(super) fn has_room(&self, config: &Config) -> bool {
        self.queued.len() < config.inbound_queue_limit && self.bytes < config.inbound_queue_bytes
    }

    pub(super) fn push(&mut self, ctx: &'a Context, socket: &'a Socket, message: InboundMessage) {
        let cost = message_cost(&message);
        self.bytes += cost;
        if self.running.is_none() {
            self.start(ctx, socket, message, cost);
        } else {
            self.queued.push_back((message, cost));
        }
    }

    fn start(
        &mut self,
        ctx: &'a Context,
        socket: &'a Socket,
        message: InboundMessage,
        cost: usize,
    ) {
        self.running_cost = cost;
        self.running = Some(Box::pin(dispatch(ctx, socket, message)));
    }

    /// Polls the running message's handling to completion (cancel-safe: the future stays here).
    pub(super) async fn run(&mut self) {
        if let Some(running) = self.running.as_mut() {
            running.await;
        }
    }

    /// Polls the running message's handling once in the caller's task: `true` when it is done
    /// (the caller then calls [`next`](Self::next)), `false` when it waits or nothing runs.
    pub(super) fn poll_running(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        self.running
            .as_mut()
            .is_some_and(|running| running.as_mut().poll(cx).is_ready())
    }

    /// The running message is done: start the next one, if any (and if the socket is open).
    pub(super) fn next(&mut self, ctx: &'a Context, socket: &'a Socket) {
        self.running = None;
        self.bytes -= std::mem::take(&mut self.running_cost);
        if !socket.is_open() {
            self.queued.clear();
            self.bytes = 0;
        }
        if let Some((message, cost)) = self.queued.pop_front() {
            self.start(ctx, socket, message, cost);
        }
        if self.queued.capacity() > 64 && self.queued.is_empty() {
            self.queued = VecDeque::new();
        }
    }
}

/// The memory a decoded message holds, in bytes: its structs, strings and JSON trees (the map
/// entries' index overhead estimated).
fn message_cost(message: &InboundMessage) -> usize {
    let packets: usize = message.packets.iter().map(packet_cost).sum();
    // Its payload is text: what it holds is its length.
    let event = message.event.as_ref().map_or(0, |e| {
        e.event.capacity() + e.data.as_ref().map_or(0, |d| d.get().len())
    });
    size_of::<InboundMessage>()
        + event
        + message.raw.as_ref().map_or(0, String::capacity)
        + message.packets.capacity() * size_of::<Packet>()
        + packets
}

/// What a packet holds beyond its own struct.
fn packet_cost(packet: &Packet) -> usize {
    let data = |v: &Option<Value>| v.as_ref().map_or(0, value_cost);
    match packet {
        Packet::Event { event, data: d, .. } => event.capacity() + data(d),
        Packet::Response { data: d, error, .. } => data(d) + data(error),
        Packet::Other => 0,
    }
}

/// What a JSON value holds beyond its own [`Value`]. Recursive: decoded trees are at most
/// serde_json's nesting limit (128) deep.
fn value_cost(value: &Value) -> usize {
    // An ordered map's entry: key and value, its hash, and an index slot.
    const ENTRY: usize = size_of::<String>() + size_of::<Value>() + 2 * size_of::<usize>();
    match value {
        Value::String(s) => s.capacity(),
        Value::Array(items) => {
            items.capacity() * size_of::<Value>() + items.iter().map(value_cost).sum::<usize>()
        }
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| ENTRY + key.capacity() + value_cost(value))
            .sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode, Inbound};

    fn cost_of(text: &str) -> usize {
        let Inbound::Packets(packets) = decode(text) else {
            panic!("not a packet: {text}");
        };
        message_cost(&InboundMessage {
            raw: None,
            packets,
            event: None,
        })
    }

    #[test]
    fn an_array_of_zeros_costs_its_decoded_size_not_its_wire_length() {
        let zeros = vec!["0"; 500_000].join(",");
        let text = format!(r#"{{"event":"e","data":[{zeros}],"cid":1}}"#);
        assert!(text.len() < 1_100_000);
        let cost = cost_of(&text);
        // 500,000 Values of 32 bytes each.
        assert!(cost >= 16_000_000, "cost {cost}");
        assert!(cost <= 40_000_000, "cost {cost}");
    }

    #[test]
    fn a_string_costs_about_its_length() {
        let text = format!(r#"{{"event":"e","data":"{}"}}"#, "x".repeat(1_000_000));
        let cost = cost_of(&text);
        assert!((1_000_000..1_001_000).contains(&cost), "cost {cost}");
    }

    #[test]
    fn objects_count_their_keys_and_entries() {
        let small = cost_of(r#"{"event":"e","data":{}}"#);
        let keys: Vec<String> = (0..1000).map(|i| format!(r#""key{i}":null"#)).collect();
        let big = cost_of(&format!(r#"{{"event":"e","data":{{{}}}}}"#, keys.join(",")));
        assert!(big - small >= 1000 * (size_of::<String>() + size_of::<Value>()));
    }

    #[test]
    fn a_full_queue_has_no_room_until_its_bytes_are_released() {
        let config = Config {
            inbound_queue_bytes: 1024,
            inbound_queue_limit: 256,
            ..Config::default()
        };
        let mut inbox = Inbox::default();
        assert!(inbox.has_room(&config));
        let message = InboundMessage {
            raw: Some("x".repeat(2000)),
            packets: Vec::new(),
            event: None,
        };
        let cost = message_cost(&message);
        inbox.bytes += cost;
        inbox.queued.push_back((message, cost));
        assert!(!inbox.has_room(&config), "over the bytes: no more reads");
        let (_, cost) = inbox.queued.pop_front().expect("queued");
        inbox.bytes -= cost;
        assert!(inbox.has_room(&config));
        let config = Config {
            inbound_queue_limit: 1,
            ..config
        };
        inbox.queued.push_back((
            InboundMessage {
                raw: None,
                packets: Vec::new(),
                event: None,
            },
            0,
        ));
        assert!(!inbox.has_room(&config), "over the count: no more reads");
    }
}
