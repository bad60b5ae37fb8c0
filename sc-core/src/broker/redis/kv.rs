//! The key-value store on Redis: [`KvOp`]'s semantics with one Redis command or Lua script per
//! operation (atomic per key); scalars as JSON strings, lists as Redis lists of JSON elements.

use serde_json::Value;

use std::sync::atomic::Ordering;

use super::{broker_index, Redis};
use crate::broker::{BrokerError, KvOp};

impl Redis {
    /// One key-value operation on Redis (see [`KvOp`] for the results).
    pub(super) async fn run_kv(&self, op: KvOp) -> Result<Value, BrokerError> {
        match op {
            KvOp::Set { key, value } => {
                let shard = self.shard_for(&key)?;
                let redis_key = self.kv_key(&key);
                match value {
                    Value::Array(items) if !items.is_empty() => {
                        let script = redis::Script::new(SET_LIST);
                        let mut invocation = script.key(&redis_key);
                        for item in &items {
                            invocation.arg(item.to_string());
                        }
                        let () = self.script(shard, invocation).await?;
                    }
                    other => {
                        let () = self
                            .query(
                                shard,
                                redis::cmd("SET").arg(&redis_key).arg(other.to_string()),
                            )
                            .await?;
                    }
                }
                Ok(Value::Null)
            }
            KvOp::Get { key } => {
                let shard = self.shard_for(&key)?;
                let script = redis::Script::new(GET);
                let raw: Vec<String> = self.script(shard, script.key(self.kv_key(&key))).await?;
                decode_stored(&raw)
            }
            KvOp::Remove { key } => {
                let shard = self.shard_for(&key)?;
                let script = redis::Script::new(REMOVE);
                let raw: Vec<String> = self.script(shard, script.key(self.kv_key(&key))).await?;
                decode_stored(&raw)
            }
            KvOp::Add { key, value } => {
                let shard = self.shard_for(&key)?;
                let script = redis::Script::new(ADD);
                let mut invocation = script.key(self.kv_key(&key));
                invocation.arg(value.to_string());
                let index: i64 = self.script(shard, invocation).await?;
                Ok(Value::from(index))
            }
            KvOp::Expire { keys, ms } => self.per_shard(keys, EXPIRE, Some(ms)).await,
            KvOp::Unexpire { keys } => self.per_shard(keys, UNEXPIRE, None).await,
            KvOp::HasKey { key } => {
                let shard = self.shard_for(&key)?;
                let n: i64 = self
                    .query(shard, redis::cmd("EXISTS").arg(self.kv_key(&key)))
                    .await?;
                Ok(Value::Bool(n > 0))
            }
            KvOp::Count => {
                let pattern = format!("{}*", glob_escape(&self.kv_key("")));
                let mut total = 0u64;
                for shard in &self.state()?.shards {
                    if !shard.up.load(Ordering::Relaxed) {
                        return Err(BrokerError::Unavailable(format!(
                            "Redis at {} is unreachable (reconnecting)",
                            shard.name
                        )));
                    }
                    let mut cursor = 0u64;
                    loop {
                        let (next, keys): (u64, Vec<String>) = self
                            .query(
                                shard,
                                redis::cmd("SCAN")
                                    .arg(cursor)
                                    .arg("MATCH")
                                    .arg(&pattern)
                                    .arg("COUNT")
                                    .arg(1000),
                            )
                            .await?;
                        total += keys.len() as u64;
                        if next == 0 {
                            break;
                        }
                        cursor = next;
                    }
                }
                Ok(Value::from(total))
            }
        }
    }

