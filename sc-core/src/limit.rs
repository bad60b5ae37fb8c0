//! Rate limits: token buckets per socket (every inbound packet, and raw messages) and per socket
//! and event. They live in the socket's reader task, so checking one costs no lock.
//!
//! What a client sees is the limit's [`LimitAction`]: `Reject` answers each refused invoke with
//! `RateLimitError` (a refused transmit is dropped); `Disconnect` closes the socket with
//! [`close::RATE_LIMITED`](crate::protocol::close::RATE_LIMITED) (4429), after which the client
//! reconnects with its backoff.

use std::time::Instant;

/// What happens to a message over the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitAction {
    /// Refuse that message: an invoke gets a `RateLimitError` reply, a transmit is dropped.
    Reject,
    /// Close the socket with 4429.
    Disconnect,
}

/// A token bucket: `per_second` messages on average, bursts of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Sustained rate, messages per second.
    pub per_second: f64,
    /// Largest burst (the bucket's size), in messages.
    pub burst: f64,
    /// What a message over the limit gets.
    pub action: LimitAction,
}

impl RateLimit {
    /// `n` messages per second, bursts of `n`, over-limit messages rejected.
    pub fn per_second(n: f64) -> Self {
        Self {
            per_second: n,
            burst: n.max(1.0),
            action: LimitAction::Reject,
        }
    }

    /// Sets the burst size.
    pub fn burst(mut self, burst: f64) -> Self {
        self.burst = burst.max(1.0);
        self
    }

    /// Sets the action.
    pub fn action(mut self, action: LimitAction) -> Self {
        self.action = action;
        self
    }

    /// The error a rejected invoke receives.
    pub(crate) fn error(&self, what: &str) -> crate::protocol::ScError {
        crate::protocol::ScError::new(
            "RateLimitError",
            format!(
                "Too many messages{what}: the limit is {} per second (bursts of {})",
                self.per_second, self.burst
            ),
        )
    }
}

/// What happens when a socket's outbound queue is full: the client reads slower than the server
/// sends to it (see [`Config::outbound_queue_bytes`](crate::Config::outbound_queue_bytes)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SlowConsumer {
    /// Close the socket with [`close::SLOW_CONSUMER`](crate::protocol::close::SLOW_CONSUMER)
    /// (4100); the official client reconnects and resubscribes. Counted in
    /// `sc_slow_consumer_disconnects_total`.
    #[default]
    Disconnect,
    /// Keep the socket and drop each message that does not fit (publications, replies and events
    /// alike: a dropped reply makes the client's call time out). Counted in
    /// `sc_outbound_dropped_total`.
    Drop,
}

impl std::str::FromStr for SlowConsumer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "disconnect" => Ok(Self::Disconnect),
            "drop" => Ok(Self::Drop),
            other => Err(format!("{other:?} is not disconnect or drop")),
        }
    }
}

/// The state of one bucket.
#[derive(Debug)]
pub(crate) struct Bucket {
    pub(crate) limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            tokens: limit.burst,
            last: now,
        }
    }

    /// Takes one token; false when the bucket is empty.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.limit.per_second).min(self.limit.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(RateLimit::per_second(10.0).burst(3.0), t0);
        assert!((0..3).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        // 100 ms later one token is back, not more.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.take(t1));
        assert!(!b.take(t1));
        // A long pause refills to the burst only.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.take(t2)).count(), 3);
    }
}
