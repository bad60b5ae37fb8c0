//! Presence on Redis, shared by every node, with the entries of a node that dies gone within a
//! bound.
//!
//! - Keys (on the channel's instance): the hash `prefix#p:C` holds one field per subscribed
//!   socket, its value the node id (16 hex digits), `1` or `0` (whether the channel has
//!   join/leave events) and the entry as JSON. Each node keeps `prefix#pn:NODE` alive on every
//!   instance with a [`NODE_TTL`] expiry that it renews every [`REFRESH`], on a timer of its own
//!   per instance (so a slow sweep or rewrite never lets a live node's key expire); the set
//!   `prefix#pc:NODE` lists the channels the node has entries on there, and `prefix#pnodes` the
//!   nodes with such a set. (`SET .. GET` needs Redis 6.2 or newer.)
//! - A query (one Lua script) returns the entries of live nodes and deletes those of nodes whose
//!   key expired; so a dead node's entries stop counting within [`NODE_TTL`]. Every [`REFRESH`]
//!   one node per instance (whichever takes a short lock) claims the channel sets of the nodes
//!   whose key expired (moving each to `prefix#pcx:NODE`, listed in `prefix#pclaimed`), runs
//!   the same script over just those channels and publishes the leaves of the dead entries on
//!   channels with join/leave events: its work follows the dead nodes' channels, not every
//!   channel with presence. A channel leaves its claimed set only once swept and announced,
//!   so a failed or interrupted sweep is finished by a later round.
//! - Each node also remembers its own entries: when its key may have expired on an instance
//!   (a renewal found it gone, or none was answered for [`NODE_TTL`]: the node was cut off
//!   from it, and others may have deleted its entries) while it has entries there, or a join or leave failed there, it writes the failed leaves and then all its
//!   entries on that instance again (pipelined `HSET`s of at most [`REWRITE_CHUNK`] fields) once it answers, and
//!   tells the channels' subscribers to ask again (an event with `"cut": true`). Joins, leaves
//!   and that rewrite are serialised, so a rewrite never brings back an entry that left
//!   meanwhile.
//! - Events travel on the channel's Redis channel as the node id, [`EVENT_MARK`] and the
//!   `#presence` frame; every node with subscribers (the sending one included) delivers them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::presence_lua::{CLAIM_DEAD, JOIN, LEAVE, LEAVES, QUERY, SWEPT};
use super::{command_error, Redis, Shard, NODE_ID_LEN};
use crate::broker::cluster::broker_index;
use crate::broker::presence::{encode_event, encode_resync, DEAD_WORKER_EVENT_MAX};
use crate::broker::{BrokerError, PresenceEntry, REDIS_SEPARATOR};

/// How long a node's entries outlive its last refresh.
pub(super) const NODE_TTL: Duration = Duration::from_secs(6);

/// How often a node renews its key and one node per instance sweeps dead entries.
pub(super) const REFRESH: Duration = Duration::from_secs(2);

/// After the node id, marks a presence event (a publication starts with `{`).
pub(super) const EVENT_MARK: char = 'P';

/// What this node knows of its own presence, shared with its keeper task.
#[derive(Default)]
pub(super) struct Own {
    /// Its entries, by channel and socket, with each channel's join/leave flag.
    entries: HashMap<String, HashMap<String, (PresenceEntry, bool)>>,
    /// Leaves Redis did not take (it was unreachable): retried by the keeper.
    leaves: Vec<(String, String)>,
    /// Instances (by index) that must get this node's entries again: a join or leave failed
    /// there, or the node's key there had expired. One flag per instance, so an instance that
    /// answers never clears another's.
    dirty: HashSet<usize>,
}

/// This node's presence: what it knows ([`Own`]) and the lock that serialises its writes.
#[derive(Default)]
pub(super) struct Presence {
    own: Mutex<Own>,
    /// Held by a join, a leave and a rewrite for their whole write, so a rewrite's snapshot
    /// cannot be overtaken by a leave (whose entry the rewrite would then bring back for good).
    writes: tokio::sync::Mutex<()>,
}