    /// Runs a multi-key script once per instance with that instance's keys; sums the counts.
    async fn per_shard(
        &self,
        keys: Vec<String>,
        source: &str,
        ms: Option<u64>,
    ) -> Result<Value, BrokerError> {
        let state = self.state()?;
        let mut groups: Vec<Vec<String>> = vec![Vec::new(); state.shards.len()];
        for key in keys {
            groups[broker_index(&key, state.shards.len())].push(self.kv_key(&key));
        }
        let mut total = 0i64;
        for (i, group) in groups.iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let shard = &state.shards[i];
            if !shard.up.load(Ordering::Relaxed) {
                return Err(BrokerError::Unavailable(format!(
                    "Redis at {} is unreachable (reconnecting)",
                    shard.name
                )));
            }
            let script = redis::Script::new(source);
            let mut invocation = script.prepare_invoke();
            for key in group {
                invocation.key(key);
            }
            if let Some(ms) = ms {
                invocation.arg(ms);
            }
            let n: i64 = self.script(shard, invocation).await?;
            total += n;
        }
        Ok(Value::from(total))
    }
}

/// `SET` of a non-empty array: a Redis list of JSON elements (replacing the key and its expiry).
const SET_LIST: &str = r"
redis.call('DEL', KEYS[1])
for i = 1, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
";

/// `{'s', json}` for a scalar, `{'l', json...}` for a list, `{'n'}` for no key.
const GET: &str = r"
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'string' then return {'s', redis.call('GET', KEYS[1])} end
if t == 'list' then
  local r = redis.call('LRANGE', KEYS[1], 0, -1)
  table.insert(r, 1, 'l')
  return r
end
return {'n'}
";

/// `GET`, then delete.
const REMOVE: &str = r"
local t = redis.call('TYPE', KEYS[1]).ok
local r = {'n'}
if t == 'string' then r = {'s', redis.call('GET', KEYS[1])} end
if t == 'list' then
  r = redis.call('LRANGE', KEYS[1], 0, -1)
  table.insert(r, 1, 'l')
end
redis.call('DEL', KEYS[1])
return r
";

/// Append; a scalar `x` becomes `[x, value]` (an empty-array scalar becomes `[value]`); the
/// expiry is kept. Answers the new element's index.
const ADD: &str = r"
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'string' then
  local cur = redis.call('GET', KEYS[1])
  local ttl = redis.call('PTTL', KEYS[1])
  redis.call('DEL', KEYS[1])
  if cur ~= '[]' then redis.call('RPUSH', KEYS[1], cur) end
  local n = redis.call('RPUSH', KEYS[1], ARGV[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
  return n - 1
end
return redis.call('RPUSH', KEYS[1], ARGV[1]) - 1
";

/// Expire each existing key in `ARGV[1]` ms (0: now); answers how many exist.
const EXPIRE: &str = r"
local n = 0
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    n = n + 1
    if tonumber(ARGV[1]) == 0 then redis.call('DEL', KEYS[i]) else redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
  end
end
return n
";

/// Remove the expiry of each existing key; answers how many exist.
const UNEXPIRE: &str = r"
local n = 0
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    n = n + 1
    redis.call('PERSIST', KEYS[i])
  end
end
return n
";

/// The JSON value of a `GET`/`REMOVE` script answer.
fn decode_stored(raw: &[String]) -> Result<Value, BrokerError> {
    let parse = |s: &str| {
        serde_json::from_str::<Value>(s)
            .map_err(|e| BrokerError::Decode(format!("a value stored in Redis is not JSON: {e}")))
    };
    match raw.split_first() {
        Some((kind, rest)) if kind == "s" && rest.len() == 1 => parse(&rest[0]),
        Some((kind, rest)) if kind == "l" => rest
            .iter()
            .map(|s| parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        _ => Ok(Value::Null),
    }
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_decode_by_kind() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            decode_stored(&s(&["s", "{\"a\":1}"])).ok(),
            Some(serde_json::json!({"a": 1}))
        );
        assert_eq!(
            decode_stored(&s(&["l", "1", "\"x\""])).ok(),
            Some(serde_json::json!([1, "x"]))
        );
        assert_eq!(decode_stored(&s(&["n"])).ok(), Some(Value::Null));
        assert!(decode_stored(&s(&["s", "not json"])).is_err());
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
