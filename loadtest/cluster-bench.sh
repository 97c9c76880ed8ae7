#!/usr/bin/env bash
# A cluster benchmark on this machine: two hub nodes (the release build) on one
# fresh PostgreSQL database and a Redis of their own, the load generator
# spread over both (driver i and dashboard j on node i % 2 / j % 2), then
# what the cluster bus cost: Redis messages and bytes per position, Redis CPU
# per 1,000 positions, next to the hubs' CPU and the same-node / cross-node
# end-to-end latency of the same run.
#
#   loadtest/cluster-bench.sh NAME [loadtest flags...]
#
# Environment:
#   CLUSTER=1            a three-master Redis Cluster (sharded pub/sub) instead of one redis-server
#   FLEETHUB_BIN         the hub binary (default target/release/fleethub; this script
#                        builds only the load generator: build the hub yourself)
#   FLEETHUB_FANOUT__INTERVAL_MS  the hubs' fan-out interval (default 0)
#   FLEETHUB_REDIS__SHARDED       with CLUSTER=1 (default true)
#   any other FLEETHUB_* setting is passed to both hubs
#   KEEP_LOGS=1          keep the hubs' and Redis's logs (their folder is printed)
#
# Output: loadtest/results/NAME.txt (the generator's report and the cluster
# summary), NAME.json (the generator's report), NAME.cluster.json (the summary).
#
# Example: loadtest/cluster-bench.sh cluster-300 --drivers 300 --duration 30s \
#            --ramp-up 5s --dashboards 20 --whole-city 1
set -euo pipefail
source "$(dirname "$0")/session.sh"
own_session "$0" "$@"
cd "$(dirname "$0")/.."
name=${1:?usage: loadtest/cluster-bench.sh NAME [loadtest flags...]}
shift

cargo build --release -p loadtest --bins --quiet
hub_bin=${FLEETHUB_BIN:-target/release/fleethub}
if [[ ! -x "$hub_bin" ]]; then
  echo "no hub binary at $hub_bin: build it (cargo build --release -p fleethub) or set FLEETHUB_BIN" >&2
  exit 2
fi
if [[ -z "${FLEETHUB_BIN:-}" ]] && [[ -n "$(find src -name '*.rs' -newer "$hub_bin" -print -quit)" ]]; then
  echo "warning: $hub_bin is older than src/ (rebuild it: cargo build --release -p fleethub)" >&2
fi
export FLEETHUB_JWT_SECRET=${FLEETHUB_JWT_SECRET:-$(printf 'x%.0s' {1..40})}
export FLEETHUB_FANOUT__INTERVAL_MS=${FLEETHUB_FANOUT__INTERVAL_MS:-0}
export RUST_LOG=${RUST_LOG:-warn}
cluster=${CLUSTER:-0}
[[ "$cluster" == 1 ]] || cluster=0

workdir=$(mktemp -d /tmp/cluster-bench.XXXXXX)
db=""
redis_pids=()
hub_pids=()
cleanup() {
  local pid
  for pid in "${hub_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${hub_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for pid in "${redis_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${redis_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -n "$db" ]]; then
    psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $db with (force)" >/dev/null 2>&1 || true
  fi
  if [[ -n "${KEEP_LOGS:-}" ]]; then
    echo "logs kept in $workdir" >&2
  else
    rm -rf "$workdir"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A loopback port nobody listens on, not handed out before by this script;
# for Redis Cluster also its bus port (port + 10000).
taken=" "
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 10000))
    [[ "$taken" == *" $p "* || "$taken" == *" $((p + 10000)) "* ]] && continue
    if port_free "$p" && port_free $((p + 10000)); then
      taken+="$p $((p + 10000)) "
      echo "$p"
      return
    fi
  done
  echo "no free port found" >&2
  return 1
}

# Fails with the log's tail if process $1 died while waiting for `$2...` to succeed.
wait_for() {
  local pid=$1 log=$2
  shift 2
  for _ in $(seq 200); do
    "$@" >/dev/null 2>&1 && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "process $pid exited; the end of $log:" >&2
      tail -20 "$log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "timed out waiting for: $*" >&2
  return 1
}

