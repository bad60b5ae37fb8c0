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
