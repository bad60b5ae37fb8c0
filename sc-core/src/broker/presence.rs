//! Presence at the engine: who is subscribed to a channel, one [`PresenceEntry`] per subscribed
//! socket, cluster-wide. Workers tell the engine about joins and leaves (only on subscribe,
//! unsubscribe and close, never per message) and ask it for a channel's entries; the engine also
//! carries the `#presence` join/leave events between workers.
//!
//! [`PresenceStore`] is the in-process store the in-process engine and each broker process keep:
//! entries by channel, each tagged with the worker connection that added it, so that a broker
//! whose link to a worker drops (the worker was SIGKILLed) removes all of that worker's entries
//! at once ([`PresenceStore::remove_owner`]).

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One subscribed socket on a channel with presence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresenceEntry {
    /// The socket's id.
    pub socket: String,
    /// The socket's user: its auth token's user claim (`presence_user_claim`, default `sub`) as
    /// text; `None` for a guest or a token without that claim.
    pub user: Option<String>,
    /// What the app attached with `Socket::set_presence_info`, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
}

/// How many sockets, and how many distinct users, are on a channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceStats {
    /// Subscribed sockets (guests included).
    pub sockets: usize,
    /// Distinct users among them (guests not counted).
    pub users: usize,
}

impl PresenceStats {
    /// The stats of a channel's entries.
    pub fn of(entries: &[PresenceEntry]) -> Self {
        let users: HashSet<&str> = entries.iter().filter_map(|e| e.user.as_deref()).collect();
        Self {
            sockets: entries.len(),
            users: users.len(),
        }
    }
}

/// Which worker link added an entry (0 in a single process).
pub(crate) type Owner = u64;

/// One channel's entries by socket id, and whether its subscribers get join/leave events (so a
/// broker knows whether to announce the leaves of a worker that died).
#[derive(Default)]
struct Members {
    join_leave: bool,
    entries: HashMap<String, (Owner, PresenceEntry)>,
}

/// Entries by channel, then by socket id. A channel's map is dropped with its last entry, so the
/// store holds only channels somebody is on.
#[derive(Default)]
pub(crate) struct PresenceStore {
    channels: Mutex<HashMap<String, Members>>,
}

/// What [`PresenceStore::remove_owner`] removed from one channel.
#[derive(Debug, PartialEq)]
pub(crate) struct Removed {
    pub(crate) channel: String,
    pub(crate) join_leave: bool,
    pub(crate) entries: Vec<PresenceEntry>,
}

impl PresenceStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Members>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or replaces the entry of `entry.socket` on `channel`.
    pub(crate) fn join(&self, channel: &str, owner: Owner, entry: PresenceEntry, join_leave: bool) {
        let mut channels = self.lock();
        let members = channels.entry(channel.to_owned()).or_default();
        members.join_leave = join_leave;
        members.entries.insert(entry.socket.clone(), (owner, entry));
    }

    /// Removes `socket` from `channel`; the entry it had, if any.
    pub(crate) fn leave(&self, channel: &str, socket: &str) -> Option<PresenceEntry> {
        let mut channels = self.lock();
        let members = channels.get_mut(channel)?;
        let (_, entry) = members.entries.remove(socket)?;
        if members.entries.is_empty() {
            channels.remove(channel);
        }
        Some(entry)
    }

    /// The channel's entries (in no particular order).
    pub(crate) fn entries(&self, channel: &str) -> Vec<PresenceEntry> {
        self.lock()
            .get(channel)
            .map(|members| members.entries.values().map(|(_, e)| e.clone()).collect())
            .unwrap_or_default()
    }

    /// Removes every entry `owner` added; what was removed, by channel.
    pub(crate) fn remove_owner(&self, owner: Owner) -> Vec<Removed> {
        let mut removed = Vec::new();
        self.lock().retain(|channel, members| {
            let mut gone = Vec::new();
            members.entries.retain(|_, (o, entry)| {
                let keep = *o != owner;
                if !keep {
                    gone.push(entry.clone());
                }
                keep
            });
            if !gone.is_empty() {
                removed.push(Removed {
                    channel: channel.clone(),
                    join_leave: members.join_leave,
                    entries: gone,
                });
            }
            !members.entries.is_empty()
        });
        removed
    }

    /// Runs one worker's request (see [`PresenceOp`]) for `owner`: the answer, and the event to
    /// send to the channel's subscribing workers, if any.
    pub(crate) fn apply(&self, owner: Owner, op: PresenceOp) -> (Value, Option<(String, String)>) {
        match op {
            PresenceOp::Join {
                channel,
                entry,
                join_leave,
            } => {
                self.join(&channel, owner, entry, join_leave);
                (Value::Null, None)
            }
            PresenceOp::Leave { channel, socket } => {
                let left = self.leave(&channel, &socket);
                (serde_json::to_value(left).unwrap_or(Value::Null), None)
            }
            PresenceOp::Query { channel } => {
                let entries = self.entries(&channel);
                (serde_json::to_value(entries).unwrap_or(Value::Null), None)
            }
            PresenceOp::Event { channel, frame } => (Value::Null, Some((channel, frame))),
        }
    }
}

