#!/usr/bin/env bash
# Soak test: examples/echo (release) under churn for minutes: CLIENTS clients connect, subscribe,
# publish and read their own messages back, invoke echo, unsubscribe and disconnect, over and
# over (`sc bench soak`). Fails on any error, on sockets or subscriptions left on the server
# afterwards (its /metrics), when the server's memory after the soak is more than RSS_SLACK_KIB
# above its memory before, or grew under load by more than RSS_GROWTH_KIB from a quarter in to
# the last sample before the end (a leak under churn). Appends the JSON line to bench/results/soak.jsonl.
#
#   bash bench/soak.sh                       # CLIENTS=500 MINUTES=5
#   CLIENTS=1000 MINUTES=30 bash bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-500}
MINUTES=${MINUTES:-5}
CHANNELS=${CHANNELS:-100}
RSS_SLACK_KIB=${RSS_SLACK_KIB:-16384}
RSS_GROWTH_KIB=${RSS_GROWTH_KIB:-2048}
PORT=${PORT:-8710}
mkdir -p bench/results

echo "== building (release)" >&2
cargo build --release -q -p echo -p sc-cli

SC_PORT="$PORT" SC_HOST=127.0.0.1 RUST_LOG=warn target/release/echo >/dev/null 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done

echo "== soak: $CLIENTS clients, $MINUTES min" >&2
status=0
line=$(target/release/sc bench --url "ws://127.0.0.1:$PORT/socketcluster/" \
  --duration "$((MINUTES * 60))" --pid "$SERVER_PID" --label sc \
  soak --clients "$CLIENTS" --channels "$CHANNELS" \
  --rss-slack-kib "$RSS_SLACK_KIB" --rss-growth-kib "$RSS_GROWTH_KIB") || status=$?
echo "$line"
echo "$line" >> bench/results/soak.jsonl
exit "$status"
