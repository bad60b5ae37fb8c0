//! The cluster-wide key-value store (SocketCluster v14's `exchange.set/get/...`): flat string
//! keys, JSON values, optional expiry per key.
//!
//! Server code uses it through [`Exchange`](crate::Exchange) (`set`, `get`, `remove`, `add`,
//! `expire`, `unexpire`, `has_key`, `count`), which sends one [`KvOp`] to the broker engine:
//! the in-process [`LocalBroker`](super::LocalBroker) keeps a [`KvStore`] itself; with broker
//! processes each key lives in the store of the broker that owns it
//! ([`broker_index`](super::cluster::broker_index)), so every worker sees the same value. The
//! data of a broker process is lost when it exits (as in the reference).
//!
//! Every operation is atomic: the store applies one operation at a time.
//!
//! Expiry is exact from the reader's point of view: each operation first drops the keys whose
//! time has come (cheap: deadlines are kept in time order), and a periodic sweep reclaims the
//! memory of expired keys nobody touches again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One key-value operation. Serialisable as is (it crosses the broker wire as JSON:
/// `{"op":"set","key":"k","value":1}`, `{"op":"count"}`, ...).
///
/// The result of each operation, as a JSON value:
///
/// | operation | result |
/// |---|---|
/// | `Set` | `null`; replaces the value and clears any expiry of the key |
/// | `Get` | the value, or `null` if the key does not exist |
/// | `Remove` | the old value, or `null` if the key did not exist |
/// | `Add` | the **index** of the appended element (the new length minus one); see [`KvOp::Add`] |
/// | `Expire` | how many of the keys exist (each of them now expires after `ms`) |
/// | `Unexpire` | how many of the keys exist (none of them expires any more) |
/// | `HasKey` | `true` or `false` |
/// | `Count` | the number of keys (not counting expired ones) |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum KvOp {
    /// Stores `value` at `key`.
    Set {
        /// The key.
        key: String,
        /// The new value.
        value: Value,
    },
    /// Reads `key`.
    Get {
        /// The key.
        key: String,
    },
    /// Deletes `key`, answering its old value.
    Remove {
        /// The key.
        key: String,
    },
    /// Appends `value` to the list at `key`: an absent key becomes `[value]`; a key holding a
    /// non-list value `x` becomes `[x, value]` (as the reference's store did). An existing
    /// expiry is kept.
    Add {
        /// The key.
        key: String,
        /// The element to append.
        value: Value,
    },
    /// Makes each existing key of `keys` expire `ms` milliseconds from now (`0`: at once).
    Expire {
        /// The keys (missing ones are ignored).
        keys: Vec<String>,
        /// Time to live in milliseconds.
        ms: u64,
    },
    /// Removes the expiry of each existing key of `keys`.
    Unexpire {
        /// The keys (missing ones are ignored).
        keys: Vec<String>,
    },
    /// Whether `key` exists.
    HasKey {
        /// The key.
        key: String,
    },
    /// The number of keys.
    Count,
}

impl KvOp {
    /// The key of a single-key operation (`None` for `Expire`, `Unexpire` and `Count`).
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Set { key, .. }
            | Self::Get { key }
            | Self::Remove { key }
            | Self::Add { key, .. }
            | Self::HasKey { key } => Some(key),
            Self::Expire { .. } | Self::Unexpire { .. } | Self::Count => None,
        }
    }
}

struct Entry {
    value: Value,
    /// The entry's key in `Inner::deadlines`, if it expires.
    deadline: Option<(Instant, u64)>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Expiring keys in deadline order (the `u64` makes equal instants distinct).
    deadlines: BTreeMap<(Instant, u64), String>,
    seq: u64,
}

impl Inner {
    /// Drops every key whose deadline is at or before `now`; returns how many.
    fn purge(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some(entry) = self.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.entries.remove(&key);
            n += 1;
        }
        n
    }

    fn set_deadline(&mut self, key: &str, deadline: Option<Instant>) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if let Some(old) = entry.deadline.take() {
            self.deadlines.remove(&old);
        }
        if let Some(at) = deadline {
            self.seq += 1;
            let slot = (at, self.seq);
            entry.deadline = Some(slot);
            self.deadlines.insert(slot, key.to_owned());
        }
    }

    fn remove(&mut self, key: &str) -> Option<Value> {
        let entry = self.entries.remove(key)?;
        if let Some(slot) = entry.deadline {
            self.deadlines.remove(&slot);
        }
        Some(entry.value)
    }
}

/// An in-memory key-value store with per-key expiry. Shared by reference; every method takes
/// `&self` and is atomic.
#[derive(Default)]
pub struct KvStore {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("keys", &self.lock().entries.len())
            .finish()
    }
}

