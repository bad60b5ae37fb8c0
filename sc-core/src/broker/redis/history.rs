//! Channel history on Redis: one Redis Stream per channel, shared by every node, so a client
//! recovers on any node and a node restart loses nothing.
//!
//! - Keys (on the channel's instance, next to its Redis channel): the stream `prefix#h:C` holds
//!   the positioned `#publish` frames, each under the stream id `offset-0` (so a read since an
//!   offset is one `XRANGE`) with the Redis time it was added; the hash `prefix#hm:C` holds the
//!   epoch (`e`) and the last offset (`o`). Neither can meet a key-value key (`prefix#kv:..`).
//! - Publishing is one Lua script, atomic per channel: it takes the next offset, creates the
//!   epoch when the hash is gone (a new random one: the old history is lost, so its offsets must
//!   not be compared with the new ones), appends with an exact `MAXLEN` (so "the history no
//!   longer covers this gap" is exact: an approximate trim would keep a varying number), renews
//!   the expiry of both keys, and `PUBLISH`es the positioned frame. Every node, the publishing
//!   one included, delivers positioned publications from that `PUBLISH`, so all of them see a
//!   channel's publications in the same order (Redis's).
//! - A channel without publications for `ttl` loses its stream; its hash (the position) lives
//!   for `ttl` plus the tombstone ttl ([`Redis::history_tombstone_ttl`], renewed by each
//!   publication and read), like the in-memory store's tombstones: a client at the top still
//!   recovers, the next publication continues the epoch. Only when the hash is gone too is the
//!   epoch lost. Within an active channel, an entry older than `ttl` (by Redis's clock) is
//!   skipped when reading, so a publication is kept for at most `ttl` on every engine.

use std::sync::{Arc, LazyLock};

use axum::extract::ws::Utf8Bytes;

use super::Redis;
use crate::broker::{
    BrokerError, HistoryPolicy, HistorySince, Position, Publication, REDIS_SEPARATOR,
};

/// KEYS: stream, meta. ARGV: Redis channel, node id, frame without its closing `}}`, size,
/// ttl in ms, a new epoch (used when there is none), the meta's ttl in ms (ttl + tombstone
/// ttl). Answers `{offset, epoch}`.
static PUBLISH: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(PUBLISH_LUA));
const PUBLISH_LUA: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[6]
  redis.call('HSET', KEYS[2], 'e', epoch)
end
local offset = redis.call('HINCRBY', KEYS[2], 'o', 1)
if offset == 1 then
  -- A new epoch: whatever the stream still holds belongs to the lost one.
  redis.call('DEL', KEYS[1])
end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local frame = ARGV[3] .. ',"offset":' .. offset .. ',"epoch":' .. cjson.encode(epoch) .. '}}'
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[4], offset .. '-0', 'f', frame, 't', ms)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
redis.call('PUBLISH', ARGV[1], ARGV[2] .. frame)
return {offset, epoch}
"#;

/// `SCRIPT LOAD` of the publishing script, which the ordered publisher sends before its first
/// `EVALSHA` (see the `publisher` submodule).
pub(super) fn load_publish_script() -> redis::Cmd {
    let mut cmd = redis::cmd("SCRIPT");
    cmd.arg("LOAD").arg(PUBLISH_LUA);
    cmd
}

/// KEYS: stream, meta. ARGV: ttl in ms, a new epoch (used when there is none), `since` or `all`
/// (every kept publication), the epoch and the offset asked for, the meta's ttl in ms. Answers `{epoch, top, offset1,
/// frame1, ...}`: the entries after the offset asked for that are younger than ttl, read only
/// when the epoch is the one asked for. Creating the epoch here (and keeping it while the channel
/// is read) gives a subscriber of a quiet channel a position it can recover from later.
static READ: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local meta = redis.call('HMGET', KEYS[2], 'e', 'o')
local epoch, top = meta[1], tonumber(meta[2]) or 0
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[2], 'e', epoch)
  -- A new epoch: whatever the stream still holds belongs to the lost one.
  redis.call('DEL', KEYS[1])
