#!/usr/bin/env bash
# Side-by-side benchmark: examples/echo (release), the minimal SocketCluster-protocol server
# (bench/peers/minimal: the ceiling, what the kernel and the load generator allow here) and the
# Node reference (bench/peers/node-sc), the same `sc bench` scenarios against each, one after the
# other, each on a freshly started server; then sc as a cluster (2 workers + 1 broker) and two sc
# nodes through Redis against one node. Writes bench/results/latest.jsonl and bench/RESULTS.md.
#
#   bash bench/run.sh                 # DURATION=10 IDLE_SOCKETS=19000 STORM_SOCKETS=10000 by default
#   DURATION=5 IDLE_SOCKETS=5000 bash bench/run.sh
#   SERVER_CPUS=0-1 BENCH_CPUS=2-3 bash bench/run.sh   # pin server and generator to their own cores
#
# SERVER_CPUS / BENCH_CPUS (taskset CPU lists, unset by default) keep the load generator off the
# server's cores on a machine with enough of them; sc sizes its runtime to the cores it may use.
# OUT and RESULTS name the JSON lines and the rendered table (default bench/results/latest.jsonl
# and bench/RESULTS.md).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
IDLE_SOCKETS=${IDLE_SOCKETS:-19000}
STORM_SOCKETS=${STORM_SOCKETS:-10000}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
PORT=${PORT:-8700}
SERVER_CPUS=${SERVER_CPUS:-}
BENCH_CPUS=${BENCH_CPUS:-}
SERVER_PIN=()
BENCH_PIN=()
if [ -n "$SERVER_CPUS" ]; then SERVER_PIN=(taskset -c "$SERVER_CPUS"); fi
if [ -n "$BENCH_CPUS" ]; then BENCH_PIN=(taskset -c "$BENCH_CPUS"); fi
OUT=${OUT:-bench/results/latest.jsonl}
RESULTS=${RESULTS:-bench/RESULTS.md}
mkdir -p bench/results
: > "$OUT"

echo "== building (release)" >&2
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p echo -p sc-cli
# Its own workspace and lockfile (not a member of sc's), built into the same target directory.
cargo build --release -q --locked --manifest-path bench/peers/minimal/Cargo.toml --target-dir "$TARGET"
(cd bench/peers/node-sc && { [ -d node_modules ] || npm ci --silent --no-audit --no-fund; })

SC=$TARGET/release/sc
URL="ws://127.0.0.1:$PORT/socketcluster/"
SERVER_PID=""

wait_port() {
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "server on port $1 did not start" >&2; return 1
}

start() { # start PEER [ENV...]: PEER is sc, minimal or node
  local peer=$1; shift
  # A server left over on the port would answer in place of the one started here.
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "port $PORT is already in use" >&2; return 1
  fi
  if [ "$peer" = sc ]; then
    # The per-socket message rate limit (default 5000/s, bursts of 10000) is off: the Node
    # reference has none, and in rpc each of the 100 sockets carries more than 5000 invokes/s.
    env SC_PORT="$PORT" SC_HOST=127.0.0.1 SC_MESSAGE_RATE_LIMIT=0 RUST_LOG=warn "$@" \
      "${SERVER_PIN[@]}" "$TARGET/release/echo" >/dev/null 2>&1 &
  elif [ "$peer" = minimal ]; then
    env SC_PORT="$PORT" "$@" "${SERVER_PIN[@]}" "$TARGET/release/sc-bench-minimal" >/dev/null 2>&1 &
  else
    env SC_PORT="$PORT" "$@" "${SERVER_PIN[@]}" node bench/peers/node-sc/server.mjs >/dev/null 2>&1 &
  fi
  SERVER_PID=$!
  wait_port "$PORT"
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "the $peer server exited at start" >&2; return 1; }
}

stop() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  # Let the port and the kernel's socket buffers settle between runs.
  sleep 1
}

bench() { # bench NAME PEER PID_FLAG ARGS...
  local name=$1 peer=$2 pidflag=$3; shift 3
  echo "== $name ($peer)" >&2
  local line
  if line=$("${BENCH_PIN[@]}" "$SC" bench --url "$URL" --duration "$DURATION" --label "$peer" $pidflag "$@"); then :; else
    echo "   (the run reported a failure; recorded as is)" >&2
  fi
  echo "{\"name\":\"$name\",\"result\":$line}" >> "$OUT"
}

