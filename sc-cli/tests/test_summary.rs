//! `scripts/test-summary.sh`, the last line of `scripts/test-all.sh`, on sample output of each
//! runner: the counts are summed, a failed step is named, and a skipped suite is named and fails
//! the run unless `SC_ALLOW_SKIP` allows it.

use std::path::PathBuf;
use std::process::Command;

/// Runs the summary over `log` with `SC_ALLOW_SKIP=allow`; returns its last line and exit code.
fn summarize(log: &str, allow: &str) -> (String, i32) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path: PathBuf =
        std::env::temp_dir().join(format!("sc-test-summary-{}-{n}.log", std::process::id()));
    std::fs::write(&path, log).expect("write the sample log");
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/test-summary.sh"
        ))
        .arg(&path)
        .env("SC_ALLOW_SKIP", allow)
        .output()
        .expect("run bash");
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default().to_owned();
    (last, out.status.code().unwrap_or(-1))
}

const CARGO_OK: &str = "\
running 3 tests
test a ... ok
test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s

   Doc-tests sc_core
test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.2s
";

/// node --test with the TAP reporter (its output is not a terminal), and with the spec one.
const NODE_OK: &str = "\
1..4
# tests 4
# suites 0
# pass 4
# fail 0
# cancelled 0
# skipped 0
# todo 0
ℹ tests 2
ℹ pass 2
ℹ fail 0
";

#[test]
fn a_green_run_counts_every_runner() {
    let log = format!("{CARGO_OK}{NODE_OK}fuzz decode: ok\nfuzz channel_pattern: ok\n");
    assert_eq!(
        summarize(&log, ""),
        ("23 passed, 0 failed, 1 ignored".to_owned(), 0)
    );
}

#[test]
fn failures_and_a_failed_step_fail_the_run() {
    let log = "\
test result: FAILED. 4 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 3s
# pass 1
# fail 1
# cancelled 1
STEP FAILED: cargo test
";
    assert_eq!(
        summarize(log, ""),
        (
            "5 passed, 4 failed; failed step: cargo test (the steps after it did not run)"
                .to_owned(),
            1
        )
    );
    // A step that fails without test counts (fmt, clippy) still fails the run.
    let (line, code) = summarize("STEP FAILED: cargo clippy\n", "");
    assert_eq!(code, 1, "{line}");
    assert!(
        line.starts_with("0 passed, 0 failed; failed step: cargo clippy"),
        "{line}"
    );
}

#[test]
fn a_skipped_suite_is_named_and_fails_the_run_unless_allowed() {
    let skipped = "SKIPPED: fuzz (needs the nightly toolchain and cargo-fuzz)\n";
    // fuzz.sh fails its step when the skip is not allowed: named once, as skipped.
    let log = format!("{CARGO_OK}{skipped}STEP FAILED: fuzz\n");
    assert_eq!(
        summarize(&log, ""),
        (
            "15 passed, 0 failed, 1 ignored, 1 suite skipped: fuzz (needs the nightly toolchain \
             and cargo-fuzz) [not allowed: SC_ALLOW_SKIP=fuzz allows it]"
                .to_owned(),
            1
        )
    );
    // Even when the step passed, an unallowed skip is not green.
    assert_eq!(summarize(&format!("{CARGO_OK}{skipped}"), "").1, 1);
    // Allowed: green, and the skip still named in the last line.
    assert_eq!(
        summarize(&format!("{CARGO_OK}{skipped}"), "redis,fuzz"),
        (
            "15 passed, 0 failed, 1 ignored, 1 suite skipped: fuzz (needs the nightly toolchain \
             and cargo-fuzz)"
                .to_owned(),
            0
        )
    );
}
