//! The in-memory history of every channel with history, for the in-process engine and for a
//! broker process (each keeps the channels it owns), bounded over all channels by
//! [`HistoryLimits`].
//!
//! Locking: channels are spread over [`SHARDS`] maps by name; a shard's lock is held only to
//! find or create a channel. Each channel has its own lock, held while a publication is
//! positioned, kept and handed to its delivery, so one channel's publications are delivered in
//! offset order while other channels go on in parallel. Eviction and the expiry sweep take a
//! channel's lock only with `try_lock`: a channel being published to right now is not idle.
//!
//! Tombstones: a channel whose history went (its newest publication expired, or it was dropped
//! for `max_bytes`) keeps its epoch and top for [`HistoryLimits::tombstone_ttl`]. A client at
//! the top still recovers (nothing missed), one behind it is not recovered, and the next
//! publication continues the same epoch at top + 1, so live subscribers see no gap. A channel
//! first read before anything was published on it gets a tombstone too (an epoch at offset 0).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;

use super::{HistoryLimits, HistoryPolicy, HistorySince, Position};
use crate::broker::{BrokerError, Publication};

/// How often a store walks all its channels to expire publications and tombstones.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How many maps the channels are spread over (each with its own lock).
const SHARDS: usize = 64;

/// Counted per kept publication besides its frame's bytes: the queue slot (the frame handle and
/// its timestamp) and the frame's shared-buffer header.
pub const ENTRY_OVERHEAD: usize = std::mem::size_of::<Kept>() + 32;

/// Counted per channel with history besides its name and epoch: the map slot, the channel's
/// state and lock, their reference-count headers and the queue.
pub const CHANNEL_OVERHEAD: usize =
    std::mem::size_of::<(Arc<str>, Entry)>() + std::mem::size_of::<Slot>() + 64;

/// Counted per tombstone besides its name and epoch: the map slot and the name's header.
pub const TOMBSTONE_OVERHEAD: usize = std::mem::size_of::<(Arc<str>, Entry)>() + 32;

/// The in-memory history of many channels (see the module header).
///
/// What counts against [`HistoryLimits::max_bytes`]: per kept publication its positioned
/// `#publish` frame (the bytes delivered to sockets, shared with them, not copied) plus
/// [`ENTRY_OVERHEAD`]; per channel its name, its epoch and [`CHANNEL_OVERHEAD`]. Kept
/// publications hold only their frame: a read builds each [`Publication`] anew, whose data is
/// parsed from the frame if asked for.
///
/// Every store starts with a random epoch base (so a restarted process never reuses an
/// epoch), and each channel gets its own epoch from it when its history starts.
pub struct HistoryStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: std::collections::hash_map::RandomState,
    limits: HistoryLimits,
    live_bytes: AtomicUsize,
    dead_bytes: AtomicUsize,
    /// What `last_used` and `next_sweep` count from.
    started: Instant,
    next_epoch: AtomicU64,
    base: String,
    /// When the next sweep is due, in ms since `started` (an atomic: every call checks it).
    next_sweep: AtomicU64,
    /// Held by the one caller evicting (others go on: the store is briefly over its bound).
    evicting: Mutex<()>,
}

/// What a store holds now, as counted against its [`HistoryLimits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryUsage {
    /// Channels with history (not tombstones).
    pub channels: usize,
    /// Their bytes, as counted against `max_bytes`.
    pub bytes: usize,
    /// Tombstones.
    pub tombstones: usize,
    /// Their bytes, as counted against `tombstone_bytes`.
    pub tombstone_bytes: usize,
}

/// Some of the channels, by name.
type Shard = HashMap<Arc<str>, Entry>;

enum Entry {
    Live(Arc<Slot>),
    Dead(Tombstone),
}

struct Slot {
    channel: Mutex<Channel>,
    /// When this channel was last published to, in ns since the store started (its place in
    /// the eviction order).
    last_used: AtomicU64,
}

struct Channel {
    name: Arc<str>,
    epoch: String,
    top: u64,
    /// When the newest publication was kept.
    touched: Instant,
    ttl: Duration,
    /// Offsets `top + 1 - entries.len() ..= top`.
    entries: VecDeque<Kept>,
    /// What this channel counts against `max_bytes`.
    bytes: usize,
    /// Now a tombstone (evicted or expired): whoever holds this slot must look the channel up
    /// again.
    gone: bool,
}

struct Kept {
    at: Instant,
    frame: Utf8Bytes,
}

struct Tombstone {
    epoch: String,
    top: u64,
    /// Created or last read; dropped `tombstone_ttl` after.
    since: Instant,
}

