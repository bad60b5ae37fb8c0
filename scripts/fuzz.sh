#!/usr/bin/env bash
# Runs each cargo-fuzz target (fuzz/) for FUZZ_SECONDS (default 60), starting from its seeds and
# every input that ever crashed it (fuzz/seeds/<target>, fuzz/regressions/<target>); new corpus
# entries go to a temporary directory. A crash fails the run and leaves its input under
# fuzz/artifacts/<target>/: copy it into fuzz/regressions/<target>/ and fix the bug; the normal
# test run replays it on stable (sc-core/tests/fuzz_regressions.rs).
# Needs rustup's nightly toolchain and `cargo install cargo-fuzz`; without them the run is skipped,
# or fails when SC_REQUIRE_FUZZ=1 (as in CI).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  if [ "${SC_REQUIRE_FUZZ:-}" = 1 ]; then
    echo "fuzz: needs the nightly toolchain (rustup toolchain install nightly) and cargo-fuzz (cargo install cargo-fuzz)" >&2
    exit 1
  fi
  echo "== fuzz: skipped (needs the nightly toolchain and cargo-fuzz; SC_REQUIRE_FUZZ=1 makes this an error)"
  exit 0
fi
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
for target in decode channel_pattern; do
  mkdir -p "$corpus/$target"
  echo "== fuzz $target (${SECONDS_PER_TARGET} s)"
  (cd fuzz && cargo +nightly fuzz run "$target" "$corpus/$target" "seeds/$target" "regressions/$target" \
    -- -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 2>&1 | grep -Ev '^(#[0-9]+|"|###### |INFO: |\s+NEW_FUNC)')
done
