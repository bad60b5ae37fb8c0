#!/usr/bin/env bash
# Two builds of an sc server side by side (e.g. before and after a refactor): the same `sc bench`
# scenarios against each, alternating A and B on freshly started servers, ROUNDS times, so that
# drift of the machine hits both alike. Prints one JSON line per run and a median per scenario.
#
#   A=/path/to/old/echo B=target/release/echo bash bench/ab.sh
#   A=... B=... ROUNDS=3 DURATION=8 IDLE_SOCKETS=19000 bash bench/ab.sh
#
# Build the old one from a worktree, e.g.
#   git worktree add /tmp/old REV && (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target cargo build --release -p echo)
set -euo pipefail
cd "$(dirname "$0")/.."

A=${A:?set A to the first server binary}
B=${B:?set B to the second server binary}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
IDLE_SOCKETS=${IDLE_SOCKETS:-19000}
PORT=${PORT:-8700}
SC=${SC:-target/release/sc}
URL="ws://127.0.0.1:$PORT/socketcluster/"
OUT=${OUT:-bench/results/ab.jsonl}
mkdir -p "$(dirname "$OUT")"
: > "$OUT"
[ -x "$SC" ] || cargo build --release -q -p sc-cli

SERVER_PID=""
start() { # start BINARY
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "port $PORT is already in use" >&2; return 1
  fi
  env SC_PORT="$PORT" SC_HOST=127.0.0.1 SC_MESSAGE_RATE_LIMIT=0 RUST_LOG=warn "$1" >/dev/null 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0; sleep 0.05; done
  echo "server $1 did not start" >&2; return 1
}
stop() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  sleep 1
}
run() { # run NAME LABEL ARGS...
  local name=$1 label=$2; shift 2
  local line
  line=$("$SC" bench --url "$URL" --duration "$DURATION" --label "$label" --pid "$SERVER_PID" "$@") || true
  echo "{\"name\":\"$name\",\"result\":$line}" | tee -a "$OUT"
}

for round in $(seq "$ROUNDS"); do
  for label in A B; do
    bin=$A; [ "$label" = B ] && bin=$B
    echo "== round $round, $label ($bin)" >&2
    start "$bin"; run fanout-max "$label" fanout --subscribers 1000; stop
    start "$bin"; run rpc "$label" rpc --sockets 100 --inflight 10; stop
    start "$bin"; run connect "$label" connect --sockets 5000; stop
    start "$bin"; run idle-memory "$label" connect --sockets "$IDLE_SOCKETS" --hold 3; stop
  done
done

# Medians per scenario and build.
node -e '
const lines = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(JSON.parse);
const metric = {"fanout-max": "deliveries_per_s", "rpc": "acks_per_s", "connect": "handshakes_per_s", "idle-memory": "server_rss_bytes_per_socket"};
const cpu = {"fanout-max": "server_cpu_us_per_delivery", "rpc": "server_cpu_us_per_ack"};
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
for (const name of Object.keys(metric)) {
  const row = [name];
  for (const label of ["A", "B"]) {
    const runs = lines.filter((l) => l.name === name && l.result && l.result.label === label);
    const m = median(runs.map((l) => l.result[metric[name]]));
    const c = cpu[name] ? ` (${median(runs.map((l) => l.result[cpu[name]]))} us)` : "";
    row.push(`${label}: ${m}${c} [${runs.map((l) => l.result[metric[name]]).join(", ")}]`);
  }
  console.log(row.join("  "));
}' "$OUT"