impl Presence {
    fn own(&self) -> MutexGuard<'_, Own> {
        super::lock(&self.own)
    }
}

/// [`Presence`], shared with the keeper task.
pub(super) type Mirror = Arc<Presence>;

/// Most fields in one `HSET` of a rewrite, and most leaves in one [`LEAVES`](super::presence_lua::LEAVES) call: bounds a
/// single command (and the time Redis spends on it) whatever a channel's size.
const REWRITE_CHUNK: usize = 1000;

/// A stored value: node id, join/leave flag, entry.
fn encode_value(node: &str, entry: &PresenceEntry, join_leave: bool) -> String {
    let json = serde_json::to_string(entry).unwrap_or_else(|_| "null".into());
    format!("{node}{}{json}", if join_leave { '1' } else { '0' })
}

/// The entry and join/leave flag of a stored value; `None` for anything else.
fn decode_value(value: &str) -> Option<(PresenceEntry, bool)> {
    let rest = value.get(NODE_ID_LEN..)?;
    let join_leave = rest.starts_with('1');
    let entry = serde_json::from_str(rest.get(1..)?).ok()?;
    Some((entry, join_leave))
}

impl Redis {
    fn presence_key(&self, channel: &str) -> String {
        format!("{}{REDIS_SEPARATOR}p:{channel}", self.prefix)
    }

    fn keys(&self) -> Keys {
        let prefix = &self.prefix;
        Keys {
            node_prefix: format!("{prefix}{REDIS_SEPARATOR}pn:"),
            node_channels: format!("{prefix}{REDIS_SEPARATOR}pc:"),
            nodes: format!("{prefix}{REDIS_SEPARATOR}pnodes"),
            claimed_channels: format!("{prefix}{REDIS_SEPARATOR}pcx:"),
            claimed_nodes: format!("{prefix}{REDIS_SEPARATOR}pclaimed"),
            presence: format!("{prefix}{REDIS_SEPARATOR}p:"),
            redis_channel: format!("{prefix}{REDIS_SEPARATOR}"),
            lock: format!("{prefix}{REDIS_SEPARATOR}psweep"),
        }
    }

    pub(super) async fn join_presence(
        &self,
        channel: &str,
        entry: PresenceEntry,
        join_leave: bool,
    ) -> Result<(), BrokerError> {
        let state = self.state()?;
        let node = &state.node;
        let index = broker_index(channel, state.shards.len());
        let value = encode_value(node, &entry, join_leave);
        let _writing = self.presence.writes.lock().await;
        self.presence
            .own()
            .entries
            .entry(channel.to_owned())
            .or_default()
            .insert(entry.socket.clone(), (entry.clone(), join_leave));
        let keys = self.keys();
        let written = async {
            let shard = self.shard_for(channel)?;
            let mut invocation = JOIN.key(self.presence_key(channel));
            invocation
                .key(format!("{}{node}", keys.node_channels))
                .key(&keys.nodes)
                .arg(&entry.socket)
                .arg(value)
                .arg(channel)
                .arg(node);
            self.script::<()>(shard, invocation).await
        }
        .await;
        if written.is_err() {
            self.presence.own().dirty.insert(index);
        }
        written
    }

    pub(super) async fn leave_presence(
        &self,
        channel: &str,
        socket: &str,
    ) -> Result<Option<PresenceEntry>, BrokerError> {
        let state = self.state()?;
        let index = broker_index(channel, state.shards.len());
        let _writing = self.presence.writes.lock().await;
        let (remembered, last) = {
            let mut own = self.presence.own();
            let left = own.entries.get_mut(channel).and_then(|m| m.remove(socket));
            let last = own.entries.get(channel).is_none_or(HashMap::is_empty);
            if last {
                own.entries.remove(channel);
            }
            (left.map(|(entry, _)| entry), last)
        };
        let keys = self.keys();
        let removed = async {
            let shard = self.shard_for(channel)?;
            let mut invocation = LEAVE.key(self.presence_key(channel));
            invocation
                .key(format!("{}{}", keys.node_channels, state.node))
                .arg(socket)
                .arg(channel)
                .arg(if last { "1" } else { "0" });
            self.script::<Option<String>>(shard, invocation).await
        }
        .await;
        let stored = match removed {
            Ok(stored) => stored,
            Err(e) => {
                // The socket is gone: its entry must not stay once Redis is back.
                let mut own = self.presence.own();
                own.leaves.push((channel.to_owned(), socket.to_owned()));
                own.dirty.insert(index);
                drop(own);
                tracing::warn!(%channel, %socket, error = %e, "presence leave not written yet; retried when Redis answers");
                None
            }
        };
        Ok(stored
            .as_deref()
            .and_then(decode_value)
            .map(|(entry, _)| entry)
            .or(remembered))
    }

