//! Presence on Redis, shared by every node, with the entries of a node that dies gone within a
//! bound.
//!
//! - Keys (on the channel's instance): the hash `prefix#p:C` holds one field per subscribed
//!   socket, its value the node id (16 hex digits), `1` or `0` (whether the channel has
//!   join/leave events) and the entry as JSON; the set `prefix#pc` lists that instance's
//!   channels with entries. Each node keeps `prefix#pn:NODE` alive on every instance with a
//!   [`NODE_TTL`] expiry that it renews every [`REFRESH`].
//! - A query (one Lua script) returns the entries of live nodes and deletes those of nodes whose
//!   key expired; so a dead node's entries stop counting within [`NODE_TTL`]. Every [`REFRESH`]
//!   one node per instance (whichever takes a short lock) runs the same script over every listed
//!   channel and publishes the leaves of the dead entries on channels with join/leave events.
//! - Each node also remembers its own entries: when its key was found expired (the node was cut
//!   off from Redis longer than [`NODE_TTL`], and others may have deleted its entries), or a join
//!   or leave failed while Redis was unreachable, it writes the failed leaves and then all its
//!   entries again once Redis answers.
//! - Events travel on the channel's Redis channel as the node id, [`EVENT_MARK`] and the
//!   `#presence` frame; every node with subscribers (the sending one included) delivers them.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::{command_error, Redis, Shard, NODE_ID_LEN};
use crate::broker::cluster::broker_index;
use crate::broker::presence::{encode_event, DEAD_WORKER_EVENT_MAX};
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
    /// A join or leave failed: the keeper writes every entry again once Redis answers.
    dirty: bool,
}

/// [`Own`], shared.
pub(super) type Mirror = Arc<Mutex<Own>>;

/// KEYS: hash, channel set. ARGV: socket, value, channel.
static JOIN: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
",
    )
});

/// KEYS: hash, channel set. ARGV: socket, channel. Answers the value removed, or nil.
static LEAVE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then
  redis.call('HDEL', KEYS[1], ARGV[1])
  if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
end
return v
",
    )
});

