//! Compile-time behaviour of the macros (trybuild): every case under `tests/ui/<macro>/pass`
//! must compile, every case under `tests/ui/<macro>/fail` must fail with exactly the committed
//! `.stderr`. Regenerate the files with `TRYBUILD=overwrite cargo test -p sc-macros --test ui`.
//!
//! Compiler messages change between Rust releases, so the `.stderr` files belong to the toolchain
//! pinned in the workspace's `rust-toolchain.toml`. On any other rustc this test fails (it is
//! never skipped), saying how to run it or how to move the pin.

use std::process::Command;

/// The `channel` pinned in `rust-toolchain.toml` (e.g. `1.95.0`).
fn pinned_channel() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../rust-toolchain.toml");
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {path}: {e} (it pins the toolchain)"));
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .next()
        .unwrap_or_else(|| panic!("{path} has no `channel = \"...\"` line"))
}

/// `rustc --version` of the compiler trybuild will use (rustup resolves `rustc` the same way
/// cargo did, `+toolchain` overrides included).
fn rustc_version() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    Command::new(&rustc)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|e| panic!("cannot run `{rustc} --version`: {e}"))
}

#[test]
fn ui() {
    let pinned = pinned_channel();
    let version = rustc_version();
    assert!(
        version.starts_with(&format!("rustc {pinned} ")),
        "the macro UI tests' .stderr files are made with rustc {pinned} (rust-toolchain.toml), \
         but this is {version:?}. Run them on the pinned toolchain (without a `+toolchain` or \
         RUSTUP_TOOLCHAIN override); to move to another toolchain, change rust-toolchain.toml, \
         then regenerate the files with `TRYBUILD=overwrite cargo test -p sc-macros --test ui` \
         and review the diff"
    );
    let cases = trybuild::TestCases::new();
    for m in ["event", "middleware", "channel", "handlers"] {
        cases.pass(format!("tests/ui/{m}/pass/*.rs"));
        cases.compile_fail(format!("tests/ui/{m}/fail/*.rs"));
    }
}
