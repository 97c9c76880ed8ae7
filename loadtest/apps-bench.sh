#!/usr/bin/env bash
# The ingest paths side by side, as BENCHMARKS.md describes: one fresh hub
# (release build) on its own PostgreSQL database, a Mosquitto of its own, and
# fleethub-appbench measuring positions per second, durable, through the
# WebSocket protocol, OsmAnd over keep-alive HTTP and OwnTracks over MQTT.
#
#   loadtest/apps-bench.sh NAME [fleethub-appbench flags...]
#
# Environment: MQTT_INFLIGHT, Mosquitto's max_inflight_messages (default 2048,
# the hub's mqtt.max_inflight; Mosquitto's own default is 20), any FLEETHUB_* setting for the hub.
# HUB_LOG=FILE keeps the hub's log. The report lands in
# loadtest/results/NAME.json and .txt.
set -euo pipefail
source "$(dirname "$0")/session.sh"
own_session "$0" "$@"
cd "$(dirname "$0")/.."
name=${1:?usage: loadtest/apps-bench.sh NAME [fleethub-appbench flags...]}
shift

cargo build --release -p fleethub -p loadtest --bins --quiet
export FLEETHUB_JWT_SECRET=${FLEETHUB_JWT_SECRET:-$(printf 'x%.0s' {1..40})}
export FLEETHUB_LISTEN=${FLEETHUB_LISTEN:-127.0.0.1:18090}
export RUST_LOG=${RUST_LOG:-warn}
# The benchmark's drivers send as fast as acks let them: far above a phone's
# rate limit, which is not what is measured here.
export FLEETHUB_DRIVER__RATE_PER_SEC=${FLEETHUB_DRIVER__RATE_PER_SEC:-100000}
export FLEETHUB_DRIVER__RATE_BURST=${FLEETHUB_DRIVER__RATE_BURST:-100000}
workdir=$(mktemp -d)
db="fleethub_bench_$$"
psql -q -h 127.0.0.1 -U postgres -c "create database $db" >/dev/null
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"

mqtt_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$workdir/mosquitto.conf" <<CONF
listener $mqtt_port 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages ${MQTT_INFLIGHT:-2048}
max_queued_messages 1000000
CONF
mosquitto -c "$workdir/mosquitto.conf" > "$workdir/mosquitto.log" 2>&1 &
broker=$!
export MQTT_URL="mqtt://127.0.0.1:$mqtt_port"

./target/release/fleethub serve > "$workdir/hub.log" 2>&1 &
hub=$!
cleanup() {
  kill -TERM "$hub" 2>/dev/null && wait "$hub" 2>/dev/null || true
  if [[ -n "${HUB_LOG:-}" ]]; then cp "$workdir/hub.log" "$HUB_LOG"; fi
  kill -TERM "$broker" 2>/dev/null && wait "$broker" 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $db with (force)" >/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT
for _ in $(seq 100); do
  ./target/release/fleethub healthcheck >/dev/null 2>&1 && break
  sleep 0.1
done
for _ in $(seq 100); do
  curl -s "http://$FLEETHUB_LISTEN/readyz" | grep -q '"mqtt":"ok"' && break
  sleep 0.1
done

mkdir -p loadtest/results
./target/release/fleethub-appbench --url "http://$FLEETHUB_LISTEN" \
  --mqtt "127.0.0.1:$mqtt_port" --server-pid "$hub" \
  --json "loadtest/results/$name.json" "$@" 2>&1 | tee "loadtest/results/$name.txt"
# What is in the trail store: every position counted above, and those that
# were stored after a path's window closed.
echo "positions in the trail store: $(psql -tA -h 127.0.0.1 -U postgres -d "$db" -c 'select count(*) from positions')"
# With --fences: what the evaluation raised, by kind.
echo "events stored: $(psql -tA -h 127.0.0.1 -U postgres -d "$db" -c "select coalesce(string_agg(kind || ' ' || n, ', '), 'none') from (select kind, count(*) n from events group by kind order by kind) k")"