/// A worker's presence request to the broker that owns the channel (the broker protocol's
/// `PresenceRequest`, as JSON), answered with `null` (join, event), the entry removed or `null`
/// (leave), or the channel's entries (query).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum PresenceOp {
    /// Adds or replaces an entry.
    Join {
        /// The channel.
        channel: String,
        /// The entry.
        entry: PresenceEntry,
        /// Whether the channel's subscribers get join/leave events.
        #[serde(rename = "joinLeave")]
        join_leave: bool,
    },
    /// Removes a socket's entry.
    Leave {
        /// The channel.
        channel: String,
        /// The socket id.
        socket: String,
    },
    /// Every entry of the channel.
    Query {
        /// The channel.
        channel: String,
    },
    /// Sends an encoded `#presence` event to every worker subscribed to the channel.
    Event {
        /// The channel.
        channel: String,
        /// The event frame.
        frame: String,
    },
}

/// Most entries in one list of the leave event a broker sends for a worker that died (the
/// broker does not know the workers' `presence_max_entries`).
pub(crate) const DEAD_WORKER_EVENT_MAX: usize = 1000;

/// `{"event":"#presence","data":{"channel":..,"joins":[..],"leaves":[..]}}` (with `"cut":true`
/// when either list was cut at `max` entries): what a subscriber of a channel with join/leave
/// events receives, a transmit the official client hands to `socket.receiver('#presence')`.
pub fn encode_event(
    channel: &str,
    joins: &[PresenceEntry],
    leaves: &[PresenceEntry],
    max: usize,
) -> Result<String, serde_json::Error> {
    #[derive(Serialize)]
    struct Data<'a> {
        channel: &'a str,
        joins: &'a [PresenceEntry],
        leaves: &'a [PresenceEntry],
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        cut: bool,
    }
    #[derive(Serialize)]
    struct Event<'a> {
        event: &'static str,
        data: Data<'a>,
    }
    let cut = joins.len() > max || leaves.len() > max;
    serde_json::to_string(&Event {
        event: "#presence",
        data: Data {
            channel,
            joins: &joins[..joins.len().min(max)],
            leaves: &leaves[..leaves.len().min(max)],
            cut,
        },
    })
}

/// `{"event":"#presence","data":{"channel":..,"joins":[],"leaves":[],"cut":true}}`: the
/// subscribers' member list may have missed joins or leaves (the engine was unreachable, or
/// entries were written again after an outage); clients ask `#presence` again on `cut`.
pub fn encode_resync(channel: &str) -> Result<String, serde_json::Error> {
    serde_json::to_string(&serde_json::json!({
        "event": "#presence",
        "data": {"channel": channel, "joins": [], "leaves": [], "cut": true},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(socket: &str, user: Option<&str>) -> PresenceEntry {
        PresenceEntry {
            socket: socket.into(),
            user: user.map(Into::into),
            info: None,
        }
    }

    #[test]
    fn a_store_keeps_entries_per_channel_and_forgets_an_owner_at_once() {
        let store = PresenceStore::default();
        store.join("room", 1, entry("a", Some("ann")), true);
        store.join("room", 1, entry("b", Some("ann")), true);
        store.join("room", 2, entry("c", None), true);
        store.join("hall", 1, entry("a", Some("ann")), false);
        assert_eq!(
            PresenceStats::of(&store.entries("room")),
            PresenceStats {
                sockets: 3,
                users: 1
            }
        );
        assert_eq!(store.leave("room", "b"), Some(entry("b", Some("ann"))));
        assert_eq!(store.leave("room", "b"), None);
        let mut removed = store.remove_owner(1);
        removed.sort_by(|a, b| a.channel.cmp(&b.channel));
        assert_eq!(
            removed,
            vec![
                Removed {
                    channel: "hall".to_owned(),
                    join_leave: false,
                    entries: vec![entry("a", Some("ann"))]
                },
                Removed {
                    channel: "room".to_owned(),
                    join_leave: true,
                    entries: vec![entry("a", Some("ann"))]
                },
            ]
        );
        assert_eq!(store.entries("room"), vec![entry("c", None)]);
        assert!(store.entries("hall").is_empty());
        assert!(
            store.lock().get("hall").is_none(),
            "an empty channel is dropped"
        );
    }

    #[test]
    fn an_event_is_cut_at_max_and_says_so() {
        let joins: Vec<_> = (0..3).map(|i| entry(&i.to_string(), None)).collect();
        let event: Value =
            serde_json::from_str(&encode_event("c", &joins, &[], 2).expect("encodes"))
                .expect("json");
        assert_eq!(event["event"], "#presence");
        assert_eq!(event["data"]["channel"], "c");
        assert_eq!(event["data"]["joins"].as_array().map(Vec::len), Some(2));
        assert_eq!(event["data"]["leaves"], serde_json::json!([]));
        assert_eq!(event["data"]["cut"], true);
        let whole: Value =
            serde_json::from_str(&encode_event("c", &joins, &[], 3).expect("encodes"))
                .expect("json");
        assert!(whole["data"].get("cut").is_none());
    }
}
