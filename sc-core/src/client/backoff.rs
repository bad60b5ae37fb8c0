//! Reconnect backoff, as the official client computes it (`_tryReconnect`): which closes
//! reconnect, after how long.

use std::time::Duration;

use super::ClientOptions;

/// Exponential reconnect backoff with jitter (`autoReconnectOptions` of the official client).
///
/// The delay before reconnect attempt `n` (0-based, reset by every successful handshake) is
/// `min(max_delay, round(round(initial_delay + randomness * r) * multiplier^n))` with `r` uniform
/// in `[0, 1)`, all in milliseconds. Defaults are the official client's: 10 s + up to 10 s,
/// x1.5, at most 60 s.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// Base delay of the first attempt (official `initialDelay`, default 10 s).
    pub initial_delay: Duration,
    /// Upper bound of the random part added to `initial_delay` (official `randomness`, default
    /// 10 s).
    pub randomness: Duration,
    /// Growth factor per attempt (official `multiplier`, default 1.5).
    pub multiplier: f64,
    /// Cap on any delay (official `maxDelay`, default 60 s).
    pub max_delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(10_000),
            randomness: Duration::from_millis(10_000),
            multiplier: 1.5,
            max_delay: Duration::from_millis(60_000),
        }
    }
}

impl Backoff {
    /// The delay before the 0-based `attempt`, with `random` the jitter draw in `[0, 1)`
    /// (values outside are clamped). Pure: the formula's unit tests use it directly.
    pub fn delay_with(&self, attempt: u32, random: f64) -> Duration {
        let random = if random.is_finite() {
            random.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let initial = (self.initial_delay.as_millis() as f64
            + self.randomness.as_millis() as f64 * random)
            .round();
        let multiplier = if self.multiplier.is_finite() {
            self.multiplier
        } else {
            1.0
        };
        let exponent = i32::try_from(attempt).unwrap_or(i32::MAX);
        let delay = (initial * multiplier.powi(exponent)).round();
        let max = self.max_delay.as_millis() as f64;
        let ms = if delay.is_nan() {
            max
        } else {
            delay.min(max).max(0.0)
        };
        Duration::from_millis(ms as u64)
    }

    /// The delay before the 0-based `attempt`, with a fresh random jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, rand::random::<f64>())
    }
}

/// The reconnect policy of the official client (`_destroy` + `_tryReconnect`): `None` = stay
/// closed. `attempts` is the backoff exponent counter, reset by a successful handshake.
pub(crate) fn reconnect_delay(
    opts: &ClientOptions,
    code: u16,
    attempts: &mut u32,
) -> Option<Duration> {
    if !opts.auto_reconnect {
        return None;
    }
    let immediate = matches!(code, 4000 | 4001 | 1005);
    if !immediate && (code == 1000 || code >= 4500) {
        return None;
    }
    let exponent = *attempts;
    *attempts = attempts.saturating_add(1);
    if immediate && exponent == 0 {
        Some(Duration::ZERO)
    } else {
        Some(opts.backoff.delay(exponent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn follows_the_official_formula() {
        let b = Backoff::default();
        // round(10000 + 10000*0.25) = 12500; * 1.5^0
        assert_eq!(b.delay_with(0, 0.25), ms(12_500));
        // 12500 * 1.5 = 18750
        assert_eq!(b.delay_with(1, 0.25), ms(18_750));
        // 12500 * 2.25 = 28125
        assert_eq!(b.delay_with(2, 0.25), ms(28_125));
        // 12500 * 3.375 = 42187.5 -> 42188 (JS Math.round rounds .5 up)
        assert_eq!(b.delay_with(3, 0.25), ms(42_188));
        // 12500 * 5.0625 = 63281.25 -> capped at 60000
        assert_eq!(b.delay_with(4, 0.25), ms(60_000));
        assert_eq!(b.delay_with(40, 0.99), ms(60_000));
    }

    #[test]
    fn inner_rounding_happens_before_the_multiplier() {
        let b = Backoff {
            initial_delay: ms(100),
            randomness: ms(1),
            multiplier: 3.0,
            max_delay: ms(10_000),
        };
        // round(100 + 0.6) = 101, *3 = 303 (not round(100.6*3) = 302)
        assert_eq!(b.delay_with(1, 0.6), ms(303));
    }

    #[test]
    fn random_jitter_stays_in_range() {
        let b = Backoff {
            initial_delay: ms(300),
            randomness: ms(100),
            multiplier: 1.5,
            max_delay: ms(60_000),
        };
        for _ in 0..200 {
            let d = b.delay(0);
            assert!(d >= ms(300) && d <= ms(400), "{d:?}");
            let d = b.delay(2);
            assert!(d >= ms(675) && d <= ms(900), "{d:?}");
        }
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let b = Backoff {
            initial_delay: ms(0),
            randomness: ms(0),
            multiplier: f64::NAN,
            max_delay: ms(5),
        };
        assert_eq!(b.delay_with(u32::MAX, f64::NAN), ms(0));
        let b = Backoff {
            multiplier: f64::INFINITY,
            ..Backoff::default()
        };
        assert_eq!(b.delay_with(3, 0.5), ms(10_000 + 5_000)); // non-finite multiplier -> 1
    }

    fn opts() -> ClientOptions {
        let mut o = ClientOptions::new("ws://127.0.0.1:1/socketcluster/");
        o.backoff = Backoff {
            initial_delay: Duration::from_millis(100),
            randomness: Duration::ZERO,
            multiplier: 2.0,
            max_delay: Duration::from_millis(1000),
        };
        o
    }

    #[test]
    fn reconnect_policy_matches_the_official_client() {
        let o = opts();
        let mut n = 0;
        // Ping/pong timeouts and a missing status reconnect at once on the first attempt...
        assert_eq!(reconnect_delay(&o, 4000, &mut n), Some(Duration::ZERO));
        // ...and back off on later ones.
        assert_eq!(
            reconnect_delay(&o, 4001, &mut n),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            reconnect_delay(&o, 1006, &mut n),
            Some(Duration::from_millis(400))
        );
        assert_eq!(
            reconnect_delay(&o, 4123, &mut n),
            Some(Duration::from_millis(800))
        );
        assert_eq!(
            reconnect_delay(&o, 1001, &mut n),
            Some(Duration::from_millis(1000))
        );
        assert_eq!(n, 5);
        let mut n = 0;
        assert_eq!(
            reconnect_delay(&o, 4123, &mut n),
            Some(Duration::from_millis(100))
        );
        let mut n = 0;
        assert_eq!(reconnect_delay(&o, 1005, &mut n), Some(Duration::ZERO));
        let mut n = 0;
        assert_eq!(reconnect_delay(&o, 4001, &mut n), Some(Duration::ZERO));
        // Never after 1000 or >= 4500; the counter is untouched.
        let mut n = 3;
        assert_eq!(reconnect_delay(&o, 1000, &mut n), None);
        assert_eq!(reconnect_delay(&o, 4500, &mut n), None);
        assert_eq!(reconnect_delay(&o, 4999, &mut n), None);
        assert_eq!(n, 3);
        let mut o = opts();
        o.auto_reconnect = false;
        assert_eq!(reconnect_delay(&o, 4000, &mut n), None);
    }
}