impl KvStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one operation and returns its result (see [`KvOp`]).
    pub fn apply(&self, op: KvOp) -> Value {
        self.apply_at(op, Instant::now())
    }

    /// Drops every expired key now; returns how many were dropped.
    pub fn sweep(&self) -> usize {
        self.lock().purge(Instant::now())
    }

    fn apply_at(&self, op: KvOp, now: Instant) -> Value {
        let mut inner = self.lock();
        inner.purge(now);
        match op {
            KvOp::Set { key, value } => {
                inner.remove(&key);
                inner.entries.insert(
                    key,
                    Entry {
                        value,
                        deadline: None,
                    },
                );
                Value::Null
            }
            KvOp::Get { key } => inner
                .entries
                .get(&key)
                .map_or(Value::Null, |e| e.value.clone()),
            KvOp::Remove { key } => inner.remove(&key).unwrap_or(Value::Null),
            KvOp::Add { key, value } => {
                let index = match inner.entries.get_mut(&key) {
                    None => {
                        inner.entries.insert(
                            key,
                            Entry {
                                value: Value::Array(vec![value]),
                                deadline: None,
                            },
                        );
                        0
                    }
                    Some(entry) => match &mut entry.value {
                        Value::Array(list) => {
                            list.push(value);
                            list.len() - 1
                        }
                        other => {
                            let old = other.take();
                            *other = Value::Array(vec![old, value]);
                            1
                        }
                    },
                };
                Value::from(index)
            }
            KvOp::Expire { keys, ms } => {
                // A deadline past what `Instant` can hold means "never".
                let at = now.checked_add(Duration::from_millis(ms));
                let mut n = 0u64;
                for key in keys {
                    if inner.entries.contains_key(&key) {
                        inner.set_deadline(&key, at);
                        n += 1;
                    }
                }
                // `ms == 0`: gone now, not at the next operation.
                inner.purge(now);
                Value::from(n)
            }
            KvOp::Unexpire { keys } => {
                let mut n = 0u64;
                for key in keys {
                    if inner.entries.contains_key(&key) {
                        inner.set_deadline(&key, None);
                        n += 1;
                    }
                }
                Value::from(n)
            }
            KvOp::HasKey { key } => Value::Bool(inner.entries.contains_key(&key)),
            KvOp::Count => Value::from(inner.entries.len()),
        }
    }
}

/// Sweeps `store` every `every` until the store is dropped.
pub(crate) async fn sweep_every(store: Weak<KvStore>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(store) = store.upgrade() else {
            return;
        };
        let dropped = store.sweep();
        if dropped > 0 {
            tracing::trace!(dropped, "expired keys swept");
        }
    }
}

