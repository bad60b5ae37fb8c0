//! Channel history: what an engine keeps of a channel's publications so that a client that
//! resubscribes with the last position it saw gets what it missed (recovery), and handlers can
//! read a channel's recent messages (`Exchange::history`).
//!
//! A channel with history (declared with a [`HistoryPolicy`]) gives every publication a
//! [`Position`]: an `offset` that grows by one per publication, and an `epoch` that changes
//! whenever the engine lost the history (an in-process history after a restart, a broker
//! process that was replaced, a Redis stream that expired). A position is only comparable
//! within its epoch.
//!
//! On the wire a positioned publication is the usual `#publish` frame with two more fields,
//! which the official client ignores:
//! `{"event":"#publish","data":{"channel":"c","data":..,"offset":7,"epoch":"a1b2c3"}}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Publication;

/// How much history an engine keeps of one channel: at most `size` publications, each for at
/// most `ttl`. A channel with no activity for `ttl` loses its history (and its epoch) entirely,
/// so many channels cannot grow memory without bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HistoryPolicy {
    /// Most publications kept (at least 1).
    pub size: usize,
    /// How long each publication is kept.
    pub ttl: Duration,
}

impl HistoryPolicy {
    /// Keeps the last `size` publications for `ttl`.
    pub fn new(size: usize, ttl: Duration) -> Self {
        Self { size, ttl }
    }
}

/// Where a publication sits in its channel's history.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// 1 for the first publication of an epoch, then one more per publication.
    pub offset: u64,
    /// Changes whenever the history was lost; offsets of different epochs are unrelated.
    pub epoch: String,
}

/// What an engine answers when asked for a channel's history since a position.
#[derive(Debug)]
pub struct HistorySince {
    /// The channel's latest position (offset 0 when nothing was published in this epoch).
    pub top: Position,
    /// The kept publications after the position asked for, oldest first, each carrying its
    /// position; `None` when they cannot be told exactly (another epoch, or some of them are
    /// no longer kept): the caller must not use a partial answer.
    pub publications: Option<Vec<Arc<Publication>>>,
}

/// A channel position no epoch has: asking for history since it returns only the top.
pub(crate) fn top_only() -> Position {
    Position {
        offset: u64::MAX,
        epoch: String::new(),
    }
}

/// The in-memory history of every channel with history, for the in-process engine and for a
/// broker process (each keeps the channels it owns).
///
/// Each kept publication costs its `Arc<Publication>` (the `#publish` frame is shared with the
/// delivery that made it, so nothing is copied: the frame's bytes, the channel name, ~100 bytes
/// of bookkeeping) plus 40 bytes of queue slot and timestamp; each channel with history costs
/// ~150 bytes plus its name while it has any. A channel's publications are dropped when older
/// than the policy's `ttl` or beyond its `size`, and the whole channel (its offsets and epoch
/// with it) when its newest publication expired: a later publication starts a new epoch.
/// Channels nobody touches are swept at most once per [`SWEEP_EVERY`], on the next call.
///
/// Every store starts with a random epoch base (so a restarted process never reuses an
/// epoch), and each channel's history gets its own epoch from it when it (re)starts.
#[derive(Debug)]
pub struct HistoryStore {
    inner: std::sync::Mutex<Inner>,
    base: String,
}

/// How often a store walks all its channels to drop the expired ones.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Inner {
    channels: std::collections::HashMap<Arc<str>, Channel>,
    next_epoch: u64,
    next_sweep: Option<Instant>,
}

#[derive(Debug)]
struct Channel {
    epoch: String,
    top: u64,
    /// When the newest publication was kept (or the channel was first asked about).
    touched: Instant,
    ttl: Duration,
    entries: std::collections::VecDeque<(Instant, Arc<Publication>)>,
}

