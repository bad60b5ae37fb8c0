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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testkit::{options, status, Rig};
    use super::super::Poke;
    use super::*;
    use crate::client::ClientEvent;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// An open client whose handshake set a ping timeout of 1 s.
    fn open_with_1s_ping_timeout(ping_watchdog: bool) -> Rig {
        let mut opts = options();
        opts.ping_watchdog = ping_watchdog;
        let mut rig = Rig::connecting(opts);
        rig.reply_handshake(status("s", 1000));
        rig.sent();
        rig.events();
        rig
    }

    #[test]
    fn only_the_configured_versions_ping_is_answered() {
        assert_eq!(pong_for(ProtocolVersion::V2, ""), Some(""));
        assert_eq!(pong_for(ProtocolVersion::V2, "#1"), None);
        assert_eq!(pong_for(ProtocolVersion::V1, "#1"), Some("#2"));
        assert_eq!(pong_for(ProtocolVersion::V1, ""), None);
        for version in [ProtocolVersion::V1, ProtocolVersion::V2] {
            assert_eq!(pong_for(version, "#2"), None);
            assert_eq!(pong_for(version, " "), None);
            assert_eq!(pong_for(version, r##"{"event":"#1"}"##), None);
        }
    }

    #[test]
    fn the_handshake_sets_the_ping_timeout_or_zero_when_unusable() {
        let current = ms(20_000);
        let timeout =
            |status: serde_json::Value| handshake_ping_timeout(status.as_object(), current);
        assert_eq!(timeout(json!({"pingTimeout": 30000})), ms(30_000));
        assert_eq!(timeout(json!({"pingTimeout": 1.5})), ms(1));
        assert_eq!(
            timeout(json!({"pingTimeout": 1e300})),
            ms(u64::from(u32::MAX))
        );
        for unusable in [
            json!({}),
            json!({"pingTimeout": "30000"}),
            json!({"pingTimeout": -5}),
            json!({"pingTimeout": 0}),
        ] {
            assert_eq!(timeout(unusable), Duration::ZERO);
        }
        // No status object at all: the connect timeout stays.
        assert_eq!(handshake_ping_timeout(None, current), current);
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_on_a_socket_silent_for_the_ping_timeout_replaces_it() {
        let mut rig = open_with_1s_ping_timeout(true);
        tokio::time::advance(ms(999)).await;
        assert_eq!(rig.transmit("a", None), Poke::None);
        rig.st.pinged(rig.attempt);
        tokio::time::advance(ms(999)).await;
        assert_eq!(rig.transmit("b", None), Poke::None);
        assert_eq!(rig.sent(), [r#"{"event":"a"}"#, r#"{"event":"b"}"#]);

        tokio::time::advance(ms(1)).await;
        let stale = rig.attempt;
        assert_eq!(rig.transmit("c", None), Poke::Restart { target: stale });
        assert!(rig.sent().is_empty(), "not on the stale socket");
        assert_eq!(
            rig.events(),
            [ClientEvent::Disconnect {
                code: 1000,
                reason: STALE_REASON.to_owned()
            }]
        );
        // It waits in the buffer for the replacement connection.
        rig.reconnect();
        rig.reply_handshake(status("s2", 1000));
        assert_eq!(rig.sent()[1..], [r#"{"event":"c"}"#]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_the_watchdog_nothing_is_stale() {
        let mut rig = open_with_1s_ping_timeout(false);
        tokio::time::advance(ms(60_000)).await;
        assert_eq!(rig.transmit("a", None), Poke::None);
        assert_eq!(rig.sent(), [r#"{"event":"a"}"#]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ping_of_an_old_connection_does_not_refresh_the_clock() {
        let mut rig = open_with_1s_ping_timeout(true);
        let old = rig.attempt;
        rig.close(4000);
        rig.reconnect();
        rig.reply_handshake(status("s2", 1000));
        rig.sent();
        tokio::time::advance(ms(600)).await;
        rig.st.pinged(old);
        tokio::time::advance(ms(400)).await;
        assert_eq!(
            rig.transmit("a", None),
            Poke::Restart {
                target: rig.attempt
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_stale_before_the_reply_and_no_ping_timeout_means_stale_at_once() {
        let mut rig = Rig::connecting(options());
        // Still waiting for the handshake reply: calls are buffered, never stale.
        tokio::time::advance(ms(60_000)).await;
        assert_eq!(rig.transmit("a", None), Poke::None);
        // A zero ping timeout (none in the reply) makes the next send replace the socket.
        rig.reply_handshake(json!({"id": "s"}));
        rig.sent();
        assert_eq!(
            rig.transmit("b", None),
            Poke::Restart {
                target: rig.attempt
            }
        );
    }
}
