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
use crate::socket::Socket;

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
/// recovery is sent, then drops those it already sent.
#[derive(Default)]
pub(crate) struct Gate(Mutex<GateState>);

#[derive(Default)]
struct GateState {
    /// `Some` while the recovery is being read and sent.
    buffer: Option<Vec<Arc<Publication>>>,
    /// The last position sent to the socket.
    last: Option<Position>,
}

impl Gate {
    pub(crate) fn closed() -> Arc<Self> {
        Arc::new(Self(Mutex::new(GateState {
            buffer: Some(Vec::new()),
            last: None,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A live publication for the gate's socket: buffered, dropped as already sent, or
    /// delivered. True when it was queued or buffered.
    pub(crate) fn offer(&self, socket: &Socket, publication: &Arc<Publication>) -> bool {
        let mut state = self.lock();
        if let Some(buffer) = &mut state.buffer {
            buffer.push(publication.clone());
            return true;
        }
        send_once(&mut state, socket, publication)
    }
}

/// Sends `publication` unless it is at or below the last position sent in its epoch.
fn send_once(state: &mut GateState, socket: &Socket, publication: &Arc<Publication>) -> bool {
    if let (Some(position), Some(last)) = (publication.position(), &state.last) {
        if position.epoch == last.epoch && position.offset <= last.offset {
            return false;
        }
    }
    if let Some(position) = publication.position() {
        state.last = Some(position.clone());
    }
    socket.deliver(publication).is_ok()
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
}

impl Recovery {
    /// Sends the missed publications, then the live ones buffered meanwhile that come after
    /// them, and opens the gate. Call after the ack is queued.
    pub(crate) fn finish(self, socket: &Socket) {
        let mut state = self.gate.lock();
        state.last = self.top.clone();
        // The top itself was counted as seen: replay from the first missed one.
        if let Some(first) = self.missed.first().and_then(|p| p.position()) {
            state.last = Some(Position {
                offset: first.offset.saturating_sub(1),
                epoch: first.epoch.clone(),
            });
        }
        for publication in &self.missed {
            send_once(&mut state, socket, publication);
        }
        if self.top.is_some() {
            state.last = self.top;
        }
        let buffered = state.buffer.take().unwrap_or_default();
        for publication in &buffered {
            send_once(&mut state, socket, publication);
        }
    }
}
