//! The cluster example runs as master + 2 workers + 1 broker, and chat messages cross workers.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use sc_core::client::Client;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_example_chats_across_workers() {
    let mut master = Command::new(env!("CARGO_BIN_EXE_cluster"))
        .env("SC_PORT", "0")
        .env("SC_HOST", "127.0.0.1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the cluster example");
    let stdout = master.stdout.take().expect("stdout");
    let addr = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("cluster listening on http://")
                .map(|a| a.trim_end_matches('/').to_owned())
        })
        .expect("the master prints its address");
    let url = format!("ws://{addr}/socketcluster/");

    // Both workers serve: /health answers from each in turn.
    let mut pids = std::collections::HashSet::new();
    for _ in 0..40 {
        let health = http_get(&addr, "/health").await;
        let v: Value =
            serde_json::from_str(health.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap_or_default();
        if let Some(pid) = v["pid"].as_u64() {
            pids.insert(pid);
        }
        if pids.len() == 2 {
            break;
        }
    }
    assert_eq!(pids.len(), 2, "two worker processes answer");

    // Six members in rooms/1 (spread over the workers by the kernel); one message reaches all.
    let mut members = Vec::new();
    for i in 0..6 {
        let c = Client::connect(&url).await.expect("connects");
        let () = c
            .invoke("login", &json!(format!("user{i}")))
            .await
            .expect("login");
        let sub = c.subscribe("rooms/1").await.expect("join");
        members.push((c, sub));
    }
    let () = members[0]
        .0
        .invoke("chat", &json!({"room": 1, "text": "hello all"}))
        .await
        .expect("chat");
    for (_, sub) in members.iter_mut() {
        let got = tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .expect("delivered")
            .expect("open");
        assert!(got["at"].is_u64(), "a timestamp: {got}");
        assert_eq!(
            (&got["from"], &got["text"]),
            (&json!("user0"), &json!("hello all"))
        );
    }
    let _ = stop(&mut master);
}

async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out).await;
    out
}

/// Stops the master (closing its stdin makes every child exit too).
fn stop(master: &mut std::process::Child) -> std::io::Result<()> {
    drop(master.stdin.take());
    master.kill()?;
    master.wait().map(|_| ())
}