/// KEYS: hash, channel set. ARGV: node key prefix, this node, channel. Answers `{live, dead}`
/// values; the dead ones (their node's key expired) are deleted.
static QUERY: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local all = redis.call('HGETALL', KEYS[1])
local alive, live, dead = {}, {}, {}
for i = 1, #all, 2 do
  local v = all[i + 1]
  local node = string.sub(v, 1, 16)
  local ok = alive[node]
  if ok == nil then
    ok = node == ARGV[2] or redis.call('EXISTS', ARGV[1] .. node) == 1
    alive[node] = ok
  end
  if ok then
    live[#live + 1] = v
  else
    dead[#dead + 1] = v
    redis.call('HDEL', KEYS[1], all[i])
  end
end
if #live == 0 then redis.call('SREM', KEYS[2], ARGV[3]) end
return {live, dead}
",
    )
});

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

    fn presence_channels_key(&self) -> String {
        format!("{}{REDIS_SEPARATOR}pc", self.prefix)
    }

    fn node_key_prefix(&self) -> String {
        format!("{}{REDIS_SEPARATOR}pn:", self.prefix)
    }

    pub(super) async fn join_presence(
        &self,
        channel: &str,
        entry: PresenceEntry,
        join_leave: bool,
    ) -> Result<(), BrokerError> {
        let node = self.state()?.node.clone();
        let value = encode_value(&node, &entry, join_leave);
        super::lock(&self.presence)
            .entries
            .entry(channel.to_owned())
            .or_default()
            .insert(entry.socket.clone(), (entry.clone(), join_leave));
        let written = async {
            let shard = self.shard_for(channel)?;
            let mut invocation = JOIN.key(self.presence_key(channel));
            invocation
                .key(self.presence_channels_key())
                .arg(&entry.socket)
                .arg(value)
                .arg(channel);
            self.script::<()>(shard, invocation).await
        }
        .await;
        if written.is_err() {
            super::lock(&self.presence).dirty = true;
        }
        written
    }

    pub(super) async fn leave_presence(
        &self,
        channel: &str,
        socket: &str,
    ) -> Result<Option<PresenceEntry>, BrokerError> {
        let remembered = {
            let mut own = super::lock(&self.presence);
            let left = own.entries.get_mut(channel).and_then(|m| m.remove(socket));
            if own.entries.get(channel).is_some_and(HashMap::is_empty) {
                own.entries.remove(channel);
            }
            left.map(|(entry, _)| entry)
        };
        let removed = async {
            let shard = self.shard_for(channel)?;
            let mut invocation = LEAVE.key(self.presence_key(channel));
            invocation
                .key(self.presence_channels_key())
                .arg(socket)
                .arg(channel);
            self.script::<Option<String>>(shard, invocation).await
        }
        .await;
        let stored = match removed {
            Ok(stored) => stored,
            Err(e) => {
                // The socket is gone: its entry must not stay once Redis is back.
                let mut own = super::lock(&self.presence);
                own.leaves.push((channel.to_owned(), socket.to_owned()));
                own.dirty = true;
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
        let (live, dead) = sweep_channel(
            shard,
            &self.presence_key(channel),
            &self.presence_channels_key(),
            &self.node_key_prefix(),
            &state.node,
            channel,
        )
        .await?;
        if !dead.is_empty() {
            self.announce_dead(shard, channel, &dead).await;
        }
        Ok(live
            .iter()
            .filter_map(|v| decode_value(v))
            .map(|(e, _)| e)
            .collect())
    }

    /// Publishes the leaves of dead entries on a channel with join/leave events.
    async fn announce_dead(&self, shard: &Shard, channel: &str, dead: &[String]) {
        let Ok(state) = self.state() else { return };
        announce(
            shard,
            &self.channel_key(channel),
            &state.node,
            channel,
            dead,
        )
        .await;
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

    /// The task that keeps this node's key alive, writes its entries again when the key had
    /// expired, and sweeps dead entries (see the module docs).
    pub(super) fn presence_keeper(&self) -> Option<impl std::future::Future<Output = ()>> {
        let state = self.state().ok()?.clone();
        let prefix = self.prefix.clone();
        let mirror = self.presence.clone();
        let keys = Keys {
            node_prefix: self.node_key_prefix(),
            channels: self.presence_channels_key(),
            presence: format!("{prefix}{REDIS_SEPARATOR}p:"),
            redis_channel: format!("{prefix}{REDIS_SEPARATOR}"),
            lock: format!("{prefix}{REDIS_SEPARATOR}psweep"),
        };
        Some(async move {
            loop {
                for (i, shard) in state.shards.iter().enumerate() {
                    keep(shard, i, state.shards.len(), &state.node, &keys, &mirror).await;
                }
                tokio::time::sleep(REFRESH).await;
            }
        })
    }
}

/// Key names the keeper task needs (it does not hold the engine).
struct Keys {
    node_prefix: String,
    channels: String,
    presence: String,
    redis_channel: String,
    lock: String,
}

/// One round of the keeper on one instance.
async fn keep(
    shard: &Shard,
    index: usize,
    shards: usize,
    node: &str,
    keys: &Keys,
    mirror: &Mirror,
) {
    let mut conn = shard.conn.clone();
    let ttl = u64::try_from(NODE_TTL.as_millis()).unwrap_or(u64::MAX);
    let previous: Result<Option<String>, _> = redis::cmd("SET")
        .arg(format!("{}{node}", keys.node_prefix))
        .arg(1)
        .arg("PX")
        .arg(ttl)
        .arg("GET")
        .query_async(&mut conn)
        .await;
    let dirty = std::mem::take(&mut super::lock(mirror).dirty);
    match previous {
        Ok(Some(_)) if !dirty => {}
        Ok(_) => rewrite_own(&mut conn, index, shards, node, keys, mirror).await,
        Err(e) => {
            super::lock(mirror).dirty |= dirty;
            tracing::debug!(redis = %shard.name, error = %e, "presence keep-alive failed");
            return;
        }
    }
    let lock_ms = u64::try_from(REFRESH.as_millis()).unwrap_or(u64::MAX) * 9 / 10;
    let locked: Result<Option<String>, _> = redis::cmd("SET")
        .arg(&keys.lock)
        .arg(node)
        .arg("NX")
        .arg("PX")
        .arg(lock_ms)
        .query_async(&mut conn)
        .await;
    if !matches!(locked, Ok(Some(_))) {
        return;
    }
    let channels: Vec<String> = match redis::cmd("SMEMBERS")
        .arg(&keys.channels)
        .query_async(&mut conn)
        .await
    {
        Ok(channels) => channels,
        Err(_) => return,
    };
    for channel in channels {
        let hash = format!("{}{channel}", keys.presence);
        let swept = sweep_channel(
            shard,
            &hash,
            &keys.channels,
            &keys.node_prefix,
            node,
            &channel,
        )
        .await;
        if let Ok((_, dead)) = swept {
            let redis_channel = format!("{}{channel}", keys.redis_channel);
            announce(shard, &redis_channel, node, &channel, &dead).await;
        }
    }
}

/// Writes every entry of this node on channels owned by instance `index` again, and removes the
/// ones whose leave could not be written.
async fn rewrite_own(
    conn: &mut ConnectionManager,
    index: usize,
    shards: usize,
    node: &str,
    keys: &Keys,
    mirror: &Mirror,
) {
    let leaves: Vec<(String, String)> = {
        let mut own = super::lock(mirror);
        let (here, elsewhere) = std::mem::take(&mut own.leaves)
            .into_iter()
            .partition(|(channel, _)| broker_index(channel, shards) == index);
        own.leaves = elsewhere;
        here
    };
    for (channel, socket) in leaves {
        let mut invocation = LEAVE.key(format!("{}{channel}", keys.presence));
        invocation.key(&keys.channels).arg(&socket).arg(&channel);
        let removed: Result<Option<String>, _> = invocation.invoke_async(conn).await;
        if removed.is_err() {
            let mut own = super::lock(mirror);
            own.leaves.push((channel, socket));
            own.dirty = true;
        }
    }
    let own: Vec<(String, String, String)> = super::lock(mirror)
        .entries
        .iter()
        .filter(|(channel, _)| broker_index(channel, shards) == index)
        .flat_map(|(channel, members)| {
            members.values().map(move |(entry, join_leave)| {
                (
                    channel.clone(),
                    entry.socket.clone(),
                    encode_value(node, entry, *join_leave),
                )
            })
        })
        .collect();
    for (channel, socket, value) in own {
        let mut invocation = JOIN.key(format!("{}{channel}", keys.presence));
        invocation
            .key(&keys.channels)
            .arg(socket)
            .arg(value)
            .arg(&channel);
        let written: Result<(), _> = invocation.invoke_async(conn).await;
        if let Err(e) = written {
            tracing::debug!(%channel, error = %e, "presence entry not written again");
        }
    }
}

/// Runs [`QUERY`] on one channel: (live values, dead values deleted).
async fn sweep_channel(
    shard: &Shard,
    hash: &str,
    channels: &str,
    node_prefix: &str,
    node: &str,
    channel: &str,
) -> Result<(Vec<String>, Vec<String>), BrokerError> {
    let mut conn = shard.conn.clone();
    let mut invocation = QUERY.key(hash);
    invocation
        .key(channels)
        .arg(node_prefix)
        .arg(node)
        .arg(channel);
    invocation
        .invoke_async(&mut conn)
        .await
        .map_err(|e| command_error(shard, e))
}

/// Publishes one leave event for the dead values on a channel with join/leave events.
async fn announce(shard: &Shard, redis_channel: &str, node: &str, channel: &str, dead: &[String]) {
    let leaves: Vec<PresenceEntry> = dead
        .iter()
        .filter_map(|v| decode_value(v))
        .filter(|(_, join_leave)| *join_leave)
        .map(|(entry, _)| entry)
        .collect();
    if leaves.is_empty() {
        return;
    }
    let Ok(frame) = encode_event(channel, &[], &leaves, DEAD_WORKER_EVENT_MAX) else {
        return;
    };
    let mut conn = shard.conn.clone();
    let published: Result<i64, _> = redis::cmd("PUBLISH")
        .arg(redis_channel)
        .arg(format!("{node}{EVENT_MARK}{frame}"))
        .query_async(&mut conn)
        .await;
    if let Err(e) = published {
        tracing::debug!(%channel, error = %e, "leaves of a dead node not announced");
    }
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
}
