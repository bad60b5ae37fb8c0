//! Transmits and invokes in both directions. Outbound: sent at once when open, else kept in the
//! offline buffer until the next handshake; invokes wait in the pending table for the response
//! with their call id, until it comes, their caller gives up ([`State::cancel`]) or the
//! connection goes. Inbound: server transmits go to the event receivers, server invokes to the
//! application's procedures. Owns the pending table, the buffer, the receivers and procedures.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::super::errors::InvokeError;
use super::codec::{self, ScError};
use super::{Phase, State};

/// Where an invoke's outcome goes.
pub(crate) type ReplyTx = oneshot::Sender<Result<Option<Value>, InvokeError>>;

/// A boxed future returned by a client procedure handler.
pub(crate) type HandlerFuture =
    Pin<Box<dyn Future<Output = Result<Option<Value>, ScError>> + Send>>;

/// A client procedure handler (answers server invokes).
pub(crate) type Handler = Arc<dyn Fn(Option<Value>) -> HandlerFuture + Send + Sync>;

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
pub(super) enum Pending {
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

pub(super) fn bad_connection(event: &str, code: u16, reason: &str) -> InvokeError {
    InvokeError::BadConnection {
        event: event.to_owned(),
        code,
        reason: reason.to_owned(),
    }
}

impl State {
    /// A new request number: identifies an API call (and a subscription handle) for
    /// [`State::cancel`] independently of the call id it gets on the wire, if any.
    pub(crate) fn next_req(&mut self) -> u64 {
        let req = self.next_req;
        self.next_req += 1;
        req
    }

    /// A transmit or invoke from the API: sent now when open, buffered otherwise.
    /// Fails with the last close's code and reason when the client is closed for good.
    pub(crate) fn outbound(&mut self, ob: Outbound) -> Result<Poke, Outbound> {
        if self.terminal.is_some() {
            return Err(ob);
        }
        let mut poke = Poke::None;
        if let Some(target) = self.drop_if_stale() {
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
    pub(super) fn flush_buffer(&mut self) {
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

    /// A response (other than the handshake's): resolves the invoke or subscribe with that
    /// call id.
    pub(super) fn on_response(&mut self, rid: u64, data: Option<Value>, error: Option<Value>) {
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

    /// Every invoke awaiting a response fails: the connection that would carry it is gone.
    pub(super) fn fail_in_flight(&mut self, code: u16, reason: &str) {
        for (_, p) in self.pending.drain() {
            if let Pending::Invoke { event, reply, .. } = p {
                let _ = reply.send(Err(bad_connection(&event, code, reason)));
            }
        }
    }

    /// Every buffered invoke fails and buffered transmits are dropped, like the official client
    /// when a connection attempt fails.
    pub(super) fn fail_buffered(&mut self, code: u16, reason: &str) {
        for b in self.buffer.drain(..) {
            if let Some(reply) = b.reply {
                let _ = reply.send(Err(bad_connection(&b.event, code, reason)));
            }
        }
    }

    /// A server invoke of an application procedure: its handler runs in its own task and the
    /// answer goes to the connection the invoke came on.
    pub(super) fn on_server_invoke(&mut self, event: String, data: Option<Value>, cid: u64) {
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

    /// A server transmit of an application event: to every live receiver of that event.
    pub(super) fn on_server_transmit(&mut self, event: &str, data: Option<Value>) {
        if let Some(list) = self.receivers.get_mut(event) {
            list.retain(|tx| tx.send(data.clone()).is_ok());
            if list.is_empty() {
                self.receivers.remove(event);
            }
        }
    }

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
