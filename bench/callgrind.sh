#!/usr/bin/env bash
# Instruction counts of sc's per-message paths, which do not move with the machine's load (unlike
# wall-clock figures, which vary by 10-20% run to run on a shared machine): the echo example
# (release) runs under `valgrind --tool=callgrind` on one core while `sc bench exact` does a fixed
# amount of work in lockstep. Each operation runs twice, N and 2N times, on fresh servers, and
#
#   instructions per operation = (I(2N) - I(N)) / N      (per delivery: / (N x subscribers))
#
# so start-up and shutdown cancel. Operations: one handshake (connect, #handshake, close), one
# invoke round trip (`echo`, 64-byte data), one delivery of a 64-byte publication (a publish to
# SUBSCRIBERS sockets; its own cost, the publish and its ack, is spread over them).
#
#   bash bench/callgrind.sh                  # prints a Markdown table; OUT=file also writes it
#   N_HANDSHAKE=100 N_INVOKE=1000 N_PUBLISH=100 SUBSCRIBERS=50 bash bench/callgrind.sh
set -euo pipefail
# A failure inside $(...) (a server that did not start, a workload cut short) must end the run,
# not leave a partial run's total to be read as a count.
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

N_HANDSHAKE=${N_HANDSHAKE:-200}
N_INVOKE=${N_INVOKE:-2000}
N_PUBLISH=${N_PUBLISH:-200}
SUBSCRIBERS=${SUBSCRIBERS:-50}
PORT=${PORT:-8720}
OUT=${OUT:-}
TARGET=${CARGO_TARGET_DIR:-target}
WORK=$(mktemp -d)
# A server left under valgrind would hold the port for the next run. (Its pid is kept in a
# file: each count runs in a $(...) subshell, whose variables the trap cannot see.)
trap '[ -f "$WORK/server.pid" ] && kill -TERM "$(cat "$WORK/server.pid")" 2>/dev/null; rm -rf "$WORK"' EXIT

echo "== building (release)" >&2
cargo build --release -q -p echo -p sc-cli
SC=$TARGET/release/sc
URL="ws://127.0.0.1:$PORT/socketcluster/"

wait_port() {
  for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0; sleep 0.1; done
  echo "the server on port $PORT did not start" >&2; return 1
}

# instructions OP COUNT: the echo server's total instruction count for COUNT operations.
instructions() {
  local op=$1 count=$2 file="$WORK/callgrind.$1.$2"
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "port $PORT is already in use" >&2; return 1
  fi
  # One core: one runtime thread, so the same work is scheduled the same way each run. Rate
  # limits off (the lockstep load is far below them, but a limit's clock reads vary with speed).
  SC_PORT=$PORT SC_HOST=127.0.0.1 SC_MESSAGE_RATE_LIMIT=0 RUST_LOG=warn \
    taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$file" \
    "$TARGET/release/echo" >/dev/null 2>"$WORK/valgrind.log" &
  local pid=$!
  echo "$pid" > "$WORK/server.pid"
  wait_port || return 1
  "$SC" bench --url "$URL" exact --op "$op" --count "$count" --subscribers "$SUBSCRIBERS" >/dev/null || return 1
  kill -TERM "$pid"
  wait "$pid" || true
  rm -f "$WORK/server.pid"
  # `summary: N` (or `totals: N`) is the instruction count of the whole run.
  grep -E '^(summary|totals):' "$file" | head -1 | awk '{print $2}'
}

# per OP N DIVISOR: instructions per operation from runs of N and 2N.
per() {
  local op=$1 n=$2 divisor=$3 one two
  one=$(instructions "$op" "$n")
  two=$(instructions "$op" $((2 * n)))
  echo "== $op: I($n) = $one, I($((2 * n))) = $two" >&2
  echo $(( (two - one) / divisor ))
}

handshake=$(per handshake "$N_HANDSHAKE" "$N_HANDSHAKE")
invoke=$(per invoke "$N_INVOKE" "$N_INVOKE")
delivery=$(per publish "$N_PUBLISH" $((N_PUBLISH * SUBSCRIBERS)))

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
TABLE="| path | instructions | workload (N and 2N) |
|---|---|---|
| one handshake (connect, \`#handshake\`, close) | $handshake | $N_HANDSHAKE connections |
| one invoke round trip (\`echo\`, 64 B) | $invoke | $N_INVOKE invokes on one socket |
| one delivery of a 64-byte publication | $delivery | $N_PUBLISH publishes x $SUBSCRIBERS subscribers |

Commit $COMMIT, $(valgrind --version), \`N_HANDSHAKE=$N_HANDSHAKE N_INVOKE=$N_INVOKE N_PUBLISH=$N_PUBLISH SUBSCRIBERS=$SUBSCRIBERS bash bench/callgrind.sh\`."
echo "$TABLE"
if [ -n "$OUT" ]; then echo "$TABLE" > "$OUT"; fi
