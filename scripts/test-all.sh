#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust unit + integration tests (cluster and Redis tests
# with real processes, `sc new`, `sc bench`), the compatibility suite (the official
# socketcluster-client from npm against our compat server, and our browser client), and the page
# test in headless Chromium; then the fuzzers, 60 s per target (scripts/fuzz.sh).
# Needs: a Rust toolchain, Node.js >= 20 with npm, Redis on 127.0.0.1:6379 and redis-server,
# Chromium (/usr/bin/chromium or $CHROMIUM), rustup's nightly toolchain and cargo-fuzz. `.ci/run`
# installs what is missing, then runs this.
# It stops at the first failed step; its last line always counts what ran (scripts/test-summary.sh):
# `N passed, N failed`, skipped suites named. A suite that cannot run fails the run unless
# SC_ALLOW_SKIP names it (SC_ALLOW_SKIP=fuzz: without nightly or cargo-fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
finish() {
  local rc=$?
  bash scripts/test-summary.sh "$log" || rc=1
  rm -f "$log"
  exit "$rc"
}
trap finish EXIT

# step NAME COMMAND..: runs COMMAND with its output shown and kept for the summary.
step() {
  local name=$1
  shift
  echo "== $name"
  if ! "$@" 2>&1 | tee -a "$log"; then
    echo "STEP FAILED: $name" | tee -a "$log"
    exit 1
  fi
}

npm_ci() { # DIR: npm ci when node_modules is missing or older than the lock file
  if [ ! -d "$1/node_modules" ] || [ "$1/package-lock.json" -nt "$1/node_modules/.package-lock.json" ]; then
    (cd "$1" && npm ci --no-audit --no-fund)
  fi
}

step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets --all-features -- -D warnings
# tests/compat: socketcluster-client@20, socketcluster-server@20 as the reference.
step "npm ci (tests/compat)" npm_ci tests/compat
# tests/types: typescript, for sc-cli/tests/new.rs (the page's check) and the types suite.
step "npm ci (tests/types)" npm_ci tests/types
# Unit, integration, the Rust client against our server and the Node reference; every test
# binary runs even when one fails, so the counts are whole.
step "cargo test" cargo test --workspace --all-features --no-fail-fast
step "compat build" cargo build -p compat-server -p chat -p auth -p sc-cli
step "compatibility suite (the official socketcluster-client against our compat server)" \
  env -C tests/compat COMPAT_SERVER_BIN="$PWD/target/debug/compat-server" npm test
step "npm ci (tests/browser)" npm_ci tests/browser
step "page test (the chat page in headless Chromium)" \
  env -C tests/browser CHAT_BIN="$PWD/target/debug/chat" npm test
step "types (tsc on sc types output and the page)" \
  env -C tests/types SC_BIN="$PWD/target/debug/sc" CHAT_BIN="$PWD/target/debug/chat" AUTH_BIN="$PWD/target/debug/auth" npm test
# The frame decoder and the channel-pattern parser, FUZZ_SECONDS per target. The step is named as
# the suite fuzz.sh reports skipped, so a refused skip is named once.
step fuzz bash scripts/fuzz.sh
