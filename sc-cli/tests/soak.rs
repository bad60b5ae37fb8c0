//! `sc bench soak` end to end against a real sc-core server. Its own test binary: the soak
//! measures this process's memory (the server runs here), so no other test may run beside it.

use std::process::Command;

use serde_json::Value;

mod support;

use support::start_server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_churns_without_errors_and_leaves_nothing_behind() {
    let server = start_server().await;
    let url = server.url();

    // The server runs in this test process: its pid is ours.
    let pid = std::process::id().to_string();
    let soak = tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_sc"))
            .args(["bench", "--url", &url, "--duration", "6", "--pid", &pid])
            .args(["soak", "--clients", "40", "--channels", "10"])
            .output()
            .expect("run sc bench soak");
        let line: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
        let summary = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), line, summary)
    })
    .await
    .expect("soak run");
    let (succeeded, report, summary) = soak;
    assert!(succeeded, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(
        report["cycles"].as_u64().is_some_and(|n| n >= 40),
        "{report}"
    );
    assert_eq!(report["connections_after"], 0, "{report}");
    assert_eq!(report["subscriptions_after"], 0, "{report}");
    assert!(report["rss_end_kib"].as_u64().is_some(), "{report}");
    assert!(summary.contains("µs CPU per cycle"), "{summary}");
}
