//! `sc dev` end to end on a generated app: a handler's source changes, the running app answers
//! with the new behaviour, a broken edit keeps the previous build serving, and a prober that opens
//! TCP connections the whole time never sees a refused connection. Without `SC_AUTH_KEY`, a
//! logged-in client stays logged in and in its room across the swap (the app's `.sc/auth-key`),
//! and an editor's swap file does not trigger a rebuild. Every build writes the app's TypeScript
//! contract (`public/sc-types.d.ts`), which does not trigger a rebuild either.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sc_core::client::{Backoff, Client, ClientEvent, ClientOptions};
use serde_json::Value;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Dev {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Dev {
    fn count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    fn text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// Waits until `needle` has appeared `n` times in sc dev's output.
    fn wait_for(&self, needle: &str, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.count(needle) < n {
            assert!(
                Instant::now() < deadline,
                "no {n}x {needle:?} from sc dev:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

async fn version(client: &Client) -> Result<Value, String> {
    client
        .invoke::<_, Value>("version", &())
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sc_dev_swaps_builds_without_refusing_connections() {
    let root = std::env::temp_dir().join(format!("sc-dev-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    let app = root.join("devapp");
    let out = Command::new(env!("CARGO_BIN_EXE_sc"))
        .arg("new")
        .arg(&app)
        .output()
        .expect("sc new");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::copy(workspace().join("Cargo.lock"), app.join("Cargo.lock")).expect("lock file");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sc"))
        .args(["dev", "--port", &port.to_string()])
        .current_dir(&app)
        .env(
            "CARGO_TARGET_DIR",
            workspace().join("target").join("sc-new-test"),
        )
        .env("RUST_LOG", "warn")
        .env_remove("SC_AUTH_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sc dev");
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().expect("log").push(line);
        }
    });
    let dev = Dev { child, log };
    dev.wait_for("[sc dev] started", 1, Duration::from_secs(600));
    // Every successful build writes the app's TypeScript contract next to the page.
    let types_file = app.join("public/sc-types.d.ts");
    let types = std::fs::read_to_string(&types_file).expect("sc dev wrote public/sc-types.d.ts");
    assert!(
        types.contains(r#""chat": { payload: Say; reply: void };"#),
        "{types}"
    );
    assert!(!types.contains(r#""version""#), "{types}");

    // A prober: a TCP connection every 20 ms for the whole test; none may be refused.
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let probes = Arc::new(AtomicU64::new(0));
    let prober = {
        let (stop, refused, probes) = (stop.clone(), refused.clone(), probes.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match std::net::TcpStream::connect(("127.0.0.1", port)) {
                    Ok(_) => probes.fetch_add(1, Ordering::Relaxed),
                    Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let mut opts = ClientOptions::new(format!("ws://127.0.0.1:{port}/socketcluster/"));
    opts.backoff = Backoff {
        initial_delay: Duration::from_millis(100),
        randomness: Duration::from_millis(100),
        multiplier: 1.5,
        max_delay: Duration::from_secs(1),
    };
    let client = Client::connect_with(opts).await.expect("client connects");
    let before = version(&client).await.expect_err("no `version` event yet");
    assert!(before.contains("UnhandledEventError"), "{before}");
    let () = client.invoke("login", &"ann").await.expect("login");
    let mut room = client.subscribe("rooms/1").await.expect("ann joins room 1");
    // Room 1 keeps a history (the template's `history = 50`): ann's client has a position in it.
    let mut events = client.events();
    let () = client
        .invoke(
            "chat",
            &serde_json::json!({"room": 1, "text": "before the swap"}),
        )
        .await
        .expect("ann chats");
    let got = tokio::time::timeout(Duration::from_secs(5), room.recv())
        .await
        .expect("delivered in time")
        .expect("subscribed");
    assert_eq!(got["text"], "before the swap");
    assert!(room.position().is_some(), "a positioned publication");

    // The key every build gets: made once, kept out of version control by its own .gitignore.
    let key = std::fs::read_to_string(app.join(".sc/auth-key")).expect(".sc/auth-key");
    assert_eq!(key.trim().len(), 64, "{key}");
    let ignore = std::fs::read_to_string(app.join(".sc/.gitignore")).expect(".sc/.gitignore");
    assert!(ignore.lines().any(|l| l == "*"), "{ignore}");

    // An editor's swap file is not a change.
    std::fs::write(app.join("src/.lib.rs.swp"), "vim").expect("swap file");

    // Add a `version` event to the app's source.
    let lib = app.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).expect("lib.rs");
    let handlers = "handlers![Room, login, chat, history, rooms_only]";
    assert!(
        source.contains(handlers),
        "the template's handlers![] line changed: update this test"
    );
    let changed = source.replace(
        handlers,
        "handlers![Room, login, chat, history, rooms_only, version]",
    )
        + "\n#[event(\"version\")]\nasync fn version() -> Json<u32> {\n    Json(2)\n}\n";
    std::fs::write(&lib, &changed).expect("edit lib.rs");
    dev.wait_for("[sc dev] started", 2, Duration::from_secs(600));
    assert_eq!(
        dev.count(".swp"),
        0,
        "a swap file triggered a rebuild:\n{}",
        dev.text()
    );
    assert_eq!(
        dev.count("src/lib.rs changed: rebuilding"),
        1,
        "{}",
        dev.text()
    );
    // Written again from the new build; writing it is not a change to rebuild for.
    let types = std::fs::read_to_string(&types_file).expect("types");
    assert!(
        types.contains(r#""version": { payload: undefined; reply: number };"#),
        "{types}"
    );
    assert_eq!(dev.count("changed: rebuilding"), 1, "{}", dev.text());

    // The client that stayed connected is moved to the new build (it reconnects by itself).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match version(&client).await {
            Ok(v) => {
                assert_eq!(v, serde_json::json!(2));
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "never saw the new build: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Still logged in (the new build has the same key) and back in room 1.
    assert!(
        client.is_authenticated(),
        "the swap logged ann out:\n{}",
        dev.text()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !room.is_subscribed() {
        assert!(Instant::now() < deadline, "room 1 not resubscribed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let () = client
        .invoke(
            "chat",
            &serde_json::json!({"room": 1, "text": "after the swap"}),
        )
        .await
        .expect("ann may still chat");
    let got = tokio::time::timeout(Duration::from_secs(5), room.recv())
        .await
        .expect("delivered in time")
        .expect("still subscribed");
    assert_eq!(got["text"], "after the swap");
    // The in-process history went with the old build (README, History and recovery: decided),
    // so the resubscription was told "not recovered", once, not left with a silent gap.
    let mut not_recovered = 0;
    while let Ok(e) = events.try_recv() {
        not_recovered += usize::from(matches!(e, ClientEvent::NotRecovered { .. }));
    }
    assert_eq!((not_recovered, room.not_recovered()), (1, 1));
    assert_eq!(dev.count("no auth key configured"), 0, "{}", dev.text());

    // A broken edit: reported, and the running build keeps serving.
    std::fs::write(&lib, format!("{changed}\nthis is not rust\n")).expect("break lib.rs");
    dev.wait_for(
        "the build failed; the previous build keeps serving",
        1,
        Duration::from_secs(600),
    );
    assert_eq!(version(&client).await, Ok(serde_json::json!(2)));

    stop.store(true, Ordering::Relaxed);
    let _ = prober.join();
    assert!(probes.load(Ordering::Relaxed) > 10, "the prober ran");
    assert_eq!(
        refused.load(Ordering::Relaxed),
        0,
        "connections were refused during the swap:\n{}",
        dev.text()
    );
    drop(dev);
    let _ = std::fs::remove_dir_all(&root);
}
