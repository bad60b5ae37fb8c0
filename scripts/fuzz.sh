#!/usr/bin/env bash
# Runs each cargo-fuzz target (fuzz/) for FUZZ_SECONDS (default 60), starting from its seeds and
# every input that ever crashed it (fuzz/seeds/<target>, fuzz/regressions/<target>); new corpus
# entries go to a temporary directory. A crash fails the run and leaves its input under
# fuzz/artifacts/<target>/: copy it into fuzz/regressions/<target>/ and fix the bug; the normal
# test run replays it on stable (sc-core/tests/fuzz_regressions.rs).
# Needs rustup's nightly toolchain and `cargo install cargo-fuzz` (`.ci/run` installs both); without
# them it prints `SKIPPED: fuzz (..)` and fails, unless SC_ALLOW_SKIP names fuzz (e.g.
# SC_ALLOW_SKIP=fuzz): then the skip is allowed, and still named in the test run's last line.
# Each target that ran clean prints `fuzz TARGET: ok`, a crash `fuzz TARGET: FAILED` (counted by
# scripts/test-summary.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "SKIPPED: fuzz (needs the nightly toolchain and cargo-fuzz: rustup toolchain install nightly --profile minimal && cargo install cargo-fuzz --locked)"
  case ",${SC_ALLOW_SKIP:-}," in
    *,fuzz,*) exit 0 ;;
  esac
  echo "fuzz: cannot run; install the two above (or run .ci/run), or set SC_ALLOW_SKIP=fuzz to skip it" >&2
  exit 1
fi
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
status=0
for target in decode channel_pattern; do
  mkdir -p "$corpus/$target"
  echo "== fuzz $target (${SECONDS_PER_TARGET} s)"
  if (cd fuzz && cargo +nightly fuzz run "$target" "$corpus/$target" "seeds/$target" "regressions/$target" \
    -- -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 2>&1 | { grep -Ev '^(#[0-9]+|"|###### |INFO: |\s+NEW_FUNC)' || true; }); then
    echo "fuzz $target: ok"
  else
    echo "fuzz $target: FAILED (the crashing input is under fuzz/artifacts/$target/)"
    status=1
  fi
done
exit $status