for peer in sc minimal node; do
  start "$peer"; bench fanout-max "$peer" "--pid $SERVER_PID" fanout --subscribers 1000; stop
  start "$peer"; bench fanout-20 "$peer" "--pid $SERVER_PID" fanout --subscribers 1000 --rate 20; stop
  start "$peer"; bench rpc "$peer" "--pid $SERVER_PID" rpc --sockets 100 --inflight 10; stop
  start "$peer"; bench connect "$peer" "--pid $SERVER_PID" connect --sockets 5000; stop
  start "$peer"; bench idle-memory "$peer" "--pid $SERVER_PID" connect --sockets "$IDLE_SOCKETS" --hold 3; stop
  # Every socket at once, as after a restart (issue 19: a short listen backlog showed here as
  # SYN-retransmit stalls of a full second).
  start "$peer"; bench storm "$peer" "--pid $SERVER_PID" storm --sockets "$STORM_SOCKETS"; stop
done

# History (issue 17): the same fan-out with every channel keeping its last 100 publications
# (each delivery carries its position); compared on server CPU per delivery.
start sc SC_HISTORY_SIZE=100 SC_HISTORY_TTL=300
bench fanout-max-history sc "--pid $SERVER_PID" fanout --subscribers 1000
stop

# Presence (issue 18): the soak's churn (connect, subscribe, publish, invoke, unsubscribe,
# disconnect) without and with presence on every channel; compared on server CPU per cycle.
start sc
bench soak sc "--pid $SERVER_PID" soak
stop
start sc SC_PRESENCE=1
bench soak-presence sc "--pid $SERVER_PID" soak
stop

# Deployments: one channel with 1000 subscribers and 8 publishing sockets (16 publishes in
# flight each) on one process, on 2 workers + 1 broker, and on two nodes through Redis, compared
# on server CPU per delivery summed over all server processes. Several publishers, so that each
# deployment runs saturated: one that is not batches less (more writes per delivery), which is
# then what its CPU per delivery would measure. (With one publishing socket a cluster used to be
# bounded by one publish per broker round trip; its publishes are pipelined now, see README.)
DEPLOY=(channels --channels 1 --subscribers 1000 --publishers 8 --inflight 16)
start sc
bench deploy-single sc "--pid $SERVER_PID" "${DEPLOY[@]}"
stop
# `--pid` is the master's: its workers' and broker's CPU count with it.
start sc SC_WORKERS=2 SC_BROKERS=1
bench deploy-cluster sc "--pid $SERVER_PID" "${DEPLOY[@]}"
stop

# Redis: one node alone vs two nodes sharing the channel (subscribers split over both).
if (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  PREFIX="bench:$RANDOM:"
  start sc SC_REDIS_URL="$REDIS_URL" SC_REDIS_PREFIX="$PREFIX"
  FIRST=$SERVER_PID
  PORT0=$PORT; PORT=$((PORT + 1))
  start sc SC_REDIS_URL="$REDIS_URL" SC_REDIS_PREFIX="$PREFIX"
  SECOND=$SERVER_PID
  PORT=$PORT0
  # Server CPU: both nodes and the Redis server (when it runs here: REDIS_PID, or found by name).
  REDIS_PID=${REDIS_PID:-$(pgrep -xo redis-server || true)}
  PIDS="--pid $FIRST --also-pid $SECOND"
  if [ -n "$REDIS_PID" ]; then PIDS="$PIDS --also-pid $REDIS_PID"; fi
  bench deploy-redis-2-nodes sc "$PIDS" "${DEPLOY[@]}" --also "ws://127.0.0.1:$((PORT + 1))/socketcluster/"
  SERVER_PID=$SECOND; stop; SERVER_PID=$FIRST; stop
else
  echo "== Redis is not running on 127.0.0.1:6379: the Redis comparison is skipped" >&2
fi

PINNED=""
if [ -n "$SERVER_CPUS$BENCH_CPUS" ]; then PINNED="SERVER_CPUS=$SERVER_CPUS BENCH_CPUS=$BENCH_CPUS "; fi
SERVER_CPUS="$SERVER_CPUS" BENCH_CPUS="$BENCH_CPUS" node bench/render.mjs "$OUT" "${PINNED}DURATION=$DURATION IDLE_SOCKETS=$IDLE_SOCKETS STORM_SOCKETS=$STORM_SOCKETS bash bench/run.sh" > "$RESULTS"
cat "$RESULTS"
