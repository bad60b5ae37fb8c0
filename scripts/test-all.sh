#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust unit + integration tests (cluster and Redis tests
# with real processes, `sc new`, `sc bench`), the compatibility suite (the official
# socketcluster-client from npm against our compat server, and our browser client), and the page
# test in headless Chromium; then the fuzzers, 60 s per target (scripts/fuzz.sh).
# Needs: a Rust toolchain, Node.js >= 20 with npm, Redis on 127.0.0.1:6379 and redis-server,
# Chromium (/usr/bin/chromium or $CHROMIUM). `.ci/run` installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

echo "== npm ci (tests/compat: socketcluster-client@20, socketcluster-server@20 as the reference)"
if [ ! -d tests/compat/node_modules ] || [ tests/compat/package-lock.json -nt tests/compat/node_modules/.package-lock.json ]; then
  (cd tests/compat && npm ci --no-audit --no-fund)
fi

echo "== cargo test (unit, integration, the Rust client against our server and the Node reference)"
cargo test --workspace --all-features

echo "== compatibility suite (the official socketcluster-client against our compat server)"
cargo build -p compat-server -p chat
(cd tests/compat && COMPAT_SERVER_BIN="$PWD/../../target/debug/compat-server" npm test)

echo "== page test (the chat page in headless Chromium)"
if [ ! -d tests/browser/node_modules ] || [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; then
  (cd tests/browser && npm ci --no-audit --no-fund)
fi
(cd tests/browser && CHAT_BIN="$PWD/../../target/debug/chat" npm test)

echo "== fuzz (the frame decoder and the channel-pattern parser, FUZZ_SECONDS per target)"
bash scripts/fuzz.sh