    pub(super) async fn query_presence(
        &self,
        channel: &str,
    ) -> Result<Vec<PresenceEntry>, BrokerError> {
        let state = self.state()?;
        let shard = self.shard_for(channel)?;
        let keys = self.keys();
        let (live, dead) = sweep_channel(shard, &keys, &state.node, channel).await?;
        if !dead.is_empty() {
            let _ = announce(shard, &keys, &state.node, channel, &dead).await;
        }
        Ok(live
            .iter()
            .filter_map(|v| decode_value(v))
            .map(|(e, _)| e)
            .collect())
    }

    pub(super) async fn publish_presence_event(
        &self,
        channel: &str,
        frame: &str,
    ) -> Result<(), BrokerError> {
        let state = self.state()?;
        let shard = self.shard_for(channel)?;
        let payload = format!("{}{EVENT_MARK}{frame}", state.node);
        let _receivers: i64 = self
            .query(
                shard,
                redis::cmd("PUBLISH")
                    .arg(self.channel_key(channel))
                    .arg(payload),
            )
            .await?;
        Ok(())
    }

    /// The task that keeps this node's key alive on every instance, writes its entries again
    /// where needed, and sweeps dead entries (see the module docs): per instance, a renewal
    /// loop and a maintenance loop that never wait on each other.
    pub(super) fn presence_keeper(&self) -> Option<impl std::future::Future<Output = ()>> {
        let state = self.state().ok()?.clone();
        let keys = Arc::new(self.keys());
        let mirror = self.presence.clone();
        Some(async move {
            let shards = state.shards.len();
            let loops = state.shards.iter().enumerate().map(|(index, shard)| {
                let at = At {
                    shard,
                    index,
                    shards,
                    node: &state.node,
                    keys: &keys,
                    mirror: &mirror,
                };
                async move {
                    let renewing = async {
                        let mut last = None;
                        loop {
                            renew(&at, &mut last).await;
                            tokio::time::sleep(REFRESH).await;
                        }
                    };
                    let maintaining = async {
                        loop {
                            maintain(&at).await;
                            tokio::time::sleep(REFRESH).await;
                        }
                    };
                    tokio::join!(renewing, maintaining);
                }
            });
            join_all(loops).await;
        })
    }
}

/// Key names the keeper task needs (it does not hold the engine).
struct Keys {
    /// `prefix#pn:`, then a node id: the node's liveness key.
    node_prefix: String,
    /// `prefix#pc:`, then a node id: the channels it has entries on.
    node_channels: String,
    /// `prefix#pnodes`: the nodes with a channel set.
    nodes: String,
    /// `prefix#pcx:`, then a node id: the dead node's channels claimed but not swept yet.
    claimed_channels: String,
    /// `prefix#pclaimed`: the dead nodes with a claimed set.
    claimed_nodes: String,
    /// `prefix#p:`, then a channel: its entries.
    presence: String,
    /// `prefix#`, then a channel: its Redis channel.
    redis_channel: String,
    /// `prefix#psweep`: which node sweeps this round.
    lock: String,
}

/// One instance, as the keeper sees it.
struct At<'a> {
    shard: &'a Shard,
    index: usize,
    shards: usize,
    node: &'a str,
    keys: &'a Keys,
    mirror: &'a Mirror,
}

