//! `sc bench` end to end against a real sc-core server (short runs: this checks the tool works
//! and reports exact counts, it measures nothing).

use std::process::Command;

use serde_json::Value;

mod support;

use support::start_server;

/// Runs `sc bench ARGS` against `url` and returns its JSON line.
fn sc_bench(url: &str, args: &[&str]) -> Value {
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
    serde_json::from_str(stdout.trim()).expect("one JSON line on stdout")
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

    let url2 = url.clone();
    let rpc = tokio::task::spawn_blocking(move || {
        sc_bench(&url2, &["rpc", "--sockets", "4", "--inflight", "2"])
    })
    .await
    .expect("rpc run");
    assert!(rpc["acks"].as_u64().is_some_and(|n| n > 0), "{rpc}");
    assert_eq!(rpc["failed"], 0, "{rpc}");

    let url2 = url.clone();
    let connect = tokio::task::spawn_blocking(move || {
        sc_bench(&url2, &["connect", "--sockets", "50", "--hold", "0"])
    })
    .await
    .expect("connect run");
    assert_eq!(connect["sockets"], 50, "{connect}");
}