/// Spawns [`sweep_every`] for `store` (the task ends when the store is dropped).
pub(crate) fn spawn_sweeper(store: &Arc<KvStore>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(sweep_every(Arc::downgrade(store), every))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(key: &str, value: Value) -> KvOp {
        KvOp::Set {
            key: key.into(),
            value,
        }
    }
    fn get(key: &str) -> KvOp {
        KvOp::Get { key: key.into() }
    }
    fn has(key: &str) -> KvOp {
        KvOp::HasKey { key: key.into() }
    }
    fn add(key: &str, value: Value) -> KvOp {
        KvOp::Add {
            key: key.into(),
            value,
        }
    }
    fn expire(keys: &[&str], ms: u64) -> KvOp {
        KvOp::Expire {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            ms,
        }
    }

    #[test]
    fn set_get_remove_has_key_count() {
        let kv = KvStore::new();
        assert_eq!(kv.apply(get("a")), Value::Null);
        assert_eq!(kv.apply(set("a", json!({"x": 1}))), Value::Null);
        assert_eq!(kv.apply(set("b", json!("two"))), Value::Null);
        assert_eq!(kv.apply(get("a")), json!({"x": 1}));
        assert_eq!(kv.apply(has("a")), json!(true));
        assert_eq!(kv.apply(KvOp::Count), json!(2));
        assert_eq!(kv.apply(KvOp::Remove { key: "a".into() }), json!({"x": 1}));
        assert_eq!(kv.apply(KvOp::Remove { key: "a".into() }), Value::Null);
        assert_eq!(kv.apply(has("a")), json!(false));
        assert_eq!(kv.apply(KvOp::Count), json!(1));
        // A stored null is a key like any other.
        kv.apply(set("n", Value::Null));
        assert_eq!(kv.apply(has("n")), json!(true));
    }

    #[test]
    fn add_appends_creates_and_wraps_answering_the_index() {
        let kv = KvStore::new();
        assert_eq!(kv.apply(add("l", json!(1))), json!(0));
        assert_eq!(kv.apply(add("l", json!(2))), json!(1));
        assert_eq!(kv.apply(add("l", json!(3))), json!(2));
        assert_eq!(kv.apply(get("l")), json!([1, 2, 3]));
        kv.apply(set("s", json!("x")));
        assert_eq!(kv.apply(add("s", json!("y"))), json!(1));
        assert_eq!(kv.apply(get("s")), json!(["x", "y"]));
    }

    #[test]
    fn keys_expire_lazily_and_count_ignores_them() {
        let kv = KvStore::new();
        let t0 = Instant::now();
        kv.apply_at(set("a", json!(1)), t0);
        kv.apply_at(set("b", json!(2)), t0);
        assert_eq!(kv.apply_at(expire(&["a", "missing"], 100), t0), json!(1));
        let later = t0 + Duration::from_millis(99);
        assert_eq!(kv.apply_at(get("a"), later), json!(1));
        let after = t0 + Duration::from_millis(100);
        assert_eq!(kv.apply_at(get("a"), after), Value::Null);
        assert_eq!(kv.apply_at(KvOp::Count, after), json!(1));
        assert!(kv.lock().deadlines.is_empty());
    }

    #[test]
    fn expire_zero_removes_at_once_and_huge_ttls_never_expire() {
        let kv = KvStore::new();
        let t0 = Instant::now();
        kv.apply_at(set("a", json!(1)), t0);
        kv.apply_at(set("b", json!(1)), t0);
        assert_eq!(kv.apply_at(expire(&["a"], 0), t0), json!(1));
        assert_eq!(kv.apply_at(has("a"), t0), json!(false));
        assert_eq!(kv.apply_at(expire(&["b"], u64::MAX), t0), json!(1));
        assert_eq!(
            kv.apply_at(has("b"), t0 + Duration::from_secs(86400 * 365)),
            json!(true)
        );
    }

    #[test]
    fn unexpire_and_set_clear_the_expiry_add_keeps_it() {
        let kv = KvStore::new();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(50);
        for key in ["u", "s", "l"] {
            kv.apply_at(add(key, json!(0)), t0);
        }
        kv.apply_at(expire(&["u", "s", "l"], 50), t0);
        assert_eq!(
            kv.apply_at(
                KvOp::Unexpire {
                    keys: vec!["u".into(), "nope".into()]
                },
                t0
            ),
            json!(1)
        );
        kv.apply_at(set("s", json!("fresh")), t0);
        kv.apply_at(add("l", json!(1)), t0);
        assert_eq!(kv.apply_at(has("u"), t1), json!(true));
        assert_eq!(kv.apply_at(get("s"), t1), json!("fresh"));
        assert_eq!(kv.apply_at(has("l"), t1), json!(false));
        // Expire again: the newest deadline wins.
        kv.apply_at(expire(&["u"], 10), t1);
        kv.apply_at(expire(&["u"], 1000), t1);
        assert_eq!(
            kv.apply_at(has("u"), t1 + Duration::from_millis(20)),
            json!(true)
        );
    }

    #[test]
    fn sweep_reclaims_expired_keys_nobody_reads() {
        let kv = KvStore::new();
        let t0 = Instant::now();
        for i in 0..100 {
            kv.apply_at(set(&format!("k{i}"), json!(i)), t0);
        }
        let keys: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
        kv.apply_at(KvOp::Expire { keys, ms: 0 }, t0);
        assert_eq!(kv.lock().entries.len(), 40);
        let keys: Vec<String> = (60..70).map(|i| format!("k{i}")).collect();
        kv.apply_at(KvOp::Expire { keys, ms: 1 }, t0);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(kv.sweep(), 10);
        let inner = kv.lock();
        assert_eq!((inner.entries.len(), inner.deadlines.len()), (30, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweeper_runs_until_the_store_is_dropped() {
        let kv = Arc::new(KvStore::new());
        kv.apply(set("a", json!(1)));
        kv.apply(expire(&["a"], 1));
        let task = tokio::spawn(sweep_every(Arc::downgrade(&kv), Duration::from_millis(10)));
        // Paused time only advances while every task is idle; real time must pass for `Instant`.
        std::thread::sleep(Duration::from_millis(2));
        tokio::time::sleep(Duration::from_millis(25)).await;
        assert_eq!(kv.lock().entries.len(), 0);
        drop(kv);
        tokio::time::sleep(Duration::from_millis(25)).await;
        assert!(task.is_finished());
    }

    #[test]
    fn ops_have_a_stable_json_shape() {
        let cases = [
            (
                set("k", json!([1])),
                json!({"op": "set", "key": "k", "value": [1]}),
            ),
            (KvOp::Count, json!({"op": "count"})),
            (has("k"), json!({"op": "hasKey", "key": "k"})),
            (
                expire(&["a", "b"], 5),
                json!({"op": "expire", "keys": ["a", "b"], "ms": 5}),
            ),
        ];
        for (op, shape) in cases {
            assert_eq!(serde_json::to_value(&op).expect("serialises"), shape);
            let back: KvOp = serde_json::from_value(shape).expect("deserialises");
            assert_eq!(back, op);
        }
        assert!(serde_json::from_value::<KvOp>(json!({"op": "nope"})).is_err());
        assert_eq!(set("k", json!(1)).key(), Some("k"));
        assert_eq!(KvOp::Count.key(), None);
    }
}
