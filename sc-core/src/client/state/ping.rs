//! The ping clock: when the server last pinged and how long it may stay silent (`connectTimeout`
//! until the handshake reply, then the reply's `pingTimeout`). The connection task runs the
//! watchdog timer itself; here is the official client's other use of the clock, the stale-socket
//! check on every send. Owns [`PingClock`].

use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::codec::ProtocolVersion;
use super::{Phase, State};

/// Close reason the official client uses when it replaces a stale connection.
pub(crate) const STALE_REASON: &str =
    "Stale socket was disconnected by the client to initiate a new connection";

pub(super) struct PingClock {
    /// The watchdog option (`pingTimeoutDisabled: false`); without it nothing is ever stale.
    enabled: bool,
    timeout: Duration,
    last_ping: Instant,
}

impl PingClock {
    pub(super) fn new(enabled: bool, timeout: Duration) -> Self {
        Self {
            enabled,
            timeout,
            last_ping: Instant::now(),
        }
    }

    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Restarts the clock with `timeout`.
    pub(super) fn arm(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.last_ping = Instant::now();
    }

    /// No timeout until the next [`PingClock::arm`].
    pub(super) fn disarm(&mut self) {
        self.timeout = Duration::ZERO;
    }

    fn is_stale(&self) -> bool {
        self.enabled && self.last_ping.elapsed() >= self.timeout
    }
}

/// The answer to `text` if it is the server's ping in `version` (`#1` -> `#2` in v1, `""` ->
/// `""` in v2); any other text is for the protocol, not the ping.
pub(crate) fn pong_for(version: ProtocolVersion, text: &str) -> Option<&'static str> {
    (text == version.ping()).then(|| version.pong())
}

/// The ping timeout a handshake reply's status object sets.
pub(super) fn handshake_ping_timeout(
    status: Option<&Map<String, Value>>,
    current: Duration,
) -> Duration {
    match status {
        // A missing or invalid pingTimeout makes the official client's watchdog fire at
        // once (setTimeout with undefined).
        Some(s) => s
            .get("pingTimeout")
            .and_then(Value::as_f64)
            .filter(|ms| ms.is_finite() && *ms > 0.0)
            .map(|ms| Duration::from_millis(ms.min(u32::MAX as f64) as u64))
            .unwrap_or(Duration::ZERO),
        None => current,
    }
}

impl State {
    /// A ping arrived on `attempt`.
    pub(crate) fn pinged(&mut self, attempt: u64) {
        if attempt == self.attempt {
            self.ping.last_ping = Instant::now();
        }
    }

    /// The official client's stale-socket check on every send: an open connection whose last
    /// ping is older than the ping timeout is destroyed (close 1000, [`STALE_REASON`]). Returns
    /// the attempt the connection task must then replace.
    pub(super) fn drop_if_stale(&mut self) -> Option<u64> {
        if self.phase != Phase::Open || !self.ping.is_stale() {
            return None;
        }
        let target = self.attempt;
        self.destroy(target, 1000, STALE_REASON, false);
        Some(target)
    }
}