/// Renews this node's key on one instance. `last` is when the last renewal Redis answered
/// was sent. If the key may have expired since (see [`lapsed`]) while this node has entries
/// there, the instance is dirty: others may have deleted them.
async fn renew(at: &At<'_>, last: &mut Option<Instant>) {
    let mut conn = at.shard.conn.clone();
    let ttl = u64::try_from(NODE_TTL.as_millis()).unwrap_or(u64::MAX);
    let sent = Instant::now();
    let previous: Result<Option<String>, _> = redis::cmd("SET")
        .arg(format!("{}{}", at.keys.node_prefix, at.node))
        .arg(1)
        .arg("PX")
        .arg(ttl)
        .arg("GET")
        .query_async(&mut conn)
        .await;
    match previous {
        Ok(previous) => {
            let lapsed = lapsed(previous.is_some(), *last, sent);
            *last = Some(sent);
            if lapsed {
                let mut own = at.mirror.own();
                let here = own
                    .entries
                    .keys()
                    .any(|channel| broker_index(channel, at.shards) == at.index);
                if here {
                    own.dirty.insert(at.index);
                }
            }
        }
        // A general error, not a lost connection: Redis before 6.2 refuses `SET .. GET`, and
        // this node's entries then look dead to every node. Said once, loudly; it cannot heal.
        Err(e) if e.code() == Some("ERR") => {
            static SAID: AtomicBool = AtomicBool::new(false);
            if !SAID.swap(true, Ordering::Relaxed) {
                tracing::error!(redis = %at.shard.name, error = %e, "presence keep-alive refused: presence on Redis needs Redis 6.2 or newer (SET .. GET); this node's presence entries count as dead meanwhile");
            }
        }
        Err(e) => {
            tracing::debug!(redis = %at.shard.name, error = %e, "presence keep-alive failed");
        }
    }
}

/// Whether this node's key may have expired before the renewal sent at `sent`: it was gone
/// (`existed` false: expired, or never set), or no renewal was answered for a whole
/// [`NODE_TTL`] (a renewal whose reply was lost may have recreated the key, so that this one
/// finds it).
fn lapsed(existed: bool, last: Option<Instant>, sent: Instant) -> bool {
    !existed || last.is_some_and(|last| sent.duration_since(last) >= NODE_TTL)
}

/// One maintenance round on one instance: the rewrite if it is dirty, then the sweep if this
/// node takes the lock.
async fn maintain(at: &At<'_>) {
    let dirty = at.mirror.own().dirty.remove(&at.index);
    if dirty {
        // No early return: the sweep below is due whatever became of the rewrite.
        if let Err(e) = rewrite_own(at).await {
            at.mirror.own().dirty.insert(at.index);
            tracing::debug!(redis = %at.shard.name, error = %e, "presence entries not written again yet");
        }
    }
    let mut conn = at.shard.conn.clone();
    let lock_ms = u64::try_from(REFRESH.as_millis()).unwrap_or(u64::MAX) * 9 / 10;
    let locked: Result<Option<String>, _> = redis::cmd("SET")
        .arg(&at.keys.lock)
        .arg(at.node)
        .arg("NX")
        .arg("PX")
        .arg(lock_ms)
        .query_async(&mut conn)
        .await;
    if !matches!(locked, Ok(Some(_))) {
        return;
    }
    let mut invocation = CLAIM_DEAD.key(&at.keys.nodes);
    invocation
        .key(&at.keys.claimed_nodes)
        .arg(&at.keys.node_prefix)
        .arg(&at.keys.node_channels)
        .arg(&at.keys.claimed_channels)
        .arg(at.node);
    let claimed: Vec<String> = match invocation.invoke_async(&mut conn).await {
        Ok(claimed) => claimed,
        Err(_) => return,
    };
    // By (node, channel); leftover if any copy is.
    let mut todo: HashMap<(&str, &str), bool> = HashMap::new();
    for triple in claimed.chunks_exact(3) {
        *todo.entry((&triple[0], &triple[1])).or_default() |= triple[2] == "1";
    }
    for ((dead_node, channel), leftover) in todo {
        let Ok((_, dead)) = sweep_channel(at.shard, at.keys, at.node, channel).await else {
            continue;
        };
        let mut announced = announce(at.shard, at.keys, at.node, channel, &dead).await;
        // An earlier sweep may have deleted entries of this channel and died before their
        // leaves were published: its subscribers are told to ask again.
        if leftover {
            announced &= resync(at.shard, at.keys, at.node, channel).await;
        }
        if !announced {
            continue;
        }
        let mut invocation = SWEPT.key(format!("{}{dead_node}", at.keys.claimed_channels));
        invocation
            .key(&at.keys.claimed_nodes)
            .arg(channel)
            .arg(dead_node);
        let _: Result<(), _> = invocation.invoke_async(&mut conn).await;
    }
}