# --- Redis -------------------------------------------------------------------
redis_ports=()
start_redis() {
  local port=$1
  shift
  mkdir -p "$workdir/redis-$port"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --dir "$workdir/redis-$port" "$@" > "$workdir/redis-$port.log" 2>&1 &
  redis_pids+=($!)
  redis_ports+=("$port")
  wait_for $! "$workdir/redis-$port.log" redis-cli -p "$port" ping
}
if [[ "$cluster" == 1 ]]; then
  for _ in 1 2 3; do
    start_redis "$(free_port)" --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-node-timeout 5000
  done
  redis-cli --cluster create "${redis_ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes \
    > "$workdir/cluster-create.log" 2>&1 || { cat "$workdir/cluster-create.log" >&2; exit 2; }
  for port in "${redis_ports[@]}"; do
    for _ in $(seq 100); do
      redis-cli -p "$port" cluster info | grep -q '^cluster_state:ok' && break
      sleep 0.1
    done
  done
  REDIS_URL=$(printf 'redis://127.0.0.1:%s,' "${redis_ports[@]}")
  export REDIS_URL=${REDIS_URL%,}
  export FLEETHUB_REDIS__CLUSTER=true
  export FLEETHUB_REDIS__SHARDED=${FLEETHUB_REDIS__SHARDED:-true}
  redis_mode="three-master Redis Cluster (ports ${redis_ports[*]}), sharded pub/sub $FLEETHUB_REDIS__SHARDED"
else
  start_redis "$(free_port)"
  export REDIS_URL="redis://127.0.0.1:${redis_ports[0]}"
  redis_mode="one redis-server (port ${redis_ports[0]})"
fi
redis_version=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')

# Sum of field $2 (`name:value` lines) of `INFO $1` over every Redis instance.
redis_sum() {
  local port total=0 v
  for port in "${redis_ports[@]}"; do
    v=$(redis-cli -p "$port" info "$1" | tr -d '\r' | awk -F: -v k="$2" '$1 == k {print $2}')
    total=$(awk -v a="$total" -v b="${v:-0}" 'BEGIN {printf "%.6f", a + b}')
  done
  echo "$total"
}
# Calls of one command (INFO commandstats), summed over every instance.
redis_calls() {
  local port total=0 v
  for port in "${redis_ports[@]}"; do
    v=$(redis-cli -p "$port" info commandstats | tr -d '\r' \
      | sed -n "s/^cmdstat_$1:calls=\([0-9]*\),.*/\1/p")
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
redis_snapshot() {
  # CPU first: the INFO calls below cost Redis a little too.
  cpu=$(awk -v a="$(redis_sum cpu used_cpu_sys)" -v b="$(redis_sum cpu used_cpu_user)" \
    'BEGIN {printf "%.6f", a + b}')
  commands=$(redis_sum stats total_commands_processed)
  info_calls=$(redis_calls info)
  publish_calls=$(redis_calls publish)
  spublish_calls=$(redis_calls spublish)
  net_in=$(redis_sum stats total_net_input_bytes)
  net_out=$(redis_sum stats total_net_output_bytes)
  echo "$cpu $commands $info_calls $publish_calls $spublish_calls $net_in $net_out"
}

# --- PostgreSQL and the hubs ---------------------------------------------------
db="fleethub_cbench_$$"
psql -q -h 127.0.0.1 -U postgres -c "create database $db" >/dev/null
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
REDIS_URL="" "$hub_bin" migrate > "$workdir/migrate.log" 2>&1 || { cat "$workdir/migrate.log" >&2; exit 2; }

ulimit -n 20000
nodes=(node-a node-b)
hub_ports=()
for node in "${nodes[@]}"; do
  port=$(free_port)
  FLEETHUB_NODE_ID=$node FLEETHUB_LISTEN=127.0.0.1:$port "$hub_bin" serve > "$workdir/$node.log" 2>&1 &
  hub_pids+=($!)
  hub_ports+=("$port")
done
for i in "${!nodes[@]}"; do
  wait_for "${hub_pids[$i]}" "$workdir/${nodes[$i]}.log" curl -sf "http://127.0.0.1:${hub_ports[$i]}/healthz"
done

# Sum of a counter's series (any labels) in one hub's /metrics; "NA" when absent.
metric() {
  curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '
    $1 == m || index($1, m "{") == 1 {s += $NF; n++}
    END {if (n) printf "%.0f", s; else print "NA"}'
}
counters=(fleethub_cluster_messages_published_total fleethub_cluster_bytes_published_total
  fleethub_cluster_positions_published_total fleethub_cluster_messages_received_total
  fleethub_cluster_positions_received_total fleethub_positions_received_total)
declare -A before after
snapshot_hubs() {
  local -n into=$1
  local i c
  for i in "${!nodes[@]}"; do
    for c in "${counters[@]}"; do
      into[${nodes[$i]},$c]=$(metric "${hub_ports[$i]}" "$c")
    done
    into[${nodes[$i]},cpu]=$(proc_cpu "${hub_pids[$i]}")
  done
}
# User + system CPU seconds of a process (0 when it is gone).
proc_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null \
    || echo 0
}

