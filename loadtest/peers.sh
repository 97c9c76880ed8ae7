#!/usr/bin/env bash
# One peer-benchmark run: a fresh NATS server with MQTT over WebSocket on
# 127.0.0.1:18083 (its JetStream store in a temporary folder), then
# fleethub-peerbench against it, the report in loadtest/results/NAME.txt.
#
#   loadtest/peers.sh NAME [peerbench flags...]
#
# Example: loadtest/peers.sh nats-300 --drivers 300 --duration 30s --ramp-up 5s
set -euo pipefail
source "$(dirname "$0")/session.sh"
own_session "$0" "$@"
cd "$(dirname "$0")/.."
name=${1:?usage: loadtest/peers.sh NAME [peerbench flags...]}
shift

cargo build --release -p loadtest --bins --quiet
workdir=$(mktemp -d)
cat > "$workdir/nats.conf" <<CONF
listen: 127.0.0.1:14222
server_name: peerbench
jetstream { store_dir: "$workdir/js" }
mqtt { listen: 127.0.0.1:11883 }
websocket { listen: "127.0.0.1:18083", no_tls: true }
CONF
nats-server -c "$workdir/nats.conf" > "$workdir/nats.log" 2>&1 &
broker=$!
trap 'kill "$broker" 2>/dev/null; wait "$broker" 2>/dev/null; rm -rf "$workdir"' EXIT
for _ in $(seq 100); do
  grep -q "Server is ready" "$workdir/nats.log" && break
  sleep 0.1
done
mkdir -p loadtest/results
echo "nats-server $(nats-server --version | awk '{print $2}')" | tee "loadtest/results/$name.txt"
./target/release/fleethub-peerbench --url ws://127.0.0.1:18083/mqtt --server-pid "$broker" "$@" \
  | tee -a "loadtest/results/$name.txt"
