//! Channel history: what an engine keeps of a channel's publications so that a client that
//! resubscribes with the last position it saw gets what it missed (recovery), and handlers can
//! read a channel's recent messages (the exchange, in the pub/sub layer above).
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
use std::time::Duration;

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
