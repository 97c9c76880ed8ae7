#!/usr/bin/env bash
# One benchmark run as BENCHMARKS.md describes it: a fresh hub (release build)
# on its own PostgreSQL database (or the embedded SQLite file), the load
# generator against it, the JSON report in loadtest/results/.
#
#   loadtest/bench.sh NAME [loadtest flags...]
#
# Environment: STORE=postgres|sqlite (default postgres), any FLEETHUB_* setting
# for the hub (e.g. FLEETHUB_FANOUT__INTERVAL_MS=0), FLEETHUB_BIN to run another
# build of the hub (an A/B comparison), PERF=1 to record a
# `perf record -g` profile of the hub into /tmp/NAME.perf (PERF_DELAY=SECONDS
# starts it after the ramp-up, PERF_SECONDS sets its length, default 25), THREADS=1 to print
# the hub's threads with their CPU and context switches at the end, METRICS=1
# to print its latency histograms (fan-out, ack, commit).
#
# Example: FLEETHUB_FANOUT__INTERVAL_MS=0 loadtest/bench.sh 300-pg-interval0 \
#            --drivers 300 --duration 30s --ramp-up 5s --dashboards 20 --whole-city 1
set -euo pipefail
source "$(dirname "$0")/session.sh"
own_session "$0" "$@"
cd "$(dirname "$0")/.."
name=${1:?usage: loadtest/bench.sh NAME [loadtest flags...]}
shift

cargo build --release -p fleethub -p loadtest --bins --quiet
hub_bin=${FLEETHUB_BIN:-./target/release/fleethub}
export FLEETHUB_JWT_SECRET=${FLEETHUB_JWT_SECRET:-$(printf 'x%.0s' {1..40})}
export FLEETHUB_LISTEN=${FLEETHUB_LISTEN:-127.0.0.1:18090}
export RUST_LOG=${RUST_LOG:-warn}
workdir=$(mktemp -d)
db=""
case "${STORE:-postgres}" in
  postgres)
    db="fleethub_bench_$$"
    psql -q -h 127.0.0.1 -U postgres -c "create database $db" >/dev/null
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
    ;;
  sqlite)
    unset DATABASE_URL
    export FLEETHUB_DATABASE__SQLITE_PATH="$workdir/fleethub.db"
    ;;
  *) echo "STORE must be postgres or sqlite" >&2; exit 2 ;;
esac

"$hub_bin" serve > "$workdir/hub.log" 2>&1 &
hub=$!
cleanup() {
  if [[ -n "${METRICS:-}" ]]; then
    curl -s "http://$FLEETHUB_LISTEN/metrics" | grep -E '^fleethub_(fanout_latency|ack_latency|trail_commit)_seconds_(bucket|sum|count)' || true
  fi
  if [[ -n "${THREADS:-}" ]]; then
    echo "hub threads: name, CPU ticks (user+system), voluntary context switches"
    for t in /proc/"$hub"/task/*; do
      printf '  %-24s %6s %8s\n' "$(cat "$t/comm")" \
        "$(awk '{print $14 + $15}' "$t/stat")" \
        "$(awk '/^voluntary_ctxt_switches/ {print $2}' "$t/status")"
    done
  fi
  kill -TERM "$hub" 2>/dev/null && wait "$hub" 2>/dev/null || true
  [[ -n "$db" ]] && psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $db with (force)" >/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT
for _ in $(seq 100); do
  "$hub_bin" healthcheck >/dev/null 2>&1 && break
  sleep 0.1
done

if [[ -n "${PERF:-}" ]]; then
  (sleep "${PERF_DELAY:-0}" && perf record -g -p "$hub" -o "/tmp/$name.perf" -- sleep "${PERF_SECONDS:-25}") > /dev/null 2>&1 &
fi
mkdir -p loadtest/results
./target/release/fleethub-loadtest --url "ws://$FLEETHUB_LISTEN" --secret "$FLEETHUB_JWT_SECRET" \
  --server-pid "$hub" --json "loadtest/results/$name.json" "$@" 2>&1 \
  | grep -v ' INFO ' | tee "loadtest/results/$name.txt"