impl Default for HistoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for HistoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryStore")
            .field("limits", &self.limits)
            .field("usage", &self.usage())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The lock if nobody holds it now.
fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

fn entry_cost(frame: &Utf8Bytes) -> usize {
    frame.len() + ENTRY_OVERHEAD
}

fn tombstone_cost(name: &str, epoch: &str) -> usize {
    name.len() + epoch.len() + TOMBSTONE_OVERHEAD
}

/// The answer for a channel at `epoch`/`top` keeping `kept` (the last offsets up to `top`).
fn answer<'a>(
    name: &Arc<str>,
    epoch: &str,
    top: u64,
    kept: impl ExactSizeIterator<Item = &'a Kept>,
    since: Option<&Position>,
) -> HistorySince {
    let first = top + 1 - kept.len() as u64;
    let skip = match since {
        None => Some(0),
        Some(s) if s.epoch != epoch || s.offset > top => None,
        // Everything after `s` must still be kept: the next one is `first` or later.
        Some(s) if s.offset + 1 < first => None,
        Some(s) => Some((s.offset + 1 - first) as usize),
    };
    let publications = skip.map(|skip| {
        kept.enumerate()
            .skip(skip)
            .map(|(i, k)| {
                let position = Position {
                    offset: first + i as u64,
                    epoch: epoch.to_owned(),
                };
                Arc::new(Publication::from_positioned_frame(
                    name.clone(),
                    k.frame.clone(),
                    position,
                ))
            })
            .collect()
    });
    HistorySince {
        top: Position {
            offset: top,
            epoch: epoch.to_owned(),
        },
        publications,
    }
}

impl HistoryStore {
    /// An empty store with the default [`HistoryLimits`] and a fresh random epoch base.
    pub fn new() -> Self {
        Self::with_limits(HistoryLimits::default())
    }