/// Writes the failed leaves and then every entry of this node on instance `at` again (both in
/// chunks of [`REWRITE_CHUNK`], the entries pipelined), under the write lock; then asks the channels' subscribers to
/// ask again, since entries may have come back without join events.
async fn rewrite_own(at: &At<'_>) -> Result<(), redis::RedisError> {
    let mut conn = at.shard.conn.clone();
    let node_channels = format!("{}{}", at.keys.node_channels, at.node);
    let writing = at.mirror.writes.lock().await;
    let leaves: Vec<(String, String, bool)> = {
        let mut own = at.mirror.own();
        let (here, elsewhere): (Vec<_>, Vec<_>) = std::mem::take(&mut own.leaves)
            .into_iter()
            .partition(|(channel, _)| broker_index(channel, at.shards) == at.index);
        own.leaves = elsewhere;
        here.into_iter()
            .map(|(channel, socket)| {
                let last = !own.entries.contains_key(&channel);
                (channel, socket, last)
            })
            .collect()
    };
    let mut touched: HashMap<String, bool> = HashMap::new();
    for (i, chunk) in leaves.chunks(REWRITE_CHUNK).enumerate() {
        let mut invocation = LEAVES.key(&node_channels);
        for (channel, socket, last) in chunk {
            invocation
                .key(format!("{}{channel}", at.keys.presence))
                .arg(socket)
                .arg(channel)
                .arg(if *last { "1" } else { "0" });
        }
        let removed: Result<Vec<Option<String>>, _> = invocation.invoke_async(&mut conn).await;
        match removed {
            Ok(removed) => {
                // Their subscribers may have missed these leaves: a cut event on each channel
                // with join/leave events (a removed value says whether it has them).
                for ((channel, _, _), removed) in chunk.iter().zip(removed) {
                    let join_leave = removed
                        .as_deref()
                        .and_then(decode_value)
                        .is_some_and(|(_, join_leave)| join_leave);
                    *touched.entry(channel.clone()).or_default() |= join_leave;
                }
            }
            Err(e) => {
                at.mirror.own().leaves.extend(
                    leaves[i * REWRITE_CHUNK..]
                        .iter()
                        .map(|(c, s, _)| (c.clone(), s.clone())),
                );
                drop(writing);
                // The leaves written so far are in Redis now: their cut events go out.
                announce_cut(at, touched).await;
                return Err(e);
            }
        }
    }
    let by_leaves = touched.clone();
    let mut pipe = redis::pipe();
    {
        let own = at.mirror.own();
        for (channel, members) in own
            .entries
            .iter()
            .filter(|(channel, _)| broker_index(channel, at.shards) == at.index)
        {
            let mut join_leave = false;
            let members: Vec<_> = members.values().collect();
            for chunk in members.chunks(REWRITE_CHUNK) {
                let mut hset = redis::cmd("HSET");
                hset.arg(format!("{}{channel}", at.keys.presence));
                for (entry, jl) in chunk {
                    hset.arg(&entry.socket)
                        .arg(encode_value(at.node, entry, *jl));
                    join_leave |= *jl;
                }
                pipe.add_command(hset).ignore();
            }
            pipe.cmd("SADD").arg(&node_channels).arg(channel).ignore();
            *touched.entry(channel.clone()).or_default() |= join_leave;
        }
    }
    pipe.cmd("SADD").arg(&at.keys.nodes).arg(at.node).ignore();
    let written = pipe.query_async::<()>(&mut conn).await;
    drop(writing);
    // If the entries were not written, the leaves before them still were.
    announce_cut(at, if written.is_ok() { touched } else { by_leaves }).await;
    written
}

