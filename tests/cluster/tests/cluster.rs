//! The process model with real child processes: the compat server started as a cluster (master,
//! workers, brokers, a balancer) on 127.0.0.1, driven by the Rust client; workers and brokers
//! are killed with SIGKILL to prove recovery. Counts are asserted, not just "no crash".

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// Shared with the other process-test package (tests/cluster, tests/redis).
#[path = "../../support/mod.rs"]
mod support;

use sc_core::client::{Backoff, Client, ClientEvent, ClientOptions, Subscription};
use serde_json::{json, Value};
use support::{kv, take_exactly};

/// A running cluster: the master process, its output (collected), its port. Killed on drop.
struct Cluster {
    master: Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Cluster {
    fn start(workers: usize, brokers: usize, balancers: usize) -> Self {
        Self::start_with(workers, brokers, balancers, &[])
    }

    fn start_with(workers: usize, brokers: usize, balancers: usize, env: &[(&str, &str)]) -> Self {
        let cmd = Command::new(env!("CARGO_BIN_EXE_cluster-compat-server"));
        Self::launch(cmd, workers, brokers, balancers, env)
    }

    /// The master started by a shell that first sets its umask to 000 (and then `exec`s it, so
    /// the master is the shell's pid): every file it creates would be world-writable.
    fn start_under_umask_000(workers: usize, brokers: usize) -> Self {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("umask 000 && exec \"$0\"")
            .arg(env!("CARGO_BIN_EXE_cluster-compat-server"));
        Self::launch(cmd, workers, brokers, 0, &[])
    }

    fn launch(
        mut cmd: Command,
        workers: usize,
        brokers: usize,
        balancers: usize,
        env: &[(&str, &str)],
    ) -> Self {
        let mut master = cmd
            .envs(env.iter().copied())
            .env("SC_PORT", "0")
            .env("SC_HOST", "127.0.0.1")
            .env("SC_WORKERS", workers.to_string())
            .env("SC_BROKERS", brokers.to_string())
            .env("SC_BALANCERS", balancers.to_string())
            .env("SC_PING_INTERVAL", "1000")
            .env("SC_PING_TIMEOUT", "3000")
            .env("SC_SHUTDOWN_TIMEOUT", "1000")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the compat server as a cluster");
        let stderr = master.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("[sc master] listening on ") {
                    let port = addr
                        .split(':')
                        .nth(1)
                        .and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next())
                        .and_then(|p| p.parse::<u16>().ok());
                    let _ = tx.send(port);
                }
                sink.lock().expect("log").push(line);
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .ok()
            .flatten()
            .expect("the master announces its port");
        Self { master, port, log }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/socketcluster/", self.port)
    }

