//! Replays the fuzzer's seeds and every input it ever crashed on (`fuzz/seeds/<target>/`,
//! `fuzz/regressions/<target>/`) through the fuzzer's own checks, on stable, in the normal test
//! run. A new crash becomes a regression by copying its artifact into `fuzz/regressions/<target>/`.

#[path = "../../fuzz/src/lib.rs"]
mod checks;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == ".gitkeep") {
                continue;
            }
            let data = std::fs::read(&path).expect("readable input");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{} fails its check", path.display());
            replayed += 1;
        }
    }
    assert!(
        replayed > 0,
        "no inputs for {target}: fuzz/seeds is missing"
    );
}

#[test]
fn decoder_inputs_pass_the_fuzzers_checks() {
    replay("decode", checks::decode);
}

#[test]
fn channel_pattern_inputs_pass_the_fuzzers_checks() {
    replay("channel_pattern", checks::channel_pattern);
}