end
-- A name nothing was published on (any name a client subscribes to) keeps its epoch only for
-- the ttl, not the tombstone ttl, so made-up names cannot pile up for a day each.
if meta[2] then
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
else
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
local out = {epoch, top}
local since = ARGV[3] == 'since'
if since and ARGV[4] ~= epoch then return out end
local now = redis.call('TIME')
local cutoff = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[1])
local from = '-'
if since then from = '(' .. ARGV[5] .. '-0' end
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], from, '+')) do
  local fields, frame, t = entry[2], nil, 0
  for i = 1, #fields, 2 do
    if fields[i] == 'f' then frame = fields[i + 1] end
    if fields[i] == 't' then t = tonumber(fields[i + 1]) end
  end
  if frame and t >= cutoff then
    table.insert(out, tonumber(string.match(entry[1], '^(%d+)')))
    table.insert(out, frame)
  end
end
return out
"#,
    )
});

impl Redis {
    fn stream_key(&self, channel: &str) -> String {
        format!("{}{REDIS_SEPARATOR}h:{channel}", self.prefix)
    }

    fn meta_key(&self, channel: &str) -> String {
        format!("{}{REDIS_SEPARATOR}hm:{channel}", self.prefix)
    }

    /// Positions, keeps and publishes `publication` (see the module header). Local sockets get
    /// it from Redis like every other node's, so it is not delivered when Redis is away.
    pub(super) async fn publish_positioned(
        &self,
        publication: &Publication,
        policy: HistoryPolicy,
    ) -> Result<Position, BrokerError> {
        let state = self.state()?;
        let channel = &publication.channel;
        let shard = self.shard_for(channel)?;
        let head = publication
            .frame
            .as_str()
            .strip_suffix("}}")
            .ok_or_else(|| BrokerError::Encode("a #publish frame must end with }}".into()))?;
        // The script's EVALSHA goes through the instance's ordered publisher, which loads the
        // script first when Redis may not have it.
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(PUBLISH.get_hash())
            .arg(2)
            .arg(self.stream_key(channel))
            .arg(self.meta_key(channel))
            .arg(self.channel_key(channel))
            .arg(&state.node)
            .arg(head)
            .arg(policy.size.max(1))
            .arg(ttl_ms(policy))
            .arg(new_epoch())
            .arg(self.meta_ttl_ms(policy));
        let answer = shard.publisher.send(cmd, true).await?;
        let (offset, epoch): (u64, String) = redis::from_redis_value(answer)
            .map_err(|e| BrokerError::Refused(format!("Redis at {}: {e}", shard.name)))?;
        Ok(Position { offset, epoch })
    }

    /// The kept publications after `since` and the channel's top (see [`HistorySince`]).
    pub(super) async fn read_history(
        &self,
        channel: &str,
        since: Option<Position>,
        policy: HistoryPolicy,
    ) -> Result<HistorySince, BrokerError> {
        let shard = self.shard_for(channel)?;
        let mut invocation = READ.key(self.stream_key(channel));
        invocation
            .key(self.meta_key(channel))
            .arg(ttl_ms(policy))
            .arg(new_epoch());
        match &since {
            Some(p) => invocation.arg("since").arg(&p.epoch).arg(p.offset),
            None => invocation.arg("all").arg("").arg(0),
        };
        invocation.arg(self.meta_ttl_ms(policy));
        let raw: Vec<redis::Value> = self.script(shard, invocation).await?;
        decode_read(channel, since.as_ref(), &raw)
    }
}

impl Redis {
    /// The position outlives the stream by the tombstone ttl (see the module header).
    fn meta_ttl_ms(&self, policy: HistoryPolicy) -> u64 {
        let tombstone = u64::try_from(self.tombstone_ttl.as_millis()).unwrap_or(u64::MAX);
        ttl_ms(policy).saturating_add(tombstone).min(MAX_TTL_MS)
    }
}

