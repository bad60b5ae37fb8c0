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
                self.on_subscribe_reply(&channel, rid, data, error);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::super::testkit::{options, status, Rig, ACK};
    use super::*;

    #[test]
    fn invokes_are_resolved_by_rid_in_any_order() {
        let mut rig = Rig::open();
        let (_, mut a, poke) = rig.invoke("a", Some("1"));
        assert_eq!(poke, Poke::None);
        let (_, mut b, _) = rig.invoke("b", None);
        assert_eq!(
            rig.sent(),
            [
                r#"{"event":"a","data":1,"cid":2}"#,
                r#"{"event":"b","cid":3}"#
            ]
        );
        rig.feed(r#"[{"rid":3,"data":"B"},{"rid":2}]"#);
        assert_eq!(
            b.try_recv().expect("b resolved").ok(),
            Some(Some(json!("B")))
        );
        assert_eq!(a.try_recv().expect("a resolved").ok(), Some(None));
        assert_eq!(rig.st.awaiting_responses(), 0);
    }

    #[test]
    fn an_error_response_rejects_with_the_servers_error() {
        let mut rig = Rig::open();
        let (_, mut reply, _) = rig.invoke("fail", Some("null"));
        rig.feed(r#"{"rid":2,"error":{"message":"custom failure","name":"MyError","extra":42}}"#);
        let Ok(Err(InvokeError::Remote(error))) = reply.try_recv() else {
            panic!("the server's error rejects the invoke");
        };
        assert_eq!(error.name(), "MyError");
        assert_eq!(error.message(), "custom failure");
        assert_eq!(error.get("extra"), Some(&json!(42)));
    }

    #[test]
    fn unknown_and_repeated_rids_are_dropped() {
        let mut rig = Rig::open();
        let (_, mut reply, _) = rig.invoke("echo", None);
        rig.sent();
        rig.feed(r#"{"rid":99,"data":"stray"}"#);
        assert!(reply.try_recv().is_err(), "still waiting");
        rig.feed(r#"{"rid":2,"data":"first"}"#);
        rig.feed(r#"{"rid":2,"data":"second"}"#);
        assert_eq!(
            reply.try_recv().expect("resolved").ok(),
            Some(Some(json!("first")))
        );
        assert!(rig.sent().is_empty());
    }

    #[test]
    fn a_timed_out_invoke_ignores_its_late_response() {
        let mut rig = Rig::open();
        let (req, mut reply, _) = rig.invoke("slow", None);
        // What the API does when ack_timeout passes (or the caller drops the future).
        rig.st.cancel(req);
        assert_eq!(rig.st.awaiting_responses(), 0);
        rig.feed(r#"{"rid":2,"data":"late"}"#);
        assert!(matches!(
            reply.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
    }

    #[test]
    fn a_cancelled_buffered_call_is_never_sent() {
        let mut rig = Rig::connecting(options());
        rig.sent();
        let (req, _reply, _) = rig.invoke("gone", None);
        rig.transmit("kept", None);
        rig.st.cancel(req);
        rig.reply_handshake(status("s", 1000));
        assert_eq!(rig.sent(), [r#"{"event":"kept"}"#]);
    }

    #[test]
    fn calls_made_while_connecting_are_sent_in_order_after_the_handshake() {
        let mut rig = Rig::connecting(options());
        rig.sent();
        assert_eq!(rig.transmit("t1", Some("1")), Poke::None);
        let (_, mut reply, poke) = rig.invoke("i1", Some("2"));
        assert_eq!(poke, Poke::None);
        rig.transmit("t2", None);
        assert!(rig.sent().is_empty(), "nothing before the handshake reply");
        rig.reply_handshake(status("s", 1000));
        assert_eq!(
            rig.sent(),
            [
                r#"{"event":"t1","data":1}"#,
                r#"{"event":"i1","data":2,"cid":2}"#,
                r#"{"event":"t2"}"#,
            ]
        );
        rig.feed(r#"{"rid":2,"data":"ok"}"#);
        assert_eq!(
            reply.try_recv().expect("resolved").ok(),
            Some(Some(json!("ok")))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn buffered_calls_past_ack_timeout_or_abandoned_are_dropped() {
        let mut rig = Rig::connecting(options());
        rig.sent();
        rig.transmit("expired", None);
        tokio::time::advance(ACK - Duration::from_millis(1)).await;
        rig.transmit("fresh", None);
        let (_, abandoned, _) = rig.invoke("abandoned", None);
        drop(abandoned);
        tokio::time::advance(Duration::from_millis(1)).await;
        rig.reply_handshake(status("s", 1000));
        assert_eq!(rig.sent(), [r#"{"event":"fresh"}"#]);
        assert_eq!(rig.st.awaiting_responses(), 0);
    }

    #[test]
    fn a_call_while_waiting_to_reconnect_asks_to_connect_now() {
        let mut rig = Rig::open();
        rig.close(1006);
        assert_eq!(rig.transmit("note", Some("1")), Poke::ConnectNow);
        assert!(rig.sent().is_empty());
        rig.reconnect();
        rig.reply_handshake(status("s2", 1000));
        assert_eq!(
            rig.sent(),
            [
                r##"{"event":"#handshake","data":{"authToken":null},"cid":2}"##,
                r#"{"event":"note","data":1}"#,
            ]
        );
    }

    #[test]
    fn a_failed_attempt_fails_buffered_invokes() {
        let mut rig = Rig::connecting(options());
        let (_, mut reply, _) = rig.invoke("echo", None);
        rig.close(4007);
        assert!(matches!(
            reply.try_recv(),
            Ok(Err(InvokeError::BadConnection { event, code: 4007, .. })) if event == "echo"
        ));
        rig.reconnect();
        rig.reply_handshake(status("s", 1000));
        assert_eq!(
            rig.sent().len(),
            1,
            "only the handshake: the buffer was emptied"
        );
    }

    #[tokio::test]
    async fn server_invokes_are_answered_by_their_procedure() {
        let mut rig = Rig::open();
        let echo: Handler = Arc::new(|data| Box::pin(async move { Ok(data) }));
        let refuse: Handler =
            Arc::new(|_| Box::pin(async { Err(ScError::new("ClientErr", "client says no")) }));
        rig.st.set_procedure("askClient", echo);
        rig.st.set_procedure("badQuestion", refuse);
        rig.feed(r#"{"event":"askClient","cid":1,"data":{"q":1}}"#);
        assert_eq!(rig.next_sent().await, r#"{"rid":1,"data":{"q":1}}"#);
        rig.feed(r#"{"event":"badQuestion","cid":2}"#);
        assert_eq!(
            rig.next_sent().await,
            r#"{"rid":2,"error":{"message":"client says no","name":"ClientErr"}}"#
        );
        rig.feed(r#"{"event":"askClient","cid":3}"#);
        assert_eq!(rig.next_sent().await, r#"{"rid":3}"#);
    }

    #[tokio::test]
    async fn server_invokes_without_a_procedure_are_not_answered() {
        let mut rig = Rig::open();
        let echo: Handler = Arc::new(|data| Box::pin(async move { Ok(data) }));
        rig.st.set_procedure("removed", echo);
        rig.st.remove_procedure("removed");
        rig.feed(r#"{"event":"removed","cid":1}"#);
        rig.feed(r#"{"event":"nobody","cid":2,"data":1}"#);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(rig.sent().is_empty());
    }

    #[tokio::test]
    async fn channel_events_sent_as_invokes_are_ordinary_procedures() {
        let mut rig = Rig::open();
        let mut sub = rig.subscribe("a");
        rig.feed(r#"{"rid":2}"#);
        rig.sent();
        let echo: Handler = Arc::new(|data| Box::pin(async move { Ok(data) }));
        rig.st.set_procedure("#publish", echo);
        rig.feed(r##"{"event":"#publish","cid":9,"data":{"channel":"a","data":1}}"##);
        assert_eq!(
            rig.next_sent().await,
            r#"{"rid":9,"data":{"channel":"a","data":1}}"#
        );
        assert!(sub.rx.try_recv().is_err(), "not a publication");
    }

    #[test]
    fn server_transmits_reach_every_live_receiver_of_their_event() {
        let mut rig = Rig::open();
        let (note_tx, mut note) = mpsc::unbounded_channel();
        let (gone_tx, gone) = mpsc::unbounded_channel();
        let (other_tx, mut other) = mpsc::unbounded_channel();
        rig.st.add_receiver("note", note_tx);
        rig.st.add_receiver("note", gone_tx);
        rig.st.add_receiver("other", other_tx);
        drop(gone);
        rig.feed(r#"[{"event":"note","data":5},{"event":"note"}]"#);
        assert_eq!(note.try_recv().ok(), Some(Some(json!(5))));
        assert_eq!(note.try_recv().ok(), Some(None));
        assert!(other.try_recv().is_err());
        assert!(rig.sent().is_empty(), "transmits are never answered");
    }

    #[test]
    fn raw_text_and_non_packets_are_ignored() {
        let mut rig = Rig::open();
        let (_, mut reply, _) = rig.invoke("echo", None);
        rig.sent();
        for text in ["plain text", "{", "[1,2]", r#"{"event":42}"#, "null", "#2"] {
            rig.feed(text);
        }
        assert!(reply.try_recv().is_err(), "still waiting");
        assert!(rig.sent().is_empty());
        assert!(rig.events().is_empty());
        assert_eq!(rig.st.id().as_deref(), Some("s1"));
    }
}