impl Default for HistoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl HistoryStore {
    /// An empty store with a fresh random epoch base.
    pub fn new() -> Self {
        Self {
            inner: Default::default(),
            base: format!("{:016x}", rand::random::<u64>()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `publication` as the channel's next position under `policy` and returns it
    /// positioned; `then` runs with it before the store's lock is released, so publications of
    /// one channel reach `then` (their delivery) in offset order.
    pub fn append_with<R>(
        &self,
        publication: &Publication,
        policy: HistoryPolicy,
        then: impl FnOnce(&Arc<Publication>) -> R,
    ) -> Result<(Position, R), super::BrokerError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.sweep(now);
        let channel = inner.channel(&self.base, &publication.channel, policy, now);
        let position = Position {
            offset: channel.top + 1,
            epoch: channel.epoch.clone(),
        };
        let positioned = Arc::new(publication.with_position(position.clone())?);
        channel.top += 1;
        channel.touched = now;
        channel.entries.push_back((now, positioned.clone()));
        while channel.entries.len() > policy.size.max(1) {
            channel.entries.pop_front();
        }
        let result = then(&positioned);
        Ok((position, result))
    }

    /// The channel's kept publications after `since` and its top (see [`HistorySince`]). A
    /// channel without history yet gets one (an epoch, offset 0), so that a client that saw
    /// nothing can recover from there.
    pub fn since(
        &self,
        channel: &str,
        since: Option<&Position>,
        policy: HistoryPolicy,
    ) -> HistorySince {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.sweep(now);
        let channel = inner.channel(&self.base, channel, policy, now);
        let top = Position {
            offset: channel.top,
            epoch: channel.epoch.clone(),
        };
        let first = channel.top + 1 - channel.entries.len() as u64;
        let publications = match since {
            None => Some(channel.entries.iter().map(|(_, p)| p.clone()).collect()),
            Some(s) if s.epoch != channel.epoch || s.offset > channel.top => None,
            // Everything after `s` must still be kept: the next one is `first` or later.
            Some(s) if s.offset + 1 < first => None,
            Some(s) => Some(
                channel
                    .entries
                    .iter()
                    .skip((s.offset + 1 - first) as usize)
                    .map(|(_, p)| p.clone())
                    .collect(),
            ),
        };
        HistorySince { top, publications }
    }

    /// How many channels have history now.
    pub fn channels(&self) -> usize {
        self.lock().channels.len()
    }
}

impl Inner {
    /// The channel's history with expired publications dropped, (re)started with a new epoch
    /// when it had none or its newest expired.
    fn channel(
        &mut self,
        base: &str,
        name: &str,
        policy: HistoryPolicy,
        now: Instant,
    ) -> &mut Channel {
        let expired = self
            .channels
            .get(name)
            .is_some_and(|c| now.duration_since(c.touched) >= policy.ttl);
        if expired {
            self.channels.remove(name);
        }
        let next_epoch = &mut self.next_epoch;
        let channel = self.channels.entry(name.into()).or_insert_with(|| {
            *next_epoch += 1;
            Channel {
                epoch: format!("{base}-{next_epoch}"),
                top: 0,
                touched: now,
                ttl: policy.ttl,
                entries: Default::default(),
            }
        });
        channel.ttl = policy.ttl;
        while channel
            .entries
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= policy.ttl)
        {
            channel.entries.pop_front();
        }
        channel
    }

    fn sweep(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|at| now < at) {
            return;
        }
        self.next_sweep = Some(now + SWEEP_EVERY);
        self.channels
            .retain(|_, c| now.duration_since(c.touched) < c.ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn publish(store: &HistoryStore, channel: &str, n: u64, policy: HistoryPolicy) -> Position {
        let publication = Publication::new(channel, Some(json!(n))).expect("encodes");
        store
            .append_with(&publication, policy, |_| ())
            .expect("appends")
            .0
    }

    fn numbers(answer: &HistorySince) -> Option<Vec<u64>> {
        let kept = answer.publications.as_ref()?;
        Some(
            kept.iter()
                .map(|p| p.data().and_then(|d| d.as_u64()).unwrap_or(0))
                .collect(),
        )
    }

    const POLICY: HistoryPolicy = HistoryPolicy {
        size: 3,
        ttl: Duration::from_secs(60),
    };

    #[test]
    fn keeps_order_and_the_size_cap_and_refuses_too_old_positions() {
        let store = HistoryStore::new();
        let first = publish(&store, "c", 1, POLICY);
        assert_eq!(first.offset, 1);
        for n in 2..=5 {
            let position = publish(&store, "c", n, POLICY);
            assert_eq!((position.offset, &position.epoch), (n, &first.epoch));
        }
        let all = store.since("c", None, POLICY);
        assert_eq!(numbers(&all), Some(vec![3, 4, 5]));
        assert_eq!(
            all.top,
            Position {
                offset: 5,
                epoch: first.epoch.clone()
            }
        );
        let at = |offset| Position {
            offset,
            epoch: first.epoch.clone(),
        };
        assert_eq!(
            numbers(&store.since("c", Some(&at(2)), POLICY)),
            Some(vec![3, 4, 5])
        );
        assert_eq!(
            numbers(&store.since("c", Some(&at(4)), POLICY)),
            Some(vec![5])
        );
        assert_eq!(
            numbers(&store.since("c", Some(&at(5)), POLICY)),
            Some(vec![])
        );
        // 2 was dropped by the cap: recovering from 1 would be partial.
        assert_eq!(numbers(&store.since("c", Some(&at(1)), POLICY)), None);
        // From the future, or another epoch: nothing.
        assert_eq!(numbers(&store.since("c", Some(&at(6)), POLICY)), None);
        let other = Position {
            offset: 4,
            epoch: "x".into(),
        };
        assert_eq!(numbers(&store.since("c", Some(&other), POLICY)), None);
        // Each kept publication is the positioned frame delivered.
        let kept = store
            .since("c", Some(&at(4)), POLICY)
            .publications
            .expect("kept");
        assert_eq!(kept[0].position(), Some(&at(5)));
        assert!(kept[0].frame.as_str().contains("\"offset\":5"));
    }

    #[test]
    fn expiry_drops_old_entries_then_the_channel_with_its_epoch() {
        // Margins of 300 ms each way: a busy machine that stalls this thread for less than
        // that does not change the outcome (the store reads the real clock).
        let policy = HistoryPolicy::new(10, Duration::from_millis(600));
        let store = HistoryStore::new();
        let first = publish(&store, "c", 1, policy);
        std::thread::sleep(Duration::from_millis(350));
        publish(&store, "c", 2, policy);
        std::thread::sleep(Duration::from_millis(300));
        // 1 expired, 2 is still kept: from 0 is partial, from 1 is whole.
        let at = |offset| Position {
            offset,
            epoch: first.epoch.clone(),
        };
        assert_eq!(numbers(&store.since("c", Some(&at(0)), policy)), None);
        assert_eq!(
            numbers(&store.since("c", Some(&at(1)), policy)),
            Some(vec![2])
        );
        std::thread::sleep(Duration::from_millis(700));
        // The newest expired: the channel is gone, a new epoch starts at 1.
        assert_eq!(numbers(&store.since("c", Some(&at(2)), policy)), None);
        let again = publish(&store, "c", 3, policy);
        assert_eq!(again.offset, 1);
        assert_ne!(again.epoch, first.epoch);
    }

    #[test]
    fn idle_channels_are_swept_and_stores_have_their_own_epochs() {
        let policy = HistoryPolicy::new(10, Duration::from_millis(50));
        let store = HistoryStore::new();
        for i in 0..100 {
            publish(&store, &format!("c{i}"), 1, policy);
        }
        assert_eq!(store.channels(), 100);
        std::thread::sleep(SWEEP_EVERY + Duration::from_millis(50));
        publish(&store, "other", 1, policy);
        assert_eq!(store.channels(), 1);
        let restarted = HistoryStore::new();
        assert_ne!(
            publish(&store, "c", 1, POLICY).epoch,
            publish(&restarted, "c", 1, POLICY).epoch
        );
    }
}
