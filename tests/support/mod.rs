//! Helpers shared by the process tests of `tests/cluster` and `tests/redis` (each includes this
//! file with `#[path]`).
#![allow(dead_code)]

pub mod backlog;

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