/// Sends a cut event on each touched channel with join/leave events.
async fn announce_cut(at: &At<'_>, touched: HashMap<String, bool>) {
    for (channel, join_leave) in touched {
        if join_leave {
            let _ = resync(at.shard, at.keys, at.node, &channel).await;
        }
    }
}

/// Runs [`QUERY`] on one channel: (live values, dead values deleted).
async fn sweep_channel(
    shard: &Shard,
    keys: &Keys,
    node: &str,
    channel: &str,
) -> Result<(Vec<String>, Vec<String>), BrokerError> {
    let mut conn = shard.conn.clone();
    let mut invocation = QUERY.key(format!("{}{channel}", keys.presence));
    invocation.arg(&keys.node_prefix).arg(node);
    invocation
        .invoke_async(&mut conn)
        .await
        .map_err(|e| command_error(&shard.name, e))
}

/// Tells a channel's subscribers (on every node) that their member list may be stale: an
/// event with no joins or leaves and `"cut": true`, on which clients ask `#presence` again.
async fn resync(shard: &Shard, keys: &Keys, node: &str, channel: &str) -> bool {
    let Ok(frame) = encode_resync(channel) else {
        return true;
    };
    publish(shard, keys, node, channel, &frame).await
}

/// Publishes a `#presence` frame on a channel's Redis channel; whether Redis took it.
async fn publish(shard: &Shard, keys: &Keys, node: &str, channel: &str, frame: &str) -> bool {
    let mut conn = shard.conn.clone();
    let published: Result<i64, _> = redis::cmd("PUBLISH")
        .arg(format!("{}{channel}", keys.redis_channel))
        .arg(format!("{node}{EVENT_MARK}{frame}"))
        .query_async(&mut conn)
        .await;
    if let Err(e) = &published {
        tracing::debug!(%channel, error = %e, "presence event not published");
    }
    published.is_ok()
}

/// Publishes one leave event for the dead values on a channel with join/leave events; false
/// only if there was one to publish and Redis did not take it.
async fn announce(shard: &Shard, keys: &Keys, node: &str, channel: &str, dead: &[String]) -> bool {
    let leaves: Vec<PresenceEntry> = dead
        .iter()
        .filter_map(|v| decode_value(v))
        .filter(|(_, join_leave)| *join_leave)
        .map(|(entry, _)| entry)
        .collect();
    if leaves.is_empty() {
        return true;
    }
    let Ok(frame) = encode_event(channel, &[], &leaves, DEAD_WORKER_EVENT_MAX) else {
        return true;
    };
    publish(shard, keys, node, channel, &frame).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_value_is_node_flag_and_entry() {
        let entry = PresenceEntry {
            socket: "s".into(),
            user: Some("u".into()),
            info: None,
        };
        let value = encode_value("00000000000000aa", &entry, true);
        assert!(value.starts_with("00000000000000aa1{"));
        assert_eq!(decode_value(&value), Some((entry.clone(), true)));
        assert_eq!(
            decode_value(&encode_value("00000000000000aa", &entry, false)),
            Some((entry, false))
        );
        assert_eq!(decode_value("short"), None);
    }

    #[test]
    fn a_key_lapsed_if_gone_or_unrenewed_for_its_ttl() {
        let t0 = Instant::now();
        assert!(lapsed(false, None, t0), "a key found gone");
        assert!(lapsed(false, Some(t0), t0 + REFRESH), "a key found gone");
        assert!(!lapsed(true, None, t0));
        assert!(!lapsed(true, Some(t0), t0 + REFRESH));
        // Found, but no renewal was answered for a whole TTL: its reply may have been lost
        // after it recreated an expired key.
        assert!(lapsed(true, Some(t0), t0 + NODE_TTL));
    }
}
