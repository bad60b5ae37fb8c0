//! The per-socket rate limits (see [`crate::limit`]): one bucket for every message the socket
//! sends, and one per limited event, created on first use.

use std::collections::HashMap;

use crate::app::App;
use crate::config::Config;
use crate::limit::{Bucket, LimitAction};
use crate::protocol::{self, close, Packet, RawEvent};
use crate::socket::Socket;

/// The socket went over a limit whose action is to disconnect it.
pub(super) struct Closed;

/// What a limit says about one event.
enum Admission {
    Pass,
    /// Dropped (an invoke was answered with the limit's error).
    Refused,
    /// Over a limit whose action is to disconnect.
    Disconnect,
}

/// This socket's rate-limit buckets.
pub(super) struct Limits {
    socket: Option<Bucket>,
    /// Created on the first limited event: most apps limit none, and an empty map is 48 bytes
    /// in every idle socket's reader (boxed, it is 8).
    #[allow(clippy::box_collection)]
    events: Option<Box<HashMap<String, Bucket>>>,
}

impl Limits {
    pub(super) fn new(config: &Config, now: std::time::Instant) -> Self {
        Self {
            socket: config.message_rate_limit.map(|l| Bucket::new(l, now)),
            events: None,
        }
    }

    /// Charges each event packet, or one token for a message without events; returns what may
    /// go on. Refused invokes are answered here; a disconnecting limit closes the socket.
    pub(super) fn apply(
        &mut self,
        socket: &Socket,
        app: &App,
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
            match self.admit(socket, app, event, *cid, now) {
                Admission::Pass => true,
                Admission::Refused => false,
                Admission::Disconnect => {
                    disconnect = true;
                    false
                }
            }
        });
        if disconnect {
            return Err(self.close(socket));
        }
        Ok(packets)
    }

    /// [`apply`](Self::apply) for the fast path's message of one event: whether it may go on.
    pub(super) fn apply_one(
        &mut self,
        (socket, app): (&Socket, &App),
        event: &RawEvent,
        now: std::time::Instant,
    ) -> Result<bool, Closed> {
        match self.admit(socket, app, &event.event, event.cid, now) {
            Admission::Pass => Ok(true),
            Admission::Refused => Ok(false),
            Admission::Disconnect => Err(self.close(socket)),
        }
    }

    /// Charges one event; a refused invoke is answered here.
    fn admit(
        &mut self,
        socket: &Socket,
        app: &App,
        event: &str,
        cid: Option<u64>,
        now: std::time::Instant,
    ) -> Admission {
        let mut refused = None;
        if let Some(bucket) = &mut self.socket {
            if !bucket.take(now) {
                refused = Some((bucket.limit, ""));
            }
        }
        let limited = app.app_event_limits || event.starts_with('#');
        if refused.is_none() && limited && !app.event_limits.is_empty() {
            if let Some(limit) = app.event_limits.get(event) {
                let buckets = self.events.get_or_insert_with(Box::default);
                if !buckets.contains_key(event) {
                    buckets.insert(event.to_owned(), Bucket::new(*limit, now));
                }
                let bucket = buckets.get_mut(event);
                if bucket.is_some_and(|b| !b.take(now)) {
                    refused = Some((*limit, " for this event"));
                }
            }
        }
        match refused {
            None => Admission::Pass,
            Some((limit, _)) if limit.action == LimitAction::Disconnect => Admission::Disconnect,
            Some((limit, what)) => {
                if let Some(cid) = cid {
                    let error = limit.error(what);
                    let _ = socket.push(protocol::encode_error_response(cid, &error).into());
                }
                Admission::Refused
            }
        }
    }

    fn close(&self, socket: &Socket) -> Closed {
        tracing::warn!(socket = %socket.id(), "message rate limit exceeded: disconnecting");
        socket.close_now(close::RATE_LIMITED, "Rate limit exceeded");
        Closed
    }
}
