//! Counters of one server process and their Prometheus text form (`/metrics`), plus `/health`.
//!
//! In a cluster every child reports its counters to the master once a second over the master's
//! control socket; a worker answering `/metrics` asks the master for the cluster-wide text, so a
//! scrape through the load-balanced port sees the whole cluster, with restarts per role.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Live counters of one process. Relaxed atomics: metrics need no ordering, only totals.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub publish_deliveries: AtomicU64,
    pub publications: AtomicU64,
    pub handshakes: AtomicU64,
    pub slow_consumer_disconnects: AtomicU64,
    pub outbound_dropped: AtomicU64,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// `connections` and `subscriptions` are gauges the caller counts from the live registry.
    pub(crate) fn snapshot(&self, connections: usize, subscriptions: usize) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            connections: connections as u64,
            subscriptions: subscriptions as u64,
            messages_in: get(&self.messages_in),
            messages_out: get(&self.messages_out),
            publications: get(&self.publications),
            publish_deliveries: get(&self.publish_deliveries),
            handshakes: get(&self.handshakes),
            slow_consumer_disconnects: get(&self.slow_consumer_disconnects),
            outbound_dropped: get(&self.outbound_dropped),
        }
    }
}

/// One process's counters at one moment (what children send the master).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// Sockets connected now.
    pub connections: u64,
    /// Socket subscriptions now.
    pub subscriptions: u64,
    /// Inbound WebSocket messages since start.
    pub messages_in: u64,
    /// Outbound WebSocket messages since start.
    pub messages_out: u64,
    /// Publications delivered to this process since start.
    pub publications: u64,
    /// Publication frames queued for sockets since start.
    pub publish_deliveries: u64,
    /// Completed handshakes since start.
    pub handshakes: u64,
    /// Sockets closed with 4100 because their outbound queue was full.
    #[serde(default)]
    pub slow_consumer_disconnects: u64,
    /// Frames dropped because a socket's outbound queue was full (`SlowConsumer::Drop`).
    #[serde(default)]
    pub outbound_dropped: u64,
}

/// Renders Prometheus text: one sample per process (`role`, `id` labels) and restarts per role.
pub(crate) fn render(
    processes: &BTreeMap<(String, usize), Snapshot>,
    restarts: &BTreeMap<String, u64>,
) -> String {
    type Field = fn(&Snapshot) -> u64;
    let series: [(&str, &str, &str, Field); 9] = [
        ("sc_connections", "gauge", "Sockets connected now.", |s| {
            s.connections
        }),
        (
            "sc_subscriptions",
            "gauge",
            "Socket channel subscriptions now.",
            |s| s.subscriptions,
        ),
        (
            "sc_messages_in_total",
            "counter",
            "Inbound WebSocket messages.",
            |s| s.messages_in,
        ),
        (
            "sc_messages_out_total",
            "counter",
            "Outbound WebSocket messages.",
            |s| s.messages_out,
        ),
        (
            "sc_publications_total",
            "counter",
            "Publications received by the process.",
            |s| s.publications,
        ),
        (
            "sc_publish_deliveries_total",
            "counter",
            "Publication frames queued for sockets.",
            |s| s.publish_deliveries,
        ),
        (
            "sc_handshakes_total",
            "counter",
            "Completed handshakes.",
            |s| s.handshakes,
        ),
        (
            "sc_slow_consumer_disconnects_total",
            "counter",
            "Sockets closed with 4100: their outbound queue was full.",
            |s| s.slow_consumer_disconnects,
        ),
        (
            "sc_outbound_dropped_total",
            "counter",
            "Frames dropped: the socket's outbound queue was full (slow_consumer = drop).",
            |s| s.outbound_dropped,
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, field) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for ((role, id), snap) in processes {
            let _ = writeln!(out, "{name}{{role=\"{role}\",id=\"{id}\"}} {}", field(snap));
        }
    }
    let _ = writeln!(
        out,
        "# HELP sc_restarts_total Child processes restarted by the master.\n# TYPE sc_restarts_total counter"
    );
    for role in ["worker", "broker", "balancer"] {
        let n = restarts.get(role).copied().unwrap_or(0);
        let _ = writeln!(out, "sc_restarts_total{{role=\"{role}\"}} {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_sample_per_process_and_restarts_per_role() {
        let mut p = BTreeMap::new();
        p.insert(
            ("worker".to_string(), 0),
            Snapshot {
                connections: 3,
                messages_in: 10,
                ..Default::default()
            },
        );
        p.insert(
            ("worker".to_string(), 1),
            Snapshot {
                connections: 2,
                ..Default::default()
            },
        );
        let mut r = BTreeMap::new();
        r.insert("worker".to_string(), 4);
        let text = render(&p, &r);
        assert!(text.contains("sc_connections{role=\"worker\",id=\"0\"} 3"));
        assert!(text.contains("sc_connections{role=\"worker\",id=\"1\"} 2"));
        assert!(text.contains("sc_messages_in_total{role=\"worker\",id=\"0\"} 10"));
        assert!(text.contains("sc_restarts_total{role=\"worker\"} 4"));
        assert!(text.contains("sc_restarts_total{role=\"broker\"} 0"));
        assert!(text.contains("# TYPE sc_connections gauge"));
    }
}
