//! `sc new` end to end: the generated app builds and passes its own test (with a path dependency
//! on this checkout's sc-core), and its page type-checks against its Rust types (`sc types`, then
//! `tsc`, from tests/types: run `npm ci` there first); a bad name gets one sentence and exit 2 (usage), an existing
//! directory or a missing sc-core one sentence and exit 1 (the request was valid, it failed).

use std::path::PathBuf;
use std::process::Command;

fn sc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sc"))
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn sc_new_creates_an_app_that_builds_and_passes_its_test() {
    let root = std::env::temp_dir().join(format!("sc-new-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    let app = root.join("demo-chat");

    let out = sc().arg("new").arg(&app).output().expect("run sc new");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        "src/main.rs",
        "tests/chat.rs",
        "public/index.html",
        "public/app.js",
        "public/jsconfig.json",
    ] {
        assert!(app.join(file).is_file(), "{file} was not created");
    }
    let manifest = std::fs::read_to_string(app.join("Cargo.toml")).expect("manifest");
    assert!(manifest.contains("name = \"demo-chat\""), "{manifest}");
    assert!(
        manifest.contains("path = "),
        "a path dependency on this checkout: {manifest}"
    );
    assert!(
        manifest.contains("features = [\"testing\"]"),
        "tests/chat.rs uses sc_core::testing: {manifest}"
    );

    // Refuses to overwrite.
    let again = sc().arg("new").arg(&app).output().expect("run sc new");
    assert_eq!(again.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&again.stderr);
    assert!(msg.contains("already exists"), "{msg}");

    // A bad name: one sentence, exit 2, nothing created.
    let bad = sc()
        .arg("new")
        .arg(root.join("9lives"))
        .output()
        .expect("run sc new");
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&bad.stderr).lines().count(), 1);
    assert!(!root.join("9lives").exists());

    // The app's own test, with the workspace's lock file (same versions, no surprises) and a
    // target directory of its own (the outer cargo holds the workspace's).
    std::fs::copy(workspace().join("Cargo.lock"), app.join("Cargo.lock")).expect("lock file");
    let status = Command::new(env!("CARGO"))
        .args(["test", "--quiet"])
        .current_dir(&app)
        .env(
            "CARGO_TARGET_DIR",
            workspace().join("target").join("sc-new-test"),
        )
        .status()
        .expect("run cargo test in the new app");
    assert!(status.success(), "the generated app's tests failed");
    page_type_checks_against_the_rust_types(&app);

    // Its log, redirected (a pipe, not a terminal), is plain text: no colour codes.
    let bin = workspace().join("target/sc-new-test/debug/demo-chat");
    let mut app_process = Command::new(&bin)
        .current_dir(&app)
        .env("SC_PORT", "0")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the generated app");
    let stdout = app_process.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(30)) {
        let done = line.contains("sc listening");
        log.push(line);
        if done {
            break;
        }
    }
    let _ = app_process.kill();
    let _ = app_process.wait();
    let log = log.join("\n");
    assert!(
        log.contains("sc listening"),
        "the app logs that it listens: {log}"
    );
    assert!(
        !log.contains('\x1b'),
        "colour codes in a redirected log: {log:?}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// Typed client contracts on the generated app: `sc types` writes the page's types next to it
/// (the default `--out`), the page (`// @ts-check`) passes `tsc`; a breaking change of the Rust
/// types (`ChatMsg.text` becoming a number), with the types written again from it, fails it.
fn page_type_checks_against_the_rust_types(app: &std::path::Path) {
    let tsc = workspace().join("tests/types/node_modules/typescript/bin/tsc");
    assert!(
        tsc.is_file(),
        "typescript is not installed: run `npm ci` in tests/types"
    );
    let sc_types = || {
        let out = sc()
            .args(["types", "--path"])
            .arg(app)
            .env(
                "CARGO_TARGET_DIR",
                workspace().join("target").join("sc-new-test"),
            )
            .output()
            .expect("run sc types");
        assert!(
            out.status.success(),
            "sc types failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let check = || {
        Command::new("node")
            .arg(&tsc)
            .arg("-p")
            .arg(app.join("public/jsconfig.json"))
            .output()
            .expect("run tsc")
    };

    sc_types();
    for file in ["sc-types.d.ts", "sc-types.js", "socketcluster.d.ts"] {
        assert!(app.join("public").join(file).is_file(), "no public/{file}");
    }
    let types = std::fs::read_to_string(app.join("public/sc-types.d.ts")).expect("types");
    assert!(
        types.contains("export type ChatMsg = { from: string, text: string,"),
        "{types}"
    );
    let ok = check();
    assert!(
        ok.status.success(),
        "the page does not type-check: {}",
        String::from_utf8_lossy(&ok.stdout)
    );

    let lib = app.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).expect("lib.rs");
    let broken = source
        .replace("pub text: String,", "pub text: u64,")
        .replace("text: text.to_owned(),", "text: text.len() as u64,");
    assert_ne!(
        broken, source,
        "the template changed: update this test's edit"
    );
    std::fs::write(&lib, broken).expect("write lib.rs");
    sc_types();
    let types = std::fs::read_to_string(app.join("public/sc-types.d.ts")).expect("types");
    assert!(types.contains("text: number,"), "{types}");
    let failed = check();
    let errors = String::from_utf8_lossy(&failed.stdout);
    assert!(
        !failed.status.success(),
        "the page type-checks against a number text"
    );
    assert!(
        errors.contains("app.js") && errors.contains("'number' is not assignable"),
        "{errors}"
    );
}

#[test]
fn an_existing_directory_or_a_missing_sc_core_fails_with_exit_1_and_help_names_no_crate() {
    let root = std::env::temp_dir().join(format!("sc-new-codes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("taken")).expect("temp dir");

    let taken = sc()
        .arg("new")
        .arg(root.join("taken"))
        .output()
        .expect("run sc new");
    assert_eq!(taken.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&taken.stderr);
    assert!(msg.contains("already exists"), "{msg}");
    assert_eq!(msg.lines().count(), 1, "{msg}");

    // No sc-core to depend on: one sentence naming the option, nothing created.
    let missing = sc()
        .arg("new")
        .arg(root.join("app"))
        .arg("--sc-core-path")
        .arg(root.join("no-such-sc-core"))
        .output()
        .expect("run sc new");
    assert_eq!(missing.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&missing.stderr);
    assert!(msg.contains("--sc-core-path"), "{msg}");
    assert_eq!(msg.lines().count(), 1, "{msg}");
    assert!(!root.join("app").exists());

    // sc-core is not published: the help must not promise a fallback to it.
    let help = sc()
        .args(["new", "--help"])
        .output()
        .expect("run sc new --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(!help.contains("published crate"), "{help}");
    assert!(help.contains("--sc-core-path"), "{help}");
    let _ = std::fs::remove_dir_all(&root);
}
