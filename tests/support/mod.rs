//! Helpers shared by the process tests of `tests/cluster` and `tests/redis`, and by sc-core's
//! presence tests (each includes this file with `#[path]`).
#![allow(dead_code)]

pub mod backlog;
pub mod redis;

use std::time::Duration;

use sc_core::client::{Client, Subscription};
use serde_json::Value;

/// Reads exactly `n` messages (5 s budget), then checks that nothing more arrives.
pub async fn take_exactly(sub: &mut Subscription, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout(Duration::from_secs(5), sub.recv()).await {
            Ok(Some(v)) => got.push(v),
            _ => panic!(
                "only {} of {n} messages arrived on {}",
                got.len(),
                sub.channel()
            ),
        }
    }
    if let Ok(Some(v)) = tokio::time::timeout(Duration::from_millis(300), sub.recv()).await {
        panic!("an extra message arrived on {}: {v}", sub.channel());
    }
    got
}

/// Runs one key-value operation through the compat server's `kv` procedure.
pub async fn kv(c: &Client, op: Value) -> Value {
    c.invoke("kv", &op).await.expect("kv operation")
}

/// A Redis prefix no other test run uses, so runs do not see each other's channels and keys.
pub fn fresh_prefix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("sctest:{:016x}:", h.finish())
}

/// The `count` of a `#presence` answer for `channel` (the client must be allowed to ask).
pub async fn presence_count(c: &Client, channel: &str) -> u64 {
    let answer = c
        .invoke_value("#presence", Some(serde_json::json!({ "channel": channel })))
        .await
        .unwrap_or_else(|e| panic!("#presence on {channel} failed: {e:?}"))
        .unwrap_or(Value::Null);
    answer["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("no count in {answer}"))
}

/// Asks `#presence` until its count is `want`, at most `within`; how long it took.
pub async fn presence_count_becomes(
    c: &Client,
    channel: &str,
    want: u64,
    within: Duration,
) -> Duration {
    let start = std::time::Instant::now();
    loop {
        let n = presence_count(c, channel).await;
        if n == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "the presence count of {channel} is {n}, not {want}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Reads `#presence` events from `events` until every socket of `want` appeared in their `list`
/// (`"joins"` or `"leaves"`), at most `within`; how many events that took.
pub async fn await_presence(
    events: &mut sc_core::client::EventReceiver,
    list: &str,
    want: &std::collections::HashSet<String>,
    within: Duration,
) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = std::collections::HashSet::new();
    let mut received = 0;
    while !want.is_subset(&seen) {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("{list} of {want:?} not all seen in {within:?}: {seen:?}"))
            .expect("the event stream is open")
            .expect("an event with data");
        received += 1;
        let entries = event[list]
            .as_array()
            .unwrap_or_else(|| panic!("no {list} in {event}"));
        seen.extend(
            entries
                .iter()
                .filter_map(|e| e["socket"].as_str().map(str::to_owned)),
        );
    }
    received
}