    /// An empty store bounded by `limits`.
    pub fn with_limits(limits: HistoryLimits) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
            limits,
            live_bytes: AtomicUsize::new(0),
            dead_bytes: AtomicUsize::new(0),
            started: Instant::now(),
            next_epoch: AtomicU64::new(0),
            base: format!("{:016x}", rand::random::<u64>()),
            next_sweep: AtomicU64::new(0),
            evicting: Mutex::new(()),
        }
    }

    fn shard_of(&self, name: &str) -> usize {
        (self.hasher.hash_one(name) % SHARDS as u64) as usize
    }

    fn new_epoch(&self) -> String {
        let n = self.next_epoch.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}-{n}", self.base)
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.started).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Keeps `publication` as the channel's next position under `policy` and returns it
    /// positioned; `then` runs with it before the channel's lock is released, so publications
    /// of one channel reach `then` (their delivery) in offset order. A publication the caller
    /// no longer shares gives its parsed data to the positioned one; a shared one's is parsed
    /// again from the frame if asked for.
    pub fn append_with<R>(
        &self,
        publication: Arc<Publication>,
        policy: HistoryPolicy,
        then: impl FnOnce(&Arc<Publication>) -> R,
    ) -> Result<(Position, R), BrokerError> {
        let now = Instant::now();
        self.sweep(now);
        let (position, result) = loop {
            let slot = self.live_slot(&publication.channel, policy, now);
            let mut channel = lock(&slot.channel);
            if channel.gone {
                // Evicted since the lookup: its tombstone continues the same position.
                continue;
            }
            let position = Position {
                offset: channel.top + 1,
                epoch: channel.epoch.clone(),
            };
            let positioned = Arc::new(Publication::into_position(publication, position.clone())?);
            let before = channel.bytes;
            channel.top += 1;
            channel.touched = now;
            channel.ttl = policy.ttl;
            channel.bytes += entry_cost(&positioned.frame);
            channel.entries.push_back(Kept {
                at: now,
                frame: positioned.frame.clone(),
            });
            while channel.entries.len() > policy.size.max(1) {
                if let Some(old) = channel.entries.pop_front() {
                    channel.bytes -= entry_cost(&old.frame);
                }
            }
            channel.trim(now);
            self.account(before, channel.bytes);
            slot.last_used.store(self.nanos(now), Ordering::Relaxed);
            break (position, then(&positioned));
        };
        if self.live_bytes.load(Ordering::Relaxed) > self.limits.max_bytes {
            self.evict_channels(now);
        }
        Ok((position, result))
    }

    /// The channel's kept publications after `since` and its top (see [`HistorySince`]). A
    /// channel never seen gets an epoch (a tombstone at offset 0), so that a client that saw
    /// nothing can recover from there.
    pub fn since(
        &self,
        channel: &str,
        since: Option<&Position>,
        policy: HistoryPolicy,
    ) -> HistorySince {
        let now = Instant::now();
        self.sweep(now);
        loop {
            let slot = {
                let mut shard = lock(&self.shards[self.shard_of(channel)]);
                match shard.get_mut(channel) {
                    Some(Entry::Live(slot)) => slot.clone(),
                    Some(Entry::Dead(dead)) => {
                        dead.since = now;
                        let name: Arc<str> = channel.into();
                        return answer(&name, &dead.epoch, dead.top, [].iter(), since);
                    }
                    None => {
                        let name: Arc<str> = channel.into();
                        let epoch = self.new_epoch();
                        let answer = answer(&name, &epoch, 0, [].iter(), since);
                        let cost = tombstone_cost(&name, &epoch);
                        shard.insert(
                            name,
                            Entry::Dead(Tombstone {
                                epoch,
                                top: 0,
                                since: now,
                            }),
                        );
                        drop(shard);
                        self.add_dead(cost);
                        return answer;
                    }
                }
            };
            let mut state = lock(&slot.channel);
            if state.gone {
                continue;
            }
            let before = state.bytes;
            state.ttl = policy.ttl;
            state.trim(now);
            self.account(before, state.bytes);
            return answer(
                &state.name,
                &state.epoch,
                state.top,
                state.entries.iter(),
                since,
            );
        }
    }

    /// What the store holds now.
    pub fn usage(&self) -> HistoryUsage {
        let (mut channels, mut tombstones) = (0, 0);
        for shard in self.shards.iter() {
            for entry in lock(shard).values() {
                match entry {
                    Entry::Live(_) => channels += 1,
                    Entry::Dead(_) => tombstones += 1,
                }
            }
        }
        HistoryUsage {
            channels,
            bytes: self.live_bytes.load(Ordering::Relaxed),
            tombstones,
            tombstone_bytes: self.dead_bytes.load(Ordering::Relaxed),
        }
    }

    /// How many channels have history now (tombstones not counted).
    pub fn channels(&self) -> usize {
        self.usage().channels
    }

    /// The channel's slot, created (from its tombstone, or with a new epoch) if it has none.
    fn live_slot(&self, name: &Arc<str>, policy: HistoryPolicy, now: Instant) -> Arc<Slot> {
        let mut shard = lock(&self.shards[self.shard_of(name)]);
        let (epoch, top) = match shard.get(&**name) {
            Some(Entry::Live(slot)) => return slot.clone(),
            // Replaced below: its position continues.
            Some(Entry::Dead(dead)) => {
                self.dead_bytes
                    .fetch_sub(tombstone_cost(name, &dead.epoch), Ordering::Relaxed);
                (dead.epoch.clone(), dead.top)
            }
            None => (self.new_epoch(), 0),
        };
        let bytes = name.len() + epoch.len() + CHANNEL_OVERHEAD;
        self.live_bytes.fetch_add(bytes, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            channel: Mutex::new(Channel {
                name: name.clone(),
                epoch,
                top,
                touched: now,
                ttl: policy.ttl,
                entries: VecDeque::new(),
                bytes,
                gone: false,
            }),
            last_used: AtomicU64::new(self.nanos(now)),
        });
        shard.insert(name.clone(), Entry::Live(slot.clone()));
        slot
    }

    /// Moves the live count from a channel's `before` bytes to its `after`.
    fn account(&self, before: usize, after: usize) {
        if after >= before {
            self.live_bytes.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.live_bytes.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    fn add_dead(&self, cost: usize) {
        let total = self.dead_bytes.fetch_add(cost, Ordering::Relaxed) + cost;
        if total > self.limits.tombstone_bytes {
            self.evict_tombstones();
        }
    }

    /// Turns a channel (whose lock the caller holds, under its shard's lock) into a tombstone.
    fn bury(&self, channel: &mut Channel, now: Instant) -> Entry {
        channel.gone = true;
        channel.entries = VecDeque::new();
        self.live_bytes.fetch_sub(channel.bytes, Ordering::Relaxed);
        channel.bytes = 0;
        let epoch = std::mem::take(&mut channel.epoch);
        let cost = tombstone_cost(&channel.name, &epoch);
        self.dead_bytes.fetch_add(cost, Ordering::Relaxed);
        Entry::Dead(Tombstone {
            epoch,
            top: channel.top,
            since: now,
        })
    }

    /// Drops whole channels, least recently published first, until the store holds at most
    /// 7/8 of `max_bytes` (so that a store at its bound does not walk every channel on each
    /// publication). A channel published to since the walk began, or right now, is skipped.
    fn evict_channels(&self, now: Instant) {
        let Some(_only) = try_lock(&self.evicting) else {
            return;
        };
        let target = self.limits.max_bytes / 8 * 7;
        while self.live_bytes.load(Ordering::Relaxed) > target {
            let mut oldest: Vec<(u64, usize, Arc<str>)> = Vec::new();
            for (i, shard) in self.shards.iter().enumerate() {
                for (name, entry) in lock(shard).iter() {
                    if let Entry::Live(slot) = entry {
                        oldest.push((slot.last_used.load(Ordering::Relaxed), i, name.clone()));
                    }
                }
            }
            oldest.sort_unstable_by_key(|(used, ..)| *used);
            let mut evicted = false;
            for (used, i, name) in oldest {
                if self.live_bytes.load(Ordering::Relaxed) <= target {
                    break;
                }
                let mut shard = lock(&self.shards[i]);
                let Some(Entry::Live(slot)) = shard.get(&name) else {
                    continue;
                };
                if slot.last_used.load(Ordering::Relaxed) != used {
                    continue;
                }
                let slot = slot.clone();
                let Some(mut channel) = try_lock(&slot.channel) else {
                    continue;
                };
                let dead = self.bury(&mut channel, now);
                shard.insert(name, dead);
                evicted = true;
            }
            if !evicted {
                break;
            }
        }
        drop(_only);
        if self.dead_bytes.load(Ordering::Relaxed) > self.limits.tombstone_bytes {
            self.evict_tombstones();
        }
    }

    /// Drops the oldest tombstones until they hold at most 7/8 of `tombstone_bytes`: their
    /// channels start new epochs (a client that saw them is "not recovered").
    fn evict_tombstones(&self) {
        let Some(_only) = try_lock(&self.evicting) else {
            return;
        };
        let target = self.limits.tombstone_bytes / 8 * 7;
        let mut oldest: Vec<(Instant, usize, Arc<str>)> = Vec::new();
        for (i, shard) in self.shards.iter().enumerate() {
            for (name, entry) in lock(shard).iter() {
                if let Entry::Dead(dead) = entry {
                    oldest.push((dead.since, i, name.clone()));
                }
            }
        }
        oldest.sort_unstable_by_key(|(since, ..)| *since);
        for (since, i, name) in oldest {
            if self.dead_bytes.load(Ordering::Relaxed) <= target {
                break;
            }
            let mut shard = lock(&self.shards[i]);
            if let Some(Entry::Dead(dead)) = shard.get(&name) {
                if dead.since == since {
                    let cost = tombstone_cost(&name, &dead.epoch);
                    shard.remove(&name);
                    self.dead_bytes.fetch_sub(cost, Ordering::Relaxed);
                }
            }
        }
    }

    /// At most once per [`SWEEP_EVERY`]: drops expired publications, turns channels whose
    /// newest expired into tombstones, and drops tombstones older than `tombstone_ttl`.
    fn sweep(&self, now: Instant) {
        let ms = |at: Instant| u64::try_from(at.duration_since(self.started).as_millis());
        let (Ok(due), Ok(next)) = (ms(now), ms(now + SWEEP_EVERY)) else {
            return;
        };
        let at = self.next_sweep.load(Ordering::Relaxed);
        // One caller sweeps: the one that moves the due time on.
        if due < at
            || self
                .next_sweep
                .compare_exchange(at, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let tombstone_ttl = self.limits.tombstone_ttl;
        for shard in self.shards.iter() {
            lock(shard).retain(|name, entry| match entry {
                Entry::Live(slot) => {
                    let slot = slot.clone();
                    let Some(mut channel) = try_lock(&slot.channel) else {
                        return true;
                    };
                    if now.duration_since(channel.touched) < channel.ttl {
                        let before = channel.bytes;
                        channel.trim(now);
                        self.account(before, channel.bytes);
                        return true;
                    }
                    *entry = self.bury(&mut channel, now);
                    true
                }
                Entry::Dead(dead) => {
                    if now.duration_since(dead.since) < tombstone_ttl {
                        return true;
                    }
                    let cost = tombstone_cost(name, &dead.epoch);
                    self.dead_bytes.fetch_sub(cost, Ordering::Relaxed);
                    false
                }
            });
        }
        if self.dead_bytes.load(Ordering::Relaxed) > self.limits.tombstone_bytes {
            self.evict_tombstones();
        }
    }
}

impl Channel {
    /// Drops the publications older than the channel's ttl (a channel whose newest expired
    /// keeps its position, as its tombstone will).
    fn trim(&mut self, now: Instant) {
        while let Some(old) = self.entries.front() {
            if now.duration_since(old.at) < self.ttl {
                break;
            }
            self.bytes -= entry_cost(&old.frame);
            self.entries.pop_front();
        }
    }
}

#[cfg(test)]
mod tests;
