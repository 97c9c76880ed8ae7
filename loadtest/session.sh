# Sourced by bench.sh and peers.sh as `own_session "$0" "$@"`, before anything
# else runs. Linux shares CPU between sessions, not processes: the script runs
# again in a session of its own with a higher share, so other work on the
# machine does not decide the tail latency; and with the open-files limit
# the largest fleets need.
own_session() {
  local script=$1
  shift
  if [[ -z "${FLEETHUB_BENCH_SESSION:-}" ]]; then
    export FLEETHUB_BENCH_SESSION=1
    exec setsid --wait "$script" "$@"
  fi
  echo -15 > /proc/self/autogroup 2>/dev/null || true
  ulimit -n 20000
}
