//! History and recovery in the worker's registry: which [`HistoryPolicy`] applies to a channel
//! name, and the gate that makes a recovering subscriber get the missed publications, then the
//! live ones, each exactly once and without a gap.
//!
//! A `#subscribe` with history joins the channel first, behind a closed [`Gate`] that buffers
//! live publications; then the engine's history is read; the session sends the ack, and
//! [`Recovery::finish`] sends the missed publications, then the buffered live ones past the last
//! one sent, and opens the gate. An open gate still drops a publication at or below the last
//! offset sent (a live copy of one already replayed), so nothing is sent twice.

use std::sync::{Arc, Mutex};

use crate::app::App;
use crate::broker::{HistoryPolicy, Position, Publication};
use crate::channel::ChannelPattern;
use crate::config::Config;
use crate::socket::{frame_cost, Socket};

/// The history policy of every channel name: the declared pattern's (a declared pattern without
/// history has none), else the server-wide default (`Config::history_size`).
#[derive(Default)]
pub(crate) struct HistoryPolicies {
    /// Every declared pattern with its policy; empty when no pattern declares history (then
    /// only `default` matters, and a lookup costs nothing).
    declared: Vec<(ChannelPattern, Option<HistoryPolicy>)>,
    default: Option<HistoryPolicy>,
}

impl HistoryPolicies {
    pub(crate) fn new(app: &App, config: &Config) -> Self {
        let default = (config.history_size > 0)
            .then(|| HistoryPolicy::new(config.history_size, config.history_ttl));
        let any_declared = app.channels.iter().any(|d| d.contract.history.is_some());
        let declared = if any_declared || default.is_some() {
            app.channels
                .iter()
                .map(|d| (d.pattern.clone(), d.contract.history))
                .collect()
        } else {
            Vec::new()
        };
        Self { declared, default }
    }

    /// What gives some channel history, in words for a startup error: the first declaration
    /// with `history`, else the server-wide default; `None` when no channel has history.
    pub(crate) fn configured_by(app: &App, config: &Config) -> Option<HistorySource> {
        if let Some(d) = app.channels.iter().find(|d| d.contract.history.is_some()) {
            return Some(HistorySource::Declared(format!(
                "channel '{}' at {} declares history",
                d.pattern, d.source
            )));
        }
        (config.history_size > 0).then_some(HistorySource::Config)
    }

    /// The policy for `channel`, if it has history.
    pub(crate) fn of(&self, channel: &str) -> Option<HistoryPolicy> {
        match self.declared.iter().find(|(p, _)| p.matches(channel)) {
            Some((_, policy)) => *policy,
            None => self.default,
        }
    }
}

/// What gives some channel history ([`HistoryPolicies::configured_by`]).
pub(crate) enum HistorySource {
    /// A channel declaration, described.
    Declared(String),
    /// `Config::history_size` (`SC_HISTORY_SIZE`).
    Config,
}

/// A socket's subscription to a channel with history: buffers live publications until its
/// recovery is sent, then drops those it already sent, and tells the socket about any gap
/// (`#recoveryFailed`) instead of letting it pass silently.
pub(crate) struct Gate(Mutex<GateState>);

struct GateState {
    /// `Some` while the recovery is being read and sent.
    buffer: Option<Vec<Arc<Publication>>>,
    /// The bytes (see [`frame_cost`]) of `buffer`.
    buffered_bytes: usize,
    /// The most `buffer` holds; past it the buffer is dropped and `overflowed` set.
    buffer_limit: usize,
    /// The buffer overflowed during the read: the recovery is not recovered and the socket
    /// continues from `newest`.
    overflowed: bool,
    /// The newest position offered after the buffer overflowed.
    newest: Option<Position>,
    /// The last position delivered to the socket (or the position the socket was told to
    /// continue from).
    last: Option<Position>,
    /// The subscription was removed (unsubscribed, kicked, socket closed): send nothing more.
    removed: bool,
}