/// Redis refuses a PEXPIRE past i64 milliseconds (counted from now): a declared ttl of
/// centuries would fail every publication instead of keeping it for ten years.
const MAX_TTL_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

fn ttl_ms(policy: HistoryPolicy) -> u64 {
    u64::try_from(policy.ttl.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TTL_MS)
}

fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The answer of [`READ`]: `publications` only when the kept ones follow `since` without a gap.
fn decode_read(
    channel: &str,
    since: Option<&Position>,
    raw: &[redis::Value],
) -> Result<HistorySince, BrokerError> {
    let bad = || BrokerError::Decode("Redis answered the history read in an unknown shape".into());
    let [epoch, top, entries @ ..] = raw else {
        return Err(bad());
    };
    let epoch: String = redis::from_redis_value_ref(epoch).map_err(|_| bad())?;
    let top: u64 = redis::from_redis_value_ref(top).map_err(|_| bad())?;
    let top = Position { offset: top, epoch };
    let channel: Arc<str> = channel.into();
    let mut publications = Vec::with_capacity(entries.len() / 2);
    for pair in entries.chunks(2) {
        let [offset, frame] = pair else {
            return Err(bad());
        };
        let offset: u64 = redis::from_redis_value_ref(offset).map_err(|_| bad())?;
        let frame: String = redis::from_redis_value_ref(frame).map_err(|_| bad())?;
        let position = Position {
            offset,
            epoch: top.epoch.clone(),
        };
        publications.push(Arc::new(Publication::from_positioned_frame(
            channel.clone(),
            Utf8Bytes::from(frame),
            position,
        )));
    }
    let complete = match since {
        None => true,
        Some(since) => {
            since.epoch == top.epoch
                && since.offset <= top.offset
                && match publications.first().and_then(|p| p.position()) {
                    Some(first) => first.offset == since.offset + 1,
                    None => since.offset == top.offset,
                }
        }
    };
    Ok(HistorySince {
        top,
        publications: complete.then_some(publications),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value as V;

    fn bulk(s: &str) -> V {
        V::BulkString(s.as_bytes().to_vec())
    }

    fn at(offset: u64, epoch: &str) -> Position {
        Position {
            offset,
            epoch: epoch.into(),
        }
    }

    #[test]
    fn a_read_is_complete_only_without_a_gap_in_the_same_epoch() {
        let frame = r##"{"event":"#publish","data":{"channel":"c","offset":5,"epoch":"e"}}"##;
        let kept = [bulk("e"), V::Int(5), V::Int(5), bulk(frame)];
        let read = |since: Option<Position>, raw: &[V]| {
            decode_read("c", since.as_ref(), raw)
                .expect("decodes")
                .publications
                .map(|p| p.len())
        };
        assert_eq!(read(None, &kept), Some(1));
        assert_eq!(read(Some(at(4, "e")), &kept), Some(1));
        // Offset 4 was trimmed (overflow or ttl): the answer for 3 would be partial.
        assert_eq!(read(Some(at(3, "e")), &kept), None);
        assert_eq!(read(Some(at(4, "other")), &kept), None);
        let nothing_new = [bulk("e"), V::Int(5)];
        assert_eq!(read(Some(at(5, "e")), &nothing_new), Some(0));
        assert_eq!(read(Some(at(6, "e")), &nothing_new), None);
        let stream_expired = [bulk("e"), V::Int(5)];
        assert_eq!(read(Some(at(4, "e")), &stream_expired), None);
        let top = decode_read("c", None, &kept).expect("decodes").top;
        assert_eq!(top, at(5, "e"));
        assert!(decode_read("c", None, &[bulk("e")]).is_err());
        assert!(decode_read("c", None, &[bulk("e"), V::Int(1), V::Int(1)]).is_err());
    }
}
