#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust unit + integration tests, and the compatibility
# suite (the official socketcluster-client from npm against our compat server).
# Needs: a Rust toolchain, Node.js >= 20 with npm. `.ci/run` installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

echo "== cargo test"
cargo test --workspace --all-features

echo "== compatibility suite (socketcluster-client@20 from npm)"
cargo build -p compat-server
cd tests/compat
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
COMPAT_SERVER_BIN="$PWD/../../target/debug/compat-server" npm test
