//! The redis example: two nodes on two ports share the chat through the Redis on 127.0.0.1:6379.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sc_core::client::Client;
use serde_json::json;

struct Node(Child, String);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node(prefix: &str) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_redis-example"))
        .env("SC_PORT", "0")
        .env("SC_HOST", "127.0.0.1")
        .env("SC_AUTH_KEY", "shared-by-both-nodes")
        .env("SC_REDIS_PREFIX", prefix)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a node");
    let stdout = child.stdout.take().expect("stdout");
    let addr = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("redis node listening on http://").map(|a| a.trim_end_matches('/').to_owned()))
        .unwrap_or_else(|| panic!("the node did not start: is Redis running on 127.0.0.1:6379? (redis-server --daemonize yes --port 6379 --save \"\")"));
    Node(child, format!("ws://{addr}/socketcluster/"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_chat_through_redis() {
    let prefix = format!("example:{}:", std::process::id());
    let (a, b) = (node(&prefix), node(&prefix));
    let ann = Client::connect(&a.1).await.expect("connects to node a");
    let bob = Client::connect(&b.1).await.expect("connects to node b");
    let () = ann.invoke("login", &json!("ann")).await.expect("login");
    let () = bob.invoke("login", &json!("bob")).await.expect("login");
    let mut on_a = ann.subscribe("rooms/1").await.expect("join on a");
    let mut on_b = bob.subscribe("rooms/1").await.expect("join on b");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let () = bob
        .invoke("chat", &json!({"room": 1, "text": "across nodes"}))
        .await
        .expect("chat");
    for sub in [&mut on_a, &mut on_b] {
        let got = tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .expect("delivered")
            .expect("open");
        assert!(got["at"].is_u64(), "a timestamp: {got}");
        assert_eq!(
            (&got["from"], &got["text"]),
            (&json!("bob"), &json!("across nodes"))
        );
    }
    // Exactly once: nothing else arrives.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), on_a.recv())
            .await
            .is_err()
    );
}