echo "cluster bench $name: nodes ${nodes[*]} on ports ${hub_ports[*]}, $redis_mode," \
  "redis $redis_version, fanout interval ${FLEETHUB_FANOUT__INTERVAL_MS} ms" >&2
snapshot_hubs before
read -r r0_cpu r0_cmd r0_info r0_pub r0_spub r0_in r0_out <<< "$(redis_snapshot)"

mkdir -p loadtest/results
urls=()
pids=()
for i in "${!nodes[@]}"; do
  urls+=(--url "ws://127.0.0.1:${hub_ports[$i]}")
  pids+=(--server-pid "${hub_pids[$i]}")
done
for pid in "${redis_pids[@]}"; do pids+=(--aux-pid "$pid"); done
set +e
./target/release/fleethub-loadtest "${urls[@]}" --secret "$FLEETHUB_JWT_SECRET" "${pids[@]}" \
  --json "loadtest/results/$name.json" "$@" 2>&1 \
  | grep -v ' INFO ' | tee "loadtest/results/$name.txt"
status=${PIPESTATUS[0]}
set -e

read -r r1_cpu r1_cmd r1_info r1_pub r1_spub r1_in r1_out <<< "$(redis_snapshot)"
snapshot_hubs after
for i in "${!nodes[@]}"; do
  kill -0 "${hub_pids[$i]}" 2>/dev/null || echo "warning: ${nodes[$i]} died during the run" >&2
done
json=loadtest/results/$name.json
if [[ ! -s "$json" ]]; then
  echo "the load generator wrote no report (exit $status)" >&2
  exit "$status"
fi