impl Gate {
    /// A closed gate buffering at most `buffer_limit` bytes of live publications.
    pub(crate) fn closed(buffer_limit: usize) -> Arc<Self> {
        Arc::new(Self(Mutex::new(GateState {
            buffer: Some(Vec::new()),
            buffered_bytes: 0,
            buffer_limit,
            overflowed: false,
            newest: None,
            last: None,
            removed: false,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A live publication for the gate's socket: buffered, dropped as already sent, or
    /// delivered. True when it was queued or buffered.
    pub(crate) fn offer(&self, socket: &Socket, publication: &Arc<Publication>) -> bool {
        let mut state = self.lock();
        if state.removed {
            return false;
        }
        let state = &mut *state;
        if let Some(buffer) = &mut state.buffer {
            if !state.overflowed {
                state.buffered_bytes += frame_cost(publication.frame.len());
                if state.buffered_bytes <= state.buffer_limit {
                    buffer.push(publication.clone());
                    return true;
                }
                buffer.clear();
                state.overflowed = true;
            }
            if let Some(position) = publication.position() {
                state.newest = Some(position.clone());
            }
            return false;
        }
        send_once(state, socket, publication)
    }

    /// The subscription was removed: a recovery still being read sends nothing.
    pub(crate) fn remove(&self) {
        self.lock().removed = true;
    }

    /// The last position sent to the socket.
    pub(crate) fn last(&self) -> Option<Position> {
        self.lock().last.clone()
    }
}

/// Tells `socket` that publications on `channel` before the one after `at` will not come:
/// `{"event":"#recoveryFailed","data":{"channel","offset","epoch"}}` (the Rust client reports
/// `NotRecovered` and continues from `at`). False when it could not be queued.
pub(crate) fn send_recovery_failed(socket: &Socket, channel: &str, at: Option<&Position>) -> bool {
    let mut failed = serde_json::json!({ "channel": channel });
    if let Some(at) = at {
        failed["offset"] = at.offset.into();
        failed["epoch"] = at.epoch.clone().into();
    }
    let event = serde_json::json!({"event": "#recoveryFailed", "data": failed});
    socket.push(event.to_string().into()).is_ok()
}

/// Sends `publication` unless it is at or below the last position delivered in its epoch. A
/// publication that does not follow the last one delivered (a jump in its epoch, or another
/// epoch: publications lost between the broker and this worker, or dropped from a full queue)
/// is preceded by `#recoveryFailed`; the last position advances only on delivery, so a dropped
/// frame is reported with the next one that gets through.
fn send_once(state: &mut GateState, socket: &Socket, publication: &Arc<Publication>) -> bool {
    let Some(position) = publication.position() else {
        return socket.deliver(publication).is_ok();
    };
    if let Some(last) = &state.last {
        if position.epoch == last.epoch && position.offset <= last.offset {
            return false;
        }
        if position.epoch != last.epoch || position.offset > last.offset + 1 {
            let before = Position {
                offset: position.offset.saturating_sub(1),
                epoch: position.epoch.clone(),
            };
            if !send_recovery_failed(socket, &publication.channel, Some(&before)) {
                return false;
            }
            state.last = Some(before);
        }
    }
    if socket.deliver(publication).is_err() {
        return false;
    }
    // Within an epoch only the offset moves: no copy of the epoch's text per delivery (this
    // runs for every subscriber of every publication on a channel with history).
    match &mut state.last {
        Some(last) if last.epoch == position.epoch => last.offset = position.offset,
        last => *last = Some(position.clone()),
    }
    true
}

/// What a subscribe on a channel with history read, to be sent after the ack.
pub(crate) struct Recovery {
    /// The channel's latest position when the history was read (`None`: the engine could not
    /// be asked).
    pub(crate) top: Option<Position>,
    /// `Some(true)`: the missed publications follow; `Some(false)`: they could not be told
    /// exactly, nothing follows; `None`: no recovery was asked.
    pub(crate) recovered: Option<bool>,
    pub(crate) missed: Vec<Arc<Publication>>,
    pub(crate) gate: Arc<Gate>,
    /// False when the socket was subscribed already: its gate is open and sending, `top` is
    /// what it last sent, and `finish` does nothing.
    pub(crate) fresh: bool,
}

impl Recovery {
    /// Settles what the ack says before it is sent: a gate whose buffer overflowed during the
    /// read cannot recover, and the socket continues from the newest publication it let by.
    pub(crate) fn settle(&mut self) {
        if !self.fresh {
            return;
        }
        let mut state = self.gate.lock();
        if !std::mem::take(&mut state.overflowed) {
            return;
        }
        state.buffer = Some(Vec::new());
        state.buffered_bytes = 0;
        self.missed.clear();
        if let Some(newest) = state.newest.take() {
            self.top = Some(newest);
        }
        if self.recovered.is_some() {
            self.recovered = Some(false);
        }
    }

    /// Sends the missed publications, then the live ones buffered meanwhile that come after
    /// them, and opens the gate. Call after the ack is queued.
    pub(crate) fn finish(self, socket: &Socket) {
        if !self.fresh {
            return;
        }
        let mut state = self.gate.lock();
        if state.removed {
            return;
        }
        // Replay from the first missed one; without any, continue from the top the ack gave.
        state.last = match self.missed.first().and_then(|p| p.position()) {
            Some(first) => Some(Position {
                offset: first.offset.saturating_sub(1),
                epoch: first.epoch.clone(),
            }),
            None => self.top.clone(),
        };
        for publication in &self.missed {
            send_once(&mut state, socket, publication);
        }
        let buffered = state.buffer.take().unwrap_or_default();
        state.buffered_bytes = 0;
        for publication in &buffered {
            send_once(&mut state, socket, publication);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::SlowConsumer;
    use crate::socket::testkit;

    fn at(offset: u64, epoch: &str) -> Position {
        Position {
            offset,
            epoch: epoch.into(),
        }
    }

    fn publication(offset: u64, epoch: &str) -> Arc<Publication> {
        let plain = Publication::new("c", Some(offset.into())).expect("encodes");
        Arc::new(plain.with_position(at(offset, epoch)).expect("positions"))
    }

    /// What the socket got: each publication's data, `x` for a `#recoveryFailed` (with where
    /// it says to continue from).
    fn sent(socket: &Socket) -> Vec<String> {
        socket
            .take_sent()
            .iter()
            .map(|frame| {
                let v: serde_json::Value = serde_json::from_str(frame).expect("json");
                match v["event"].as_str() {
                    Some("#recoveryFailed") => {
                        format!(
                            "x{}{}",
                            v["data"]["epoch"].as_str().unwrap_or("?"),
                            v["data"]["offset"]
                        )
                    }
                    _ => v["data"]["data"].to_string(),
                }
            })
            .collect()
    }

    fn recovery(gate: &Arc<Gate>, top: Position, missed: Vec<Arc<Publication>>) -> Recovery {
        Recovery {
            top: Some(top),
            recovered: Some(true),
            missed,
            gate: gate.clone(),
            fresh: true,
        }
    }

    #[test]
    fn buffered_at_or_below_the_top_are_dropped_and_those_above_follow_in_order() {
        let socket = testkit::socket(Config::default());
        let gate = Gate::closed(1 << 20);
        for n in [3, 4, 5, 6] {
            assert!(gate.offer(&socket, &publication(n, "e")));
        }
        assert!(sent(&socket).is_empty(), "buffered while closed");
        let missed = vec![publication(3, "e"), publication(4, "e")];
        recovery(&gate, at(4, "e"), missed).finish(&socket);
        assert_eq!(sent(&socket), ["3", "4", "5", "6"]);
        // Open: a live copy of one sent is dropped, the next goes through.
        assert!(!gate.offer(&socket, &publication(6, "e")));
        assert!(gate.offer(&socket, &publication(7, "e")));
        assert_eq!(sent(&socket), ["7"]);
    }

    #[test]
    fn a_jump_or_another_epoch_is_told_before_the_publication() {
        let socket = testkit::socket(Config::default());
        let gate = Gate::closed(1 << 20);
        recovery(&gate, at(2, "e"), Vec::new()).finish(&socket);
        gate.offer(&socket, &publication(3, "e"));
        gate.offer(&socket, &publication(6, "e"));
        gate.offer(&socket, &publication(1, "f"));
        gate.offer(&socket, &publication(2, "f"));
        assert_eq!(sent(&socket), ["3", "xe5", "6", "xf0", "1", "2"]);
    }

    #[test]
    fn a_dropped_frame_is_a_gap_told_with_the_next_one_that_fits() {
        let config = Config {
            outbound_queue_bytes: 350,
            slow_consumer: SlowConsumer::Drop,
            ..Config::default()
        };
        let socket = testkit::socket(config);
        let gate = Gate::closed(1 << 20);
        recovery(&gate, at(0, "e"), Vec::new()).finish(&socket);
        assert!(gate.offer(&socket, &publication(1, "e")));
        assert!(gate.offer(&socket, &publication(2, "e")));
        assert!(!gate.offer(&socket, &publication(3, "e")), "over the limit");
        assert_eq!(gate.last(), Some(at(2, "e")), "a dropped one is not sent");
        assert_eq!(sent(&socket), ["1", "2"]);
        assert!(gate.offer(&socket, &publication(4, "e")));
        assert_eq!(sent(&socket), ["xe3", "4"]);
    }

    #[test]
    fn a_removed_subscription_gets_nothing_from_its_recovery() {
        let socket = testkit::socket(Config::default());
        let gate = Gate::closed(1 << 20);
        gate.offer(&socket, &publication(2, "e"));
        gate.remove();
        recovery(&gate, at(1, "e"), vec![publication(1, "e")]).finish(&socket);
        assert!(sent(&socket).is_empty());
    }

    #[test]
    fn an_overflowing_buffer_is_not_recovered_and_goes_on_from_the_newest() {
        let socket = testkit::socket(Config::default());
        let gate = Gate::closed(250);
        for n in 3..=10 {
            gate.offer(&socket, &publication(n, "e"));
        }
        let mut r = recovery(&gate, at(2, "e"), vec![publication(2, "e")]);
        r.settle();
        assert_eq!(r.recovered, Some(false));
        assert_eq!(r.top, Some(at(10, "e")));
        assert!(r.missed.is_empty());
        gate.offer(&socket, &publication(11, "e"));
        r.finish(&socket);
        assert_eq!(sent(&socket), ["11"]);
    }
}