    /// Child pids of the master with the given `SC_ROLE`.
    fn children(&self, role: &str) -> Vec<i32> {
        let master = self.master.id();
        let mut pids = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return pids;
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit(") ")
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid != Some(master) || stat.contains(") Z ") {
                continue;
            }
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let wanted = format!("SC_ROLE={role}");
            if environ.split(|b| *b == 0).any(|kv| kv == wanted.as_bytes()) {
                pids.push(pid);
            }
        }
        pids
    }

    fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// Waits (at most `within`) for a line of the master's output containing `needle`.
    async fn wait_for_line(&self, needle: &str, within: Duration) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(line) = self
                .log
                .lock()
                .expect("log")
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no line with {needle:?} within {within:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The pid of the last process the master started for `role` (`worker#0`), from its log.
    fn started_pid(&self, role: &str) -> i32 {
        let prefix = format!("[sc master] started {role} (pid ");
        self.log
            .lock()
            .expect("log")
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix(&prefix)?.strip_suffix(')')?.parse().ok())
            .expect("the master logged the start")
    }

    /// SIGTERMs the master and waits for it: its exit status and how long it took.
    fn terminate_and_wait(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let start = std::time::Instant::now();
        signal(self.master.id() as i32, nix::sys::signal::Signal::SIGTERM);
        loop {
            if let Some(status) = self.master.try_wait().expect("wait") {
                return (status, start.elapsed());
            }
            assert!(
                start.elapsed() < within,
                "the master did not exit within {within:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The master's run directory (`$TMPDIR/sc-<master pid>-<hex>`).
    fn run_dir(&self) -> std::path::PathBuf {
        let prefix = format!("sc-{}-", self.master.id());
        std::fs::read_dir(std::env::temp_dir())
            .expect("temp dir")
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .expect("the master's run directory")
    }
}

fn signal(pid: i32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).expect("signal");
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.master.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        for _ in 0..100 {
            if let Ok(Some(_)) = self.master.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}

fn sigkill(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL");
}

async fn client(url: &str) -> Client {
    let mut o = ClientOptions::new(url);
    o.ack_timeout = Duration::from_secs(3);
    o.connect_timeout = Duration::from_secs(3);
    o.backoff = Backoff {
        initial_delay: Duration::from_millis(100),
        randomness: Duration::from_millis(100),
        multiplier: 1.5,
        max_delay: Duration::from_millis(1000),
    };
    Client::connect_with(o).await.expect("client connects")
}

async fn worker_pid(c: &Client) -> i64 {
    let stats: Value = c.invoke("stats", &()).await.expect("stats");
    stats["pid"].as_i64().expect("pid")
}

/// Connects clients until they cover `workers` distinct worker processes.
async fn clients_on_every_worker(url: &str, workers: usize) -> Vec<(Client, i64)> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for _ in 0..40 {
        let c = client(url).await;
        let pid = worker_pid(&c).await;
        seen.insert(pid);
        out.push((c, pid));
        if seen.len() == workers && out.len() >= workers * 2 {
            return out;
        }
    }
    panic!("clients reached only {} of {workers} workers", seen.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_cross_workers_exactly_once_and_survive_worker_and_broker_kills() {
    let cluster = Cluster::start(2, 2, 1);
    let url = cluster.url();
    let clients = clients_on_every_worker(&url, 2).await;
    let pids: HashSet<i64> = clients.iter().map(|(_, p)| *p).collect();
    assert_eq!(pids.len(), 2, "two worker processes serve clients");

    // Several channels, so both brokers own some of them.
    let channels: Vec<String> = (0..6).map(|i| format!("room-{i}")).collect();
    let mut subs: Vec<(usize, Subscription)> = Vec::new();
    for (i, (c, _)) in clients.iter().enumerate() {
        for ch in &channels {
            subs.push((i, c.subscribe(ch).await.expect("subscribe")));
        }
    }
    // Every client publishes 3 messages on every channel.
    for (i, (c, _)) in clients.iter().enumerate() {
        for ch in &channels {
            for n in 0..3 {
                c.publish(ch, &json!({"from": i, "n": n}))
                    .await
                    .expect("publish");
            }
        }
    }
    let expected = clients.len() * 3;
    for (_, sub) in subs.iter_mut() {
        let got = take_exactly(sub, expected).await;
        let distinct: HashSet<String> = got.iter().map(|v| v.to_string()).collect();
        assert_eq!(
            distinct.len(),
            expected,
            "no duplicates on {}",
            sub.channel()
        );
    }

    // SIGKILL the worker serving the first client.
    let (victim_client, victim_pid) = &clients[0];
    let mut events = victim_client.events();
    sigkill(*victim_pid as i32);
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(ClientEvent::Connect { .. }) = events.recv().await {
                break;
            }
        }
    })
    .await
    .expect("the client of the killed worker reconnects");
    let new_pid = worker_pid(victim_client).await;
    assert_ne!(new_pid, *victim_pid, "now served by a live worker");
    // The master respawns the worker.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cluster.children("worker").len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker respawned:\n{}",
            cluster.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        cluster.log_text().contains("killed by SIGKILL"),
        "{}",
        cluster.log_text()
    );

    // Every client (reconnected or not) is subscribed again; publish once more.
    let publisher = client(&url).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for ch in &channels {
        publisher
            .publish(ch, &json!({"after": "worker kill"}))
            .await
            .expect("publish");
    }
    for (_, sub) in subs.iter_mut() {
        let got = take_exactly(sub, 1).await;
        assert_eq!(got[0], json!({"after": "worker kill"}));
    }

    // SIGKILL a broker: it is respawned, workers resubscribe, pub/sub resumes on every channel.
    let brokers = cluster.children("broker");
    assert_eq!(brokers.len(), 2, "two brokers");
    sigkill(brokers[0]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut delivered: HashMap<String, bool> = HashMap::new();
    while delivered.len() < channels.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pub/sub did not resume:\n{}",
            cluster.log_text()
        );
        for ch in &channels {
            if delivered.contains_key(ch) {
                continue;
            }
            if publisher.publish(ch, &json!({"probe": ch})).await.is_ok() {
                delivered.insert(ch.clone(), true);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Drain probes, then one final message per channel must reach every subscriber exactly once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (_, sub) in subs.iter_mut() {
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
        }
    }
    for ch in &channels {
        publisher
            .publish(ch, &json!({"after": "broker kill"}))
            .await
            .expect("publish");
    }
    for (_, sub) in subs.iter_mut() {
        let got = take_exactly(sub, 1).await;
        assert_eq!(got[0], json!({"after": "broker kill"}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_consistent_and_tokens_are_valid_on_every_worker() {
    let cluster = Cluster::start(2, 2, 1);
    let clients = clients_on_every_worker(&cluster.url(), 2).await;
    let a = clients.iter().find(|(_, p)| *p == clients[0].1).expect("a");
    let b = clients
        .iter()
        .find(|(_, p)| *p != clients[0].1)
        .expect("a client on the other worker");

    // A write on one worker is read on the other; keys spread over both brokers.
    for i in 0..8 {
        let key = format!("key-{i}");
        kv(&a.0, json!({"op": "set", "key": key, "value": {"n": i}})).await;
        assert_eq!(
            kv(&b.0, json!({"op": "get", "key": key})).await,
            json!({"n": i})
        );
    }
    assert_eq!(kv(&b.0, json!({"op": "count"})).await, json!(8));

    // Concurrent appends from every client on both workers: atomic per key, none lost.
    let per_client = 10;
    let mut tasks = Vec::new();
    for (c, _) in &clients {
        for n in 0..per_client {
            tasks.push(kv(c, json!({"op": "add", "key": "list", "value": n})));
        }
    }
    let indices: Vec<Value> = futures_util::future::join_all(tasks).await;
    let total = clients.len() * per_client;
    let distinct: HashSet<i64> = indices.iter().filter_map(Value::as_i64).collect();
    assert_eq!(distinct.len(), total, "every append got its own index");
    let list = kv(&a.0, json!({"op": "get", "key": "list"})).await;
    assert_eq!(list.as_array().map(Vec::len), Some(total));

    // Remove and expiry seen from the other worker.
    assert_eq!(
        kv(&b.0, json!({"op": "remove", "key": "key-0"})).await,
        json!({"n": 0})
    );
    assert_eq!(
        kv(&a.0, json!({"op": "hasKey", "key": "key-0"})).await,
        json!(false)
    );
    assert_eq!(
        kv(
            &a.0,
            json!({"op": "expire", "keys": ["key-1", "nope"], "ms": 100})
        )
        .await,
        json!(1)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        kv(&b.0, json!({"op": "get", "key": "key-1"})).await,
        Value::Null
    );

    // A token signed by one worker authenticates on the other (one cluster-wide secret).
    let () =
        a.0.invoke("login", &json!({"user": "ann"}))
            .await
            .expect("login");
    let token = a.0.auth_token().expect("a token after login");
    let status = b.0.authenticate(&token).await.expect("authenticate");
    assert!(status.is_authenticated, "{:?}", status.auth_error);
    let who: Value = b.0.invoke("whoami", &()).await.expect("whoami");
    assert_eq!(who["authToken"]["user"], json!("ann"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_with_an_error_and_the_worker_goes_on() {
    let cluster = Cluster::start(2, 1, 0);
    let c = client(&cluster.url()).await;
    let other = client(&cluster.url()).await;
    let pid = worker_pid(&c).await;
    let err = c
        .invoke::<_, Value>("boom", &())
        .await
        .expect_err("boom fails");
    assert!(err.to_string().contains("ServerError"), "{err}");
    // The same socket and process go on; so does every other socket.
    assert_eq!(worker_pid(&c).await, pid);
    let echoed: Value = other.invoke("echo", &json!(5)).await.expect("echo");
    assert_eq!(echoed, json!(5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = cluster.log_text();
    assert!(!log.contains("exited"), "{log}");
    // The central log: the worker's panic reached the master's output, tagged with its role.
    assert!(
        log.lines().any(
            |l| l.starts_with("[worker#") && l.contains("deliberate panic in the boom handler")
        ),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_worker_on_error_replaces_the_worker_after_answering() {
    let cluster = Cluster::start_with(2, 1, 0, &[("SC_CRASH_WORKER_ON_ERROR", "1")]);
    let c = client(&cluster.url()).await;
    let pid = worker_pid(&c).await;
    let mut events = c.events();
    c.invoke::<_, Value>("boom", &())
        .await
        .expect_err("the call is answered with an error first");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(ClientEvent::Connect { .. }) = events.recv().await {
                break;
            }
        }
    })
    .await
    .expect("the client reconnects to the replacement worker");
    assert_ne!(worker_pid(&c).await, pid, "another worker process serves");
    let log = cluster.log_text();
    assert!(log.contains("exited: exit code 70; restarting"), "{log}");
    // The master starts a replacement: two live workers again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cluster.children("worker").len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            cluster.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The test CA and certificate of `sc-core/tests/keys`.
fn key_file(name: &str) -> String {
    format!(
        "{}/../../sc-core/tests/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn trust_test_ca() -> Arc<tokio_rustls::rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(key_file("tls-ca.pem")).expect("CA")
    {
        roots.add(cert.expect("CA cert")).expect("trust anchor");
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    Arc::new(
        tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancers_terminate_tls_in_front_of_every_worker() {
    let (cert, key) = (key_file("tls-cert.pem"), key_file("tls-key.pem"));
    let cluster = Cluster::start_with(2, 1, 1, &[("SC_TLS_CERT", &cert), ("SC_TLS_KEY", &key)]);
    let url = format!("wss://localhost:{}/socketcluster/", cluster.port);
    let mut pids = HashSet::new();
    for _ in 0..6 {
        let mut o = ClientOptions::new(&url);
        o.tls = Some(trust_test_ca());
        o.connect_timeout = Duration::from_secs(5);
        let c = Client::connect_with(o)
            .await
            .expect("wss through the balancer");
        let answer: Value = c.invoke("echo", &json!("secure")).await.expect("echo");
        assert_eq!(answer, json!("secure"));
        pids.insert(worker_pid(&c).await);
    }
    assert_eq!(
        pids.len(),
        2,
        "the balancer spreads connections over both workers"
    );
}

/// A plain HTTP GET through the cluster's port; the body.
async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("request");
    let mut response = String::new();
    let _ = tcp.read_to_string(&mut response).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// A port `p` with `p + 1` free as well (for two workers' admin ports).
fn two_free_ports() -> u16 {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = first.local_addr().expect("addr").port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// `/health` of each worker on its admin port (`admin` + id): answered by that worker.
async fn admin_health_per_worker(admin: u16) -> Vec<String> {
    let mut pids = Vec::new();
    for id in 0..2u16 {
        let health = http_get(admin + id, "/health").await;
        assert!(
            health.contains(&format!("\"role\":\"worker#{id}\"")),
            "{health}"
        );
        let pid = health
            .split("\"pid\":")
            .nth(1)
            .and_then(|p| p.split(',').next());
        pids.push(pid.expect("pid").to_owned());
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_rolling_restart_and_graceful_shutdown() {
    // Each worker serves the admin address on its port + id.
    let admin = two_free_ports();
    let admin_addr = format!("127.0.0.1:{admin}");
    let mut cluster = Cluster::start_with(2, 1, 0, &[("SC_ADMIN_ADDR", admin_addr.as_str())]);
    let clients = clients_on_every_worker(&cluster.url(), 2).await;
    let mut sub = clients[0].0.subscribe("news").await.expect("subscribe");
    clients[1]
        .0
        .publish("news", &json!(1))
        .await
        .expect("publish");
    take_exactly(&mut sub, 1).await;

    // Children report every second; wait until the master has both workers' counters.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let text = http_get(cluster.port, "/metrics").await;
        let live = |id: usize| {
            text.lines()
                .find(|l| l.starts_with(&format!("sc_connections{{role=\"worker\",id=\"{id}\"}}")))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        if live(0) + live(1) >= clients.len() as u64 {
            break text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        metrics.contains("sc_restarts_total{role=\"worker\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE sc_publish_deliveries_total counter"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sc_subscriptions{role=\"worker\""),
        "{metrics}"
    );
    let health = http_get(cluster.port, "/health").await;
    assert!(health.contains("\"role\":\"worker#"), "{health}");
    let admin_pids = admin_health_per_worker(admin).await;
    let cluster_metrics = http_get(admin + 1, "/metrics").await;
    assert!(
        cluster_metrics.contains("sc_connections{role=\"worker\",id=\"0\"}"),
        "{cluster_metrics}"
    );

    // SIGUSR2: every worker is replaced, one at a time.
    let before: HashSet<i32> = cluster.children("worker").into_iter().collect();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cluster.master.id() as i32),
        nix::sys::signal::Signal::SIGUSR2,
    )
    .expect("SIGUSR2");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cluster.log_text().contains("rolling restart done") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            cluster.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after: HashSet<i32> = cluster.children("worker").into_iter().collect();
    assert_eq!(after.len(), 2, "{}", cluster.log_text());
    assert!(before.is_disjoint(&after), "{before:?} vs {after:?}");
    // The clients were moved to the new workers.
    let c = client(&cluster.url()).await;
    let answer: Value = c.invoke("echo", &json!("after")).await.expect("echo");
    assert_eq!(answer, json!("after"));
    // The replacements bound the admin ports while the old workers still held them.
    let new_pids = admin_health_per_worker(admin).await;
    for (old, new) in admin_pids.iter().zip(&new_pids) {
        assert_ne!(old, new, "{}", cluster.log_text());
    }

    // SIGTERM: the master stops its children and exits cleanly within the shutdown bound.
    let children: Vec<i32> = cluster
        .children("worker")
        .into_iter()
        .chain(cluster.children("broker"))
        .collect();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cluster.master.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = cluster.master.try_wait().expect("wait") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "master did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    // Every child left on its own (issue 16: they were SIGKILLed after shutdown_timeout + 1 s).
    assert!(
        !cluster.log_text().contains("SIGKILL"),
        "{}",
        cluster.log_text()
    );
    for pid in children {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "child {pid} outlived the master"
        );
    }
}

/// Issue 16: children exit on their own when asked (no SIGKILL), in a rolling restart (which
/// now replaces balancers too) and at shutdown, so the master is done in well under its bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_and_sigterm_end_every_child_without_sigkill() {
    let mut cluster = Cluster::start(2, 1, 1);
    let c = client(&cluster.url()).await;
    let answer: Value = c.invoke("echo", &json!("before")).await.expect("echo");
    assert_eq!(answer, json!("before"));

    let workers: HashSet<i32> = cluster.children("worker").into_iter().collect();
    let balancers: HashSet<i32> = cluster.children("balancer").into_iter().collect();
    assert_eq!((workers.len(), balancers.len()), (2, 1));
    signal(
        cluster.master.id() as i32,
        nix::sys::signal::Signal::SIGUSR2,
    );
    // Three replacements; each old child exits within shutdown_timeout (1 s), not at the
    // SIGKILL a second after it.
    cluster
        .wait_for_line("rolling restart done", Duration::from_secs(15))
        .await;
    let now_workers: HashSet<i32> = cluster.children("worker").into_iter().collect();
    let now_balancers: HashSet<i32> = cluster.children("balancer").into_iter().collect();
    assert!(workers.is_disjoint(&now_workers), "{}", cluster.log_text());
    assert!(
        balancers.is_disjoint(&now_balancers),
        "{}",
        cluster.log_text()
    );
    assert_eq!((now_workers.len(), now_balancers.len()), (2, 1));
    let c = client(&cluster.url()).await;
    let answer: Value = c.invoke("echo", &json!("after")).await.expect("echo");
    assert_eq!(answer, json!("after"));
    drop(c);

    // Three stages with shutdown_timeout 1 s: SIGKILLed stragglers took (1 s + 1 s) x 3.
    let (status, took) = cluster.terminate_and_wait(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let log = cluster.log_text();
    assert!(!log.contains("SIGKILL"), "{log}");
    assert!(
        took < Duration::from_secs(4),
        "shutdown took {took:?}:\n{log}"
    );
}

/// Issue 16: behind balancers, a SIGTERM reaches clients as the workers' 1001: the master
/// stops the workers first and a stopping balancer relays what it has. (The balancers used to
/// go first and cut every client's connection: 1006.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_balancers_a_sigterm_reaches_clients_as_1001() {
    let mut cluster = Cluster::start(2, 1, 1);
    let c = client(&cluster.url()).await;
    let answer: Value = c.invoke("echo", &json!("up")).await.expect("echo");
    assert_eq!(answer, json!("up"));
    let mut events = c.events();
    signal(
        cluster.master.id() as i32,
        nix::sys::signal::Signal::SIGTERM,
    );
    let code = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.recv().await {
                Ok(sc_core::client::ClientEvent::Disconnect { code, .. }) => return code,
                Ok(_) => {}
                Err(e) => panic!("events ended: {e}"),
            }
        }
    })
    .await
    .expect("the client saw its connection close");
    assert_eq!(code, 1001, "{}", cluster.log_text());
    let (status, _) = cluster.terminate_and_wait(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(
        !cluster.log_text().contains("SIGKILL"),
        "{}",
        cluster.log_text()
    );
}

/// Issue 16: a worker that stops making progress (SIGSTOP) is noticed from its missing
/// heartbeats, killed, said so in the log, counted as a restart and replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_is_killed_and_replaced_after_its_heartbeat_timeout() {
    let cluster = Cluster::start_with(2, 1, 0, &[("SC_HEARTBEAT_TIMEOUT", "3000")]);
    let first = clients_on_every_worker(&cluster.url(), 2).await;
    drop(first);
    let hung = cluster.started_pid("worker#0");
    signal(hung, nix::sys::signal::Signal::SIGSTOP);
    let line = cluster
        .wait_for_line("sent no heartbeat", Duration::from_secs(10))
        .await;
    assert!(
        line.starts_with(&format!(
            "[sc master] worker#0 (pid {hung}) sent no heartbeat for"
        )) && line.ends_with("killing it (SIGKILL) and restarting"),
        "{line}"
    );
    cluster
        .wait_for_line("worker#0 exited: killed by SIGKILL", Duration::from_secs(5))
        .await;
    // A new worker#0 serves: clients reach two live workers, neither of them the stopped one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cluster.started_pid("worker#0") == hung || cluster.children("worker").len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            cluster.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let clients = clients_on_every_worker(&cluster.url(), 2).await;
    assert!(clients.iter().all(|(_, pid)| *pid != i64::from(hung)));
    let metrics = http_get(cluster.port, "/metrics").await;
    assert!(
        metrics.contains("sc_restarts_total{role=\"worker\"} 1"),
        "{metrics}"
    );
    // Only the stopped worker was taken as hung.
    assert_eq!(cluster.log_text().matches("sent no heartbeat").count(), 1);
}

/// Reads what a connection sends until it closes (at most 3 s): a refused connection is closed
/// at once, having sent nothing.
async fn read_until_closed(stream: &mut tokio::net::UnixStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut got))
        .await
        .expect("the connection is closed")
        .ok();
    got
}

/// A broker frame: `u32` length, then the payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Issue 16: the run directory and sockets are the master's user's only whatever the umask, and
/// a local process without the run's secret cannot use a broker or the control socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_without_the_run_secret_cannot_use_brokers_or_the_control_socket() {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::AsyncWriteExt;
    let cluster = Cluster::start_under_umask_000(2, 1);
    let c = client(&cluster.url()).await;
    let dir = cluster.run_dir();
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    let sockets: Vec<_> = std::fs::read_dir(&dir)
        .expect("run dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(sockets.len(), 2, "broker-0 and master: {sockets:?}");
    for socket in &sockets {
        assert_eq!(mode(socket), 0o600, "{}", socket.display());
    }

    let mut kv_count = b"\x05\0\0\0\0\0\0\0\x01".to_vec();
    kv_count.extend_from_slice(br#"{"op":"count"}"#);
    let mut publish = b"\x03\0\0\0\0\0\0\0\x02\0\0\0\x04news".to_vec();
    publish
        .extend_from_slice(br##"{"event":"#publish","data":{"channel":"news","data":"forged"}}"##);
    // The hello of the previous protocol (no secret), then one with a guessed secret.
    let hellos: [&[u8]; 2] = [b"\x00SCB\x01", b"\x00SCB\x02guess"];
    let mut news = c.subscribe("news").await.expect("subscribe");
    for hello in hellos {
        let mut stranger = tokio::net::UnixStream::connect(dir.join("broker-0.sock"))
            .await
            .expect("connect");
        let mut bytes = frame(hello);
        bytes.extend(frame(&kv_count));
        bytes.extend(frame(&publish));
        // The broker may close before reading it all; what counts is what it answers.
        let _ = stranger.write_all(&bytes).await;
        assert_eq!(read_until_closed(&mut stranger).await, b"", "{hello:?}");
    }
    let mut stranger = tokio::net::UnixStream::connect(dir.join("master.sock"))
        .await
        .expect("connect");
    let _ = stranger.write_all(b"\"metrics\"\n").await;
    assert_eq!(read_until_closed(&mut stranger).await, b"", "no metrics");

    // The cluster itself goes on: the store answers, and no forged publication arrived.
    kv(&c, json!({"op": "set", "key": "k", "value": 1})).await;
    assert_eq!(kv(&c, json!({"op": "get", "key": "k"})).await, json!(1));
    c.publish("news", &json!("real")).await.expect("publish");
    assert_eq!(take_exactly(&mut news, 1).await, vec![json!("real")]);
}

/// History on every channel (`SC_HISTORY_SIZE`): a subscriber whose worker is SIGKILLed, twice,
/// while another client publishes a numbered stream through another worker, gets every number
/// exactly once and in order (its client recovers from the broker's history on reconnect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_carries_a_subscriber_across_worker_kills_exactly_once_in_order() {
    let cluster = Cluster::start_with(
        2,
        2,
        1,
        &[("SC_HISTORY_SIZE", "10000"), ("SC_HISTORY_TTL", "60")],
    );
    let url = cluster.url();
    let mut clients = clients_on_every_worker(&url, 2).await.into_iter();
    let (subscriber, _) = clients.next().expect("a client");
    let mut sub_pid = worker_pid(&subscriber).await;
    let (publisher, pub_pid) = clients
        .find(|(_, pid)| *pid != sub_pid)
        .expect("a client on the other worker");
    let mut events = subscriber.events();
    let mut sub = subscriber.subscribe("stream-1").await.expect("subscribe");

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let publishing = tokio::spawn(async move {
        let mut n = 0u64;
        while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
            n += 1;
            publisher
                .publish("stream-1", &n)
                .await
                .unwrap_or_else(|e| panic!("publish {n} failed: {e}"));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        n
    });

    let mut got: Vec<u64> = Vec::new();
    for round in 0..2 {
        got.extend(numbers(&mut sub, 100).await);
        // SIGKILL the subscriber's worker (never the publisher's) and wait for its reconnect.
        assert_ne!(sub_pid, pub_pid);
        sigkill(sub_pid as i32);
        tokio::time::timeout(Duration::from_secs(10), async {
            while !matches!(events.recv().await, Ok(ClientEvent::Connect { .. })) {}
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: no reconnect:\n{}", cluster.log_text()));
        got.extend(numbers(&mut sub, 100).await);
        // Back on a worker other than the publisher's (the master respawned the killed one).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            sub_pid = worker_pid(&subscriber).await;
            if sub_pid != pub_pid {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}",
                cluster.log_text()
            );
            subscriber.reconnect();
            tokio::time::timeout(Duration::from_secs(10), async {
                while !matches!(events.recv().await, Ok(ClientEvent::Connect { .. })) {}
            })
            .await
            .expect("reconnects");
            got.extend(numbers(&mut sub, 20).await);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let last = publishing.await.expect("publisher");
    let rest = last as usize - got.len();
    got.extend(numbers(&mut sub, rest).await);
    assert_eq!(got, (1..=last).collect::<Vec<_>>());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.recv())
            .await
            .is_err(),
        "nothing after the last number"
    );
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, ClientEvent::NotRecovered { .. }),
            "{event:?}"
        );
    }
}

/// The next `count` publications on `sub`, as numbers (5 s each at most).
async fn numbers(sub: &mut Subscription, count: usize) -> Vec<u64> {
    let mut got = Vec::new();
    while got.len() < count {
        match tokio::time::timeout(Duration::from_secs(5), sub.recv()).await {
            Ok(Some(v)) => got.push(v.as_u64().expect("a number")),
            _ => panic!("only {} of {count} numbers arrived", got.len()),
        }
    }
    got
}

/// Issue 19: `listen_backlog` reaches every listening socket of a cluster: the public port (the
/// one queue workers and balancers accept from), the workers' sockets behind the balancer, the
/// broker's and the control socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listening_socket_of_a_cluster_gets_listen_backlog() {
    use support::backlog::{listen_backlog, somaxconn, tcp_listen_backlog};
    let want = 777.min(somaxconn());
    let cluster = Cluster::start_with(2, 1, 1, &[("SC_LISTEN_BACKLOG", &want.to_string())]);
    // Through the balancer to a worker: every process is up.
    drop(client(&cluster.url()).await);
    assert_eq!(tcp_listen_backlog(cluster.port), want, "public port");
    let dir = cluster.run_dir();
    for name in [
        "worker-0.sock",
        "worker-1.sock",
        "broker-0.sock",
        "master.sock",
    ] {
        let path = dir.join(name);
        let path = path.to_str().expect("a UTF-8 path");
        assert_eq!(listen_backlog(&["-xH", "src", path]), want, "{name}");
    }
}

/// Presence across workers: every worker answers the same count; a SIGKILLed worker's sockets
/// leave at once (its broker link drops), announced to the other workers' subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_counts_every_worker_and_a_killed_workers_sockets_leave_at_once() {
    let cluster = Cluster::start(2, 1, 0);
    let clients = clients_on_every_worker(&cluster.url(), 2).await;
    let mut subs = Vec::new();
    for (c, _) in &clients {
        subs.push(c.subscribe("presjl/1").await.expect("subscribe"));
    }
    let n = clients.len() as u64;
    let within = Duration::from_secs(5);
    for (c, _) in &clients {
        support::presence_count_becomes(c, "presjl/1", n, within).await;
    }
    let victim = clients[0].1;
    let (survivor, _) = clients
        .iter()
        .find(|(_, pid)| *pid != victim)
        .expect("a client on the other worker");
    let mut events = survivor.receiver("#presence");
    let killed: HashSet<String> = clients
        .iter()
        .filter(|(_, pid)| *pid == victim)
        .map(|(c, _)| c.id().expect("an id"))
        .collect();
    let started = std::time::Instant::now();
    sigkill(victim as i32);

    support::await_presence(&mut events, "leaves", &killed, Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let answer: Value = survivor
        .invoke_value("#presence", Some(json!({"channel": "presjl/1"})))
        .await
        .expect("answered")
        .unwrap_or(Value::Null);
    let listed: HashSet<String> = answer["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["socket"].as_str().map(str::to_owned))
        .collect();
    assert!(listed.is_disjoint(&killed), "{answer}");
}

/// `SC_HISTORY_MAX_BYTES` reaches the broker process: past it the least recently published
/// channel loses its history but keeps its position (a client at its top recovers, one behind
/// it does not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_process_keeps_history_within_history_max_bytes() {
    let cluster = Cluster::start_with(2, 1, 0, &[("SC_HISTORY_MAX_BYTES", "65536")]);
    let url = cluster.url();
    let publisher = client(&url).await;
    for n in 1..=3 {
        publisher.publish("hist/first", &n).await.expect("publish");
    }
    // A fresh socket per question: a socket already subscribed answers where it is.
    let ask = |channel: &'static str, recover: Option<Value>| {
        let url = url.clone();
        async move {
            let c = client(&url).await;
            let mut request = json!({ "channel": channel });
            if let Some(recover) = recover {
                request["recover"] = recover;
            }
            let ack: Option<Value> = c.invoke("#subscribe", &request).await.expect("acked");
            ack.expect("a position")
        }
    };
    let top = ask("hist/first", None).await;
    assert_eq!(top["offset"], 3);
    let epoch = top["epoch"].clone();
    // 100 channels of 1 KB each pass 64 KiB: hist/first goes first.
    let kilobyte = "k".repeat(1000);
    for i in 0..100 {
        publisher
            .publish(&format!("hist/other-{i}"), &kilobyte)
            .await
            .expect("publish");
    }
    let at_top = ask("hist/first", Some(json!({"offset": 3, "epoch": epoch}))).await;
    assert_eq!(
        (&at_top["offset"], &at_top["epoch"], &at_top["recovered"]),
        (&json!(3), &epoch, &json!(true)),
        "{}",
        cluster.log_text()
    );
    let behind = ask("hist/first", Some(json!({"offset": 2, "epoch": epoch}))).await;
    assert_eq!(
        behind["recovered"],
        json!(false),
        "evicted, so 3 is gone: {behind}"
    );
    // The newest channel kept its publication.
    let newest = ask("hist/other-99", None).await;
    let from_start = json!({"offset": 0, "epoch": newest["epoch"]});
    let kept = ask("hist/other-99", Some(from_start)).await;
    assert_eq!(kept["recovered"], json!(true), "{kept}");
}

/// Issue 19: a socket's publishes reach the broker in order without waiting for each other's
/// acknowledgement (one publishing socket would otherwise get one publish per broker round trip),
/// and the socket's next message is handled while a publish waits for the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_goes_on_while_its_publish_waits_for_the_broker_and_its_publishes_keep_their_order(
) {
    let cluster = Cluster::start(1, 1, 0);
    let url = cluster.url();
    let subscriber = client(&url).await;
    let mut sub = subscriber.subscribe("pipeline").await.expect("subscribe");
    let publisher = client(&url).await;

    // 200 publishes at once from one socket: every one acknowledged, delivered in order.
    let acks = futures_util::future::join_all((0..200u64).map(|n| {
        let publisher = &publisher;
        async move { publisher.publish("pipeline", &n).await }
    }))
    .await;
    assert!(acks.iter().all(Result::is_ok), "{acks:?}");
    assert_eq!(numbers(&mut sub, 200).await, (0..200).collect::<Vec<u64>>());

    // The broker stopped: a publish waits for its answer; the same socket's next call does not.
    let broker = cluster.children("broker")[0];
    signal(broker, nix::sys::signal::Signal::SIGSTOP);
    let pending = {
        let publisher = publisher.clone();
        tokio::spawn(async move { publisher.publish("pipeline", &200u64).await })
    };
    // Let the publish reach the worker before the call behind it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answered = tokio::time::timeout(Duration::from_secs(2), worker_pid(&publisher)).await;
    signal(broker, nix::sys::signal::Signal::SIGCONT);
    assert!(
        answered.is_ok(),
        "the call waited for the publish before it"
    );
    // Once the broker goes on, the publish is acknowledged and delivered.
    pending
        .await
        .expect("join")
        .expect("the publish is acknowledged");
    assert_eq!(numbers(&mut sub, 1).await, vec![200]);
}
