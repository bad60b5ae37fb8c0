//! The connection lifecycle: numbered attempts, the `#handshake` and its reply, tear-down (the
//! official `_destroy`), closing for good and `reconnect()`. Owns the phase, the attempt number,
//! the writer queue, the socket id and the last close.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::codec::{self, ScError};
use super::{emit, ping, ClientEvent, Phase, State};

/// Session-local handshake bookkeeping, filled in by [`State::handle_text`].
pub(crate) struct Handshake {
    /// The call id of this connection's `#handshake`.
    pub(crate) cid: u64,
    /// The token sent in it.
    pub(crate) token: Option<String>,
    /// Set when the reply arrives: the ping timeout to arm, or the server's error.
    pub(crate) outcome: Option<Result<Duration, ScError>>,
}

/// The close code after the server rejected the handshake: the error's `statusCode`, else 4003,
/// like the official client.
pub(crate) fn rejection_code(error: &ScError) -> u16 {
    error
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(4003)
}

impl State {
    /// The last close, for calls on a closed client.
    pub(crate) fn last_close(&self) -> (u16, String) {
        self.terminal
            .clone()
            .unwrap_or_else(|| self.last_close.clone())
    }

    /// Starts connection attempt N+1 unless the client is closed for good.
    pub(crate) fn begin_attempt(&mut self) -> Option<u64> {
        if self.terminal.is_some() {
            return None;
        }
        self.attempt += 1;
        self.phase = Phase::Connecting;
        self.conn = None;
        self.ping.disarm();
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
        self.ping.arm(connect_timeout);
        let cid = self.next_cid();
        let token = self.auth.stored_token();
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

    /// The reply to this connection's `#handshake`: an error is left in `hs.outcome` for the
    /// connection task to close with; a status opens the connection, resubscribes, emits
    /// [`ClientEvent::Connect`] and then flushes the offline buffer, in that order.
    pub(super) fn on_handshake(
        &mut self,
        data: Option<Value>,
        error: Option<Value>,
        hs: &mut Handshake,
    ) {
        if let Some(error) = error {
            hs.outcome = Some(Err(ScError::from_wire(&error)));
            return;
        }
        let status = data.as_ref().and_then(Value::as_object);
        let ping_timeout = ping::handshake_ping_timeout(status, self.ping.timeout());
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
        self.ping.arm(ping_timeout);
        self.on_handshake_auth(is_authenticated, hs.token.clone(), auth_error.clone());
        self.process_pending_subscriptions();
        emit(
            &self.events,
            ClientEvent::Connect {
                id,
                is_authenticated: self.auth.is_authenticated(),
                auth_error,
                ping_timeout,
            },
        );
        self.flush_buffer();
        hs.outcome = Some(Ok(ping_timeout));
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

        self.suspend_channels();
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

        self.fail_in_flight(code, &reason);
        self.fail_buffered(code, &reason);
        if terminal {
            self.fail_subscribe_waiters(code, &reason);
        }
        Some(was_open)
    }

    /// Closes the client for good from the API (`disconnect()`): tears down the current
    /// attempt if any, and fails everything that waits for a connection.
    pub(crate) fn close_for_good(&mut self, code: u16, reason: &str) {
        let attempt = self.attempt;
        if self.destroy(attempt, code, reason, true).is_none() {
            self.terminal = Some((code, reason.to_owned()));
            self.fail_buffered(code, reason);
            self.fail_subscribe_waiters(code, reason);
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
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testkit::{options, status, Rig};
    use super::super::{Outbound, Poke, SubscribeStart};
    use super::*;
    use crate::client::{ConnectionState, InvokeError};

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn handshake_is_the_first_frame_and_carries_the_stored_token() {
        let mut rig = Rig::connecting(options());
        assert_eq!(
            rig.sent(),
            [r##"{"event":"#handshake","data":{"authToken":null},"cid":1}"##]
        );
        assert_eq!(rig.st.connection_state(), ConnectionState::Connecting);
        assert_eq!(rig.events(), [ClientEvent::Connecting]);

        let mut opts = options();
        opts.auth_token = Some("h.p.s".to_owned());
        let mut rig = Rig::connecting(opts);
        assert_eq!(
            rig.sent(),
            [r##"{"event":"#handshake","data":{"authToken":"h.p.s"},"cid":1}"##]
        );
    }

    #[test]
    fn handshake_reply_opens_the_connection_and_reports_connect() {
        let mut rig = Rig::connecting(options());
        rig.sent();
        rig.events();
        rig.feed(r#"{"rid":1,"data":{"id":"sLYU","pingTimeout":20000,"isAuthenticated":false}}"#);
        assert!(matches!(rig.hs.outcome, Some(Ok(t)) if t == secs(20)));
        assert_eq!(rig.st.connection_state(), ConnectionState::Open);
        assert_eq!(rig.st.id().as_deref(), Some("sLYU"));
        assert_eq!(
            rig.events(),
            [ClientEvent::Connect {
                id: "sLYU".to_owned(),
                is_authenticated: false,
                auth_error: None,
                ping_timeout: secs(20),
            }]
        );
        assert!(rig.sent().is_empty());
    }

    #[test]
    fn only_the_handshake_cid_answers_the_handshake() {
        let mut rig = Rig::connecting(options());
        rig.feed(r#"{"rid":2,"data":{"id":"x","pingTimeout":1000}}"#);
        rig.feed(r##"{"event":"#handshake","data":{"id":"x"}}"##);
        assert!(rig.hs.outcome.is_none());
        assert_eq!(rig.st.connection_state(), ConnectionState::Connecting);
        // Once open, a second reply with the handshake's cid is an unknown response.
        rig.reply_handshake(status("first", 1000));
        rig.hs.outcome = None;
        rig.reply_handshake(status("second", 2000));
        assert!(rig.hs.outcome.is_none());
        assert_eq!(rig.st.id().as_deref(), Some("first"));
    }

    #[test]
    fn handshake_authenticates_only_with_the_token_it_sent() {
        let mut opts = options();
        opts.auth_token = Some("h.p.s".to_owned());
        let mut rig = Rig::connecting(opts);
        rig.events();
        rig.reply_handshake(json!({"id": "a", "pingTimeout": 1000, "isAuthenticated": true}));
        assert_eq!(
            rig.events(),
            [
                ClientEvent::Authenticate {
                    signed_token: "h.p.s".to_owned()
                },
                ClientEvent::Connect {
                    id: "a".to_owned(),
                    is_authenticated: true,
                    auth_error: None,
                    ping_timeout: secs(1),
                },
            ]
        );
        assert!(rig.st.is_authenticated());
        assert_eq!(rig.st.signed_token().as_deref(), Some("h.p.s"));

        // The server claiming authentication without a token sent does not make it so.
        let mut rig = Rig::connecting(options());
        rig.reply_handshake(json!({"id": "b", "pingTimeout": 1000, "isAuthenticated": true}));
        assert!(!rig.st.is_authenticated());
        assert!(rig.events().contains(&ClientEvent::Connect {
            id: "b".to_owned(),
            is_authenticated: false,
            auth_error: None,
            ping_timeout: secs(1),
        }));
    }

    #[test]
    fn a_rejected_token_is_reported_in_connect_and_kept_as_auth_error() {
        let mut opts = options();
        opts.auth_token = Some("h.p.s".to_owned());
        let mut rig = Rig::connecting(opts);
        rig.events();
        rig.reply_handshake(json!({
            "id": "a", "pingTimeout": 1000, "isAuthenticated": false,
            "authError": {"name": "AuthTokenExpiredError", "message": "jwt expired"},
        }));
        let expired = ScError::new("AuthTokenExpiredError", "jwt expired");
        assert_eq!(rig.st.auth_error(), Some(expired.clone()));
        assert!(!rig.st.is_authenticated());
        assert_eq!(
            rig.events(),
            [ClientEvent::Connect {
                id: "a".to_owned(),
                is_authenticated: false,
                auth_error: Some(expired),
                ping_timeout: secs(1),
            }]
        );
    }

    #[test]
    fn a_handshake_error_is_left_to_the_driver_with_its_close_code() {
        let mut rig = Rig::connecting(options());
        rig.events();
        rig.feed(r#"{"rid":1,"error":{"name":"Blocked","message":"go away","statusCode":4501}}"#);
        let Some(Err(error)) = rig.hs.outcome.take() else {
            panic!("the handshake error is the outcome");
        };
        assert_eq!(error.name(), "Blocked");
        assert_eq!(rejection_code(&error), 4501);
        // Not open, nothing emitted: closing is the driver's move.
        assert_eq!(rig.st.connection_state(), ConnectionState::Connecting);
        assert!(rig.events().is_empty());

        assert_eq!(rejection_code(&ScError::new("Blocked", "no code")), 4003);
        let huge = ScError::new("Blocked", "too big").with("statusCode", 70_000);
        assert_eq!(rejection_code(&huge), 4003);
    }

    #[test]
    fn call_ids_continue_across_reconnects() {
        let mut rig = Rig::open();
        rig.invoke("echo", None);
        assert_eq!(rig.sent(), [r#"{"event":"echo","cid":2}"#]);
        rig.close(4000);
        rig.reconnect();
        assert_eq!(
            rig.sent(),
            [r##"{"event":"#handshake","data":{"authToken":null},"cid":3}"##]
        );
    }

    #[test]
    fn a_lost_connection_fails_pending_invokes_and_reports_why() {
        let mut rig = Rig::open();
        let (_, mut reply, _) = rig.invoke("echo", Some("1"));
        assert_eq!(rig.close(4001), Some(true));
        let reason = "Client pong timed out";
        assert!(matches!(
            reply.try_recv(),
            Ok(Err(InvokeError::BadConnection { event, code: 4001, reason: r }))
                if event == "echo" && r == reason
        ));
        assert_eq!(
            rig.events(),
            [
                ClientEvent::Disconnect {
                    code: 4001,
                    reason: reason.to_owned()
                },
                ClientEvent::Error(ScError::new("SocketProtocolError", reason).with("code", 4001)),
            ]
        );
        assert_eq!(rig.st.connection_state(), ConnectionState::Closed);
        assert_eq!(rig.st.id(), None);
        assert_eq!(rig.st.last_close(), (4001, reason.to_owned()));
    }

    #[test]
    fn normal_closes_are_not_errors_and_unknown_codes_get_a_message() {
        let mut rig = Rig::open();
        rig.st.destroy(rig.attempt, 1000, "bye", false);
        assert_eq!(
            rig.events(),
            [ClientEvent::Disconnect {
                code: 1000,
                reason: "bye".to_owned()
            }]
        );

        let mut rig = Rig::open();
        rig.st.destroy(rig.attempt, 4321, "why", false);
        let message = "Socket connection closed with status code 4321 and reason: why";
        assert_eq!(
            rig.events()[1],
            ClientEvent::Error(ScError::new("SocketProtocolError", message).with("code", 4321))
        );
    }

    #[test]
    fn a_close_before_the_handshake_reply_is_a_connect_abort() {
        let mut rig = Rig::connecting(options());
        rig.events();
        assert_eq!(rig.close(4007), Some(false));
        assert_eq!(
            rig.events()[0],
            ClientEvent::ConnectAbort {
                code: 4007,
                reason: "Client connection establishment timed out".to_owned()
            }
        );
    }

    #[test]
    fn an_attempt_torn_down_by_the_api_is_not_torn_down_again() {
        let mut rig = Rig::open();
        let old = rig.attempt;
        assert_eq!(rig.st.restart(), old);
        rig.events();
        // The driver's own close of that attempt arrives late: nothing happens twice.
        assert_eq!(rig.st.destroy(old, 1006, "", false), None);
        assert!(rig.events().is_empty());
        // Nor does text still arriving on it count.
        rig.reconnect();
        rig.sent();
        rig.events();
        let mut stale_hs = Handshake {
            cid: 1,
            token: None,
            outcome: None,
        };
        rig.st.handle_text(
            old,
            r##"{"event":"#setAuthToken","data":{"token":"h.p.s"}}"##,
            &mut stale_hs,
        );
        assert!(!rig.st.is_authenticated());
        assert!(rig.events().is_empty());
    }

    #[test]
    fn closed_for_good_fails_what_waits_and_refuses_calls_until_restart() {
        let mut rig = Rig::connecting(options());
        let (_, mut buffered, _) = rig.invoke("later", None);
        let mut sub = rig.subscribe("room");
        rig.events();
        rig.st.close_for_good(1000, "");
        assert!(matches!(
            buffered.try_recv(),
            Ok(Err(InvokeError::BadConnection { code: 1000, .. }))
        ));
        let SubscribeStart::Wait(ack) = &mut sub.start else {
            panic!("the subscribe waits for a connection");
        };
        assert!(matches!(
            ack.try_recv(),
            Ok(Err(InvokeError::BadConnection { event, code: 1000, .. })) if event == "#subscribe"
        ));
        assert_eq!(
            rig.events(),
            [ClientEvent::ConnectAbort {
                code: 1000,
                reason: String::new()
            }]
        );
        assert!(rig.st.is_terminal());
        assert_eq!(rig.st.begin_attempt(), None);
        let req = rig.st.next_req();
        let refused = rig.st.outbound(Outbound {
            req,
            event: "x".to_owned(),
            data: None,
            reply: None,
            deadline: tokio::time::Instant::now(),
        });
        assert!(refused.is_err());

        // reconnect() lifts it.
        rig.st.restart();
        assert!(!rig.st.is_terminal());
        assert!(rig.st.begin_attempt().is_some());
    }

    #[test]
    fn disconnect_while_waiting_to_reconnect_still_closes_for_good() {
        let mut rig = Rig::open();
        rig.close(1006);
        let (_, mut buffered, poke) = rig.invoke("later", None);
        assert_eq!(poke, Poke::ConnectNow);
        rig.st.close_for_good(1000, "done");
        assert!(matches!(
            buffered.try_recv(),
            Ok(Err(InvokeError::BadConnection { code: 1000, reason, .. })) if reason == "done"
        ));
        assert_eq!(rig.st.last_close(), (1000, "done".to_owned()));
        assert_eq!(rig.st.begin_attempt(), None);
    }
}
