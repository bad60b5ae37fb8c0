//! `sc bench` end to end against a real sc-core server (short runs: this checks the tool works
//! and reports exact counts, it measures nothing).

use std::process::Command;

use serde_json::Value;

mod support;

use sc_core::prelude::*;
use sc_core::testing::TestServer;
use support::start_server;

/// Runs `sc bench ARGS` against `url` and returns its JSON line.
fn sc_bench(url: &str, args: &[&str]) -> Value {
    sc_bench_report(url, args).0
}

/// Runs `sc bench ARGS` against `url` and returns its JSON line and its human summary (stderr).
fn sc_bench_report(url: &str, args: &[&str]) -> (Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sc"))
        .args(["bench", "--url", url, "--duration", "1"])
        .args(args)
        .output()
        .expect("run sc bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sc bench {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = serde_json::from_str(stdout.trim()).expect("one JSON line on stdout");
    (json, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_scenarios_run_end_to_end_without_loss() {
    let server = start_server().await;
    let url = server.url();

    let url2 = url.clone();
    let fanout =
        tokio::task::spawn_blocking(move || sc_bench(&url2, &["fanout", "--subscribers", "20"]))
            .await
            .expect("fanout run");
    let published = fanout["published"].as_u64().expect("published");
    assert!(published > 0, "{fanout}");
    assert_eq!(fanout["lost"], 0, "{fanout}");
    assert_eq!(fanout["unexpected"], 0, "{fanout}");
    assert_eq!(
        fanout["delivered"].as_u64(),
        Some(published * 20),
        "{fanout}"
    );

    // The server runs in this process: `--pid` adds its CPU per message to the summary.
    let url2 = url.clone();
    let pid = std::process::id().to_string();
    let (rpc, summary) = tokio::task::spawn_blocking(move || {
        sc_bench_report(
            &url2,
            &["rpc", "--sockets", "4", "--inflight", "2", "--pid", &pid],
        )
    })
    .await
    .expect("rpc run");
    assert!(rpc["acks"].as_u64().is_some_and(|n| n > 0), "{rpc}");
    assert_eq!(rpc["failed"], 0, "{rpc}");
    assert!(rpc["server_cpu_us_per_ack"].is_number(), "{rpc}");
    assert!(summary.contains("µs CPU per ack"), "{summary}");

    let url2 = url.clone();
    let connect = tokio::task::spawn_blocking(move || {
        sc_bench(&url2, &["connect", "--sockets", "50", "--hold", "0"])
    })
    .await
    .expect("connect run");
    assert_eq!(connect["sockets"], 50, "{connect}");

    // Every socket at once (a small storm: this test checks the tool, not the machine).
    let url2 = url.clone();
    let storm = tokio::task::spawn_blocking(move || {
        sc_bench(&url2, &["storm", "--sockets", "300", "--hold", "0"])
    })
    .await
    .expect("storm run");
    assert_eq!(storm["scenario"], "storm", "{storm}");
    assert_eq!(storm["sockets"], 300, "{storm}");
    assert_eq!(storm["lost"], 0, "{storm}");
    assert!(storm["handshake_ms"]["p99"].is_number(), "{storm}");

    // The lockstep workloads of bench/callgrind.sh, each a few times.
    for (op, deliveries) in [("handshake", 0), ("invoke", 0), ("publish", 3 * 2)] {
        let url2 = url.clone();
        let exact = tokio::task::spawn_blocking(move || {
            sc_bench(
                &url2,
                &["exact", "--op", op, "--count", "3", "--subscribers", "2"],
            )
        })
        .await
        .expect("exact run");
        assert_eq!(exact["op"], op, "{exact}");
        assert_eq!(exact["count"], 3, "{exact}");
        assert_eq!(exact["deliveries"], deliveries, "{exact}");
    }
}

/// Runs `sc bench ARGS` against `url`, expecting it to fail; returns its stderr.
fn sc_bench_fails(url: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sc"))
        .args(["bench", "--url", url, "--duration", "5"])
        .args(args)
        .output()
        .expect("run sc bench");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "sc bench {args:?}: {stderr}");
    stderr
}

/// Like the chat example: no `echo` handler, and only rooms may be subscribed to. Every scenario
/// stops at the server's first refusal and names it, with the way to a server it can measure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_against_a_server_without_the_handler_or_channels_stops_with_its_reason() {
    async fn rooms_only(Channel(name): Channel) -> Result<(), ScError> {
        if name.starts_with("rooms/") {
            return Ok(());
        }
        Err(ScError::new(
            "InvalidChannelError",
            format!("{name} is not a room"),
        ))
    }
    let server =
        TestServer::start_app(App::new().middleware(MiddlewareKind::Subscribe, rooms_only)).await;
    let url = server.url();
    // Subscribing is allowed, publishing from a client is not: the publishers' first answer.
    async fn server_publishes_only() -> Result<(), ScError> {
        Err(ScError::new(
            "PublishRefusedError",
            "only the server publishes",
        ))
    }
    let read_only = TestServer::start_app(
        App::new().middleware(MiddlewareKind::PublishIn, server_publishes_only),
    )
    .await;

    for (url, args, reason) in [
        (
            url.clone(),
            &["rpc", "--sockets", "4", "--inflight", "8"][..],
            "UnhandledEventError",
        ),
        (
            url.clone(),
            &["fanout", "--subscribers", "4"][..],
            "InvalidChannelError",
        ),
        (
            url.clone(),
            &["soak", "--clients", "2"][..],
            "InvalidChannelError",
        ),
        (
            read_only.url(),
            &["fanout", "--subscribers", "2"][..],
            "PublishRefusedError",
        ),
        (
            url.clone(),
            &[
                "channels",
                "--channels",
                "2",
                "--subscribers",
                "2",
                "--publishers",
                "2",
            ][..],
            "InvalidChannelError",
        ),
    ] {
        let started = std::time::Instant::now();
        let stderr = tokio::task::spawn_blocking(move || sc_bench_fails(&url, args))
            .await
            .expect("bench run");
        let line = stderr.trim();
        assert!(!line.contains('\n'), "one line: {stderr}");
        assert!(line.contains(reason), "{args:?} names {reason}: {stderr}");
        assert!(line.contains("cargo run --release -p echo"), "{stderr}");
        assert!(!line.contains("lost"), "{stderr}");
        // At once, not after the measured 5 s.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(4),
            "{args:?}"
        );
    }
}
