//! The Lua scripts of presence on Redis ([`super::presence`] owns the keys and their use):
//! each runs atomically on one instance, so a claim, a sweep or a leave never interleaves with
//! another node's writes.

use std::sync::LazyLock;

/// KEYS: hash, the node's channel set, the node set. ARGV: socket, value, channel, node.
pub(super) static JOIN: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
",
    )
});

/// KEYS: hash, the node's channel set. ARGV: socket, channel, `1` when the node has no entry
/// left on the channel. Answers the value removed, or nil.
pub(super) static LEAVE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then redis.call('HDEL', KEYS[1], ARGV[1]) end
if ARGV[3] == '1' then redis.call('SREM', KEYS[2], ARGV[2]) end
return v
",
    )
});

/// KEYS: the node's channel set, then one hash per leave. ARGV: per leave, as [`LEAVE`]'s:
/// socket, channel, `1` when the node has no entry left on the channel. Answers the values
/// removed (nil where none was): many retried leaves in one round trip.
pub(super) static LEAVES: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local out = {}
for i = 2, #KEYS do
  local j = (i - 2) * 3
  local v = redis.call('HGET', KEYS[i], ARGV[j + 1])
  if v then redis.call('HDEL', KEYS[i], ARGV[j + 1]) end
  if ARGV[j + 3] == '1' then redis.call('SREM', KEYS[1], ARGV[j + 2]) end
  out[#out + 1] = v
end
return out
",
    )
});

/// KEYS: hash. ARGV: node key prefix, this node. Answers `{live, dead}` values; the dead ones
/// (their node's key expired) are deleted.
pub(super) static QUERY: LazyLock<redis::Script> = LazyLock::new(|| {
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
return {live, dead}
",
    )
});

/// KEYS: the node set, the claimed node set. ARGV: node key prefix, channel set prefix,
/// claimed set prefix, this node. Moves the channel set of every node whose key expired to its
/// claimed set (`prefix#pcx:NODE`), and answers `node, channel, leftover` triples for every
/// claimed channel: those claimed now (`0`) and those an earlier sweep left unfinished (`1`:
/// its sweeper died or failed mid-way). A channel leaves its claimed set only once swept and
/// announced ([`SWEPT`]), so no dead node's channel is ever dropped unswept. One script, so a
/// node that comes back meanwhile adds its channels after the claim, not before.
pub(super) static CLAIM_DEAD: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local out = {}
for _, n in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  for _, c in ipairs(redis.call('SMEMBERS', ARGV[3] .. n)) do
    out[#out + 1] = n; out[#out + 1] = c; out[#out + 1] = '1'
  end
end
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if n ~= ARGV[4] and redis.call('EXISTS', ARGV[1] .. n) == 0 then
    local set, claimed = ARGV[2] .. n, ARGV[3] .. n
    for _, c in ipairs(redis.call('SMEMBERS', set)) do
      out[#out + 1] = n; out[#out + 1] = c; out[#out + 1] = '0'
    end
    if redis.call('EXISTS', set) == 1 then
      redis.call('SUNIONSTORE', claimed, claimed, set)
      redis.call('DEL', set)
      redis.call('SADD', KEYS[2], n)
    end
    redis.call('SREM', KEYS[1], n)
  end
end
return out
",
    )
});

/// KEYS: a node's claimed set, the claimed node set. ARGV: channel, node. A claimed channel
/// swept and announced: forgotten, and the node with it once it has none left.
pub(super) static SWEPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('SREM', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
",
    )
});
