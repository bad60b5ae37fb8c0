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

mod store;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Publication;

pub use store::{
    HistoryStore, HistoryUsage, CHANNEL_OVERHEAD, ENTRY_OVERHEAD, SWEEP_EVERY, TOMBSTONE_OVERHEAD,
};

/// How much history an engine keeps of one channel: at most `size` publications, each for at
/// most `ttl`. A channel with no publication for `ttl` keeps only its position (epoch and top,
/// for [`HistoryLimits::tombstone_ttl`]), so a client that saw everything still recovers; the
/// total over all channels is bounded by [`HistoryLimits`].
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

/// Bounds over every channel of one in-memory history (the in-process engine's, a broker
/// process's): clients choose channel names, so without them memory would be channels x size x
/// payload. Redis bounds each channel by `MAXLEN` and expiry, and the total by its `maxmemory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most bytes of kept publications and channel bookkeeping ([`HistoryStore`] says what
    /// counts). Past it whole channels are dropped, least recently published first, down to
    /// 7/8 of it; each leaves a tombstone.
    pub max_bytes: usize,
    /// Most bytes of tombstones (each [`TOMBSTONE_OVERHEAD`] plus its channel's name and
    /// epoch); past it the oldest go, down to 7/8 of it.
    pub tombstone_bytes: usize,
    /// How long a channel whose history went (expired or dropped for `max_bytes`) keeps its
    /// position (epoch and top), so that a client at the top still recovers and the next
    /// publication continues the same epoch. Reading the channel's history renews it.
    pub tombstone_ttl: Duration,
}

impl Default for HistoryLimits {
    /// 64 MiB of history, 8 MiB of tombstones kept for a day.
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            tombstone_bytes: 8 * 1024 * 1024,
            tombstone_ttl: Duration::from_secs(24 * 3600),
        }
    }
}