# --- The summary ---------------------------------------------------------------
# Everything below is over the whole generator run (ramp-up, window, drain),
# the span of the Redis and hub counters, except where it says "window".
delta() { # COUNTER [NODE]: after - before, summed over the hubs (or one); NA if absent
  local c=$1 node sum=0 seen=0 a b
  for node in "${2:-${nodes[@]}}"; do
    a=${after[$node,$c]}
    b=${before[$node,$c]}
    [[ "$a" == NA ]] && continue
    [[ "$b" == NA ]] && b=0
    sum=$((sum + a - b))
    seen=1
  done
  if ((seen)); then echo "$sum"; else echo NA; fi
}
summary=$(
  jq -n \
    --arg name "$name" \
    --arg redis_mode "$redis_mode" \
    --arg redis_version "$redis_version" \
    --arg hub_bin "$hub_bin" \
    --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --argjson cluster "$cluster" \
    --argjson interval "$FLEETHUB_FANOUT__INTERVAL_MS" \
    --argjson report "$(cat "$json")" \
    --arg msgs "$(delta fleethub_cluster_messages_published_total)" \
    --arg bytes "$(delta fleethub_cluster_bytes_published_total)" \
    --arg pos_pub "$(delta fleethub_cluster_positions_published_total)" \
    --arg msgs_recv "$(delta fleethub_cluster_messages_received_total)" \
    --arg pos_recv "$(delta fleethub_cluster_positions_received_total)" \
    --arg a_recv "$(delta fleethub_positions_received_total node-a)" \
    --arg b_recv "$(delta fleethub_positions_received_total node-b)" \
    --argjson hub_cpu "$(awk -v a="${after[node-a,cpu]}" -v b="${before[node-a,cpu]}" \
      -v c="${after[node-b,cpu]}" -v d="${before[node-b,cpu]}" 'BEGIN {printf "%.2f", a - b + c - d}')" \
    --argjson redis_cpu "$(awk -v a="$r1_cpu" -v b="$r0_cpu" 'BEGIN {printf "%.6f", a - b}')" \
    --argjson commands "$(awk -v a="$r1_cmd" -v b="$r0_cmd" -v i="$((r1_info - r0_info))" 'BEGIN {printf "%.0f", a - b - i}')" \
    --argjson publish "$((r1_pub - r0_pub))" \
    --argjson spublish "$((r1_spub - r0_spub))" \
    --argjson net_in "$(awk -v a="$r1_in" -v b="$r0_in" 'BEGIN {printf "%.0f", a - b}')" \
    --argjson net_out "$(awk -v a="$r1_out" -v b="$r0_out" 'BEGIN {printf "%.0f", a - b}')" \
    '
    def num: if . == "NA" then null else tonumber end;
    def per(a; b): if a == null or b == null or b == 0 then null else a / b end;
    ($report.positions.written) as $written
    | {
      name: $name,
      commit: $commit,
      hub_bin: $hub_bin,
      redis: {mode: $redis_mode, version: $redis_version, cluster: ($cluster == 1)},
      fanout_interval_ms: $interval,
      drivers: $report.scenario.drivers,
      window_s: $report.window_s,
      positions: {
        sent: $report.positions.sent,
        written: $written,
        received_by_node: {"node-a": ($a_recv | num), "node-b": ($b_recv | num)}
      },
      hub_counters: {
        messages_published: ($msgs | num),
        bytes_published: ($bytes | num),
        positions_published: ($pos_pub | num),
        messages_received: ($msgs_recv | num),
        positions_received: ($pos_recv | num)
      },
      redis_messages_per_position: per($msgs | num; $written),
      redis_bytes_per_position: per($bytes | num; $written),
      positions_per_redis_message: per($pos_pub | num; $msgs | num),
      redis_server: {
        cpu_seconds: $redis_cpu,
        cpu_s_per_1000_positions: per($redis_cpu * 1000; $written),
        commands: $commands,
        commands_per_position: per($commands; $written),
        publish_calls: $publish,
        spublish_calls: $spublish,
        net_input_bytes: $net_in,
        net_output_bytes: $net_out,
        window_cpu_s_per_1000_positions: $report.aux.cpu_s_per_1000_positions
      },
      hubs: {
        cpu_seconds: $hub_cpu,
        cpu_s_per_1000_positions: per($hub_cpu * 1000; $written),
        window_cpu_us_per_position: $report.server.cpu_us_per_position,
        window_cpu_s_per_1000_positions: $report.server.cpu_s_per_1000_positions
      },
      e2e_latency: {
        all: $report.e2e_latency,
        same_node: $report.e2e_same_node,
        cross_node: $report.e2e_cross_node
      },
      passed: $report.passed
    }'
)
echo "$summary" > "loadtest/results/$name.cluster.json"
jq -r '
  def f(d): if . == null then "n/a" else (. * pow(10; d) | round) / pow(10; d) | tostring end;
  def lat: if .samples == 0 then "no samples" else "p50 \(.p50_ms | f(3)) ms  p99 \(.p99_ms | f(3)) ms  max \(.max_ms | f(3)) ms  (\(.samples) samples)" end;
  "cluster summary (\(.redis.mode), redis \(.redis.version), fan-out interval \(.fanout_interval_ms) ms, hub \(.hub_bin) at \(.commit)); whole run unless \"window\":",
  "  positions: sent \(.positions.sent), written \(.positions.written) (resends included): node-a took \(.positions.received_by_node["node-a"]), node-b \(.positions.received_by_node["node-b"])",
  "  hub counters: Redis messages published \(.hub_counters.messages_published // "n/a"), bytes \(.hub_counters.bytes_published // "n/a"), positions published \(.hub_counters.positions_published // "n/a"); messages received \(.hub_counters.messages_received // "n/a"), positions received \(.hub_counters.positions_received // "n/a")",
  "  Redis messages published per position: \(.redis_messages_per_position | f(4))   bytes per position: \(.redis_bytes_per_position | f(1))   positions per message: \(.positions_per_redis_message | f(1))",
  "  Redis: \(.redis_server.cpu_seconds | f(3)) CPU s = \(.redis_server.cpu_s_per_1000_positions | f(4)) CPU s per 1,000 positions (window: \(.redis_server.window_cpu_s_per_1000_positions | f(4))); \(.redis_server.commands) commands (\(.redis_server.commands_per_position | f(3)) per position; PUBLISH \(.redis_server.publish_calls), SPUBLISH \(.redis_server.spublish_calls)); network in \(.redis_server.net_input_bytes) B, out \(.redis_server.net_output_bytes) B",
  "  hubs: \(.hubs.cpu_seconds | f(2)) CPU s = \(.hubs.cpu_s_per_1000_positions | f(4)) CPU s per 1,000 positions; window: \(.hubs.window_cpu_us_per_position | f(1)) µs per position (\(.hubs.window_cpu_s_per_1000_positions | f(4)) s per 1,000)",
  "  e2e same-node:  \(.e2e_latency.same_node | lat)",
  "  e2e cross-node: \(.e2e_latency.cross_node | lat)"
' <<< "$summary" | tee -a "loadtest/results/$name.txt"
if [[ "$(jq -r .hub_counters.messages_published <<< "$summary")" == null ]]; then
  echo "  (the hubs export no fleethub_cluster_* counters: a hub build without the Redis bus?)" \
    | tee -a "loadtest/results/$name.txt"
fi
exit "$status"
