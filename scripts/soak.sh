#!/usr/bin/env bash
# Soak test: run `tcpool serve` under churning load for SECONDS and check that its memory and
# descriptors are flat at the end.
#
#   scripts/soak.sh SECONDS          (CI runs 20; a long run is 600 or more)
#
# The server is `$TCPOOL_BIN`, else the release build (built if missing). It listens on
# 127.0.0.1 with a port of its own choosing; the load is scripts/soak_load.py (churn, resets,
# slow readers, idle clients, half-closes, steady round trips), which checks every echo.
#
# Phases: a warm-up load (a fifth of the time, at least 2 s), a settle, the START sample; the
# main load, a settle, the END sample. Each second the server's VmRSS and descriptor count are
# printed. The run fails when the load saw a wrong or missing echo, when the descriptors do
# not return to START, when RSS ends more than SOAK_RSS_TOLERANCE_KIB (default 2048) above
# START, when the server dies or panics, or when it does not exit 0 on SIGTERM.
set -euo pipefail

usage() {
  echo "usage: $0 SECONDS (at least 5)" >&2
  exit 2
}
[ "$#" -eq 1 ] || usage
case "$1" in '' | *[!0-9]*) usage ;; esac
seconds=$1
[ "$seconds" -ge 5 ] || usage

root=$(cd "$(dirname "$0")/.." && pwd)
tolerance_kib=${SOAK_RSS_TOLERANCE_KIB:-2048}
settle_limit=15 # seconds a settle may take before the descriptors count as leaked

bin=${TCPOOL_BIN:-}
if [ -z "$bin" ]; then
  bin="${CARGO_TARGET_DIR:-$root/target}/release/tcpool"
  if [ ! -x "$bin" ]; then
    echo "soak: building $bin" >&2
    (cd "$root" && cargo build --release --quiet)
  fi
fi
[ -x "$bin" ] || {
  echo "soak: no tcpool binary at $bin" >&2
  exit 2
}

work=$(mktemp -d)
server_pid=""
load_pid=""
cleanup() {
  local pid
  for pid in "$load_pid" "$server_pid"; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$bin" serve --bind 127.0.0.1 --port 0 --workers 2 --shutdown-timeout 5 \
  </dev/null >"$work/server.out" 2>"$work/server.log" &
server_pid=$!

addr=""
for _ in $(seq 100); do
  addr=$(sed -n 's/.*listening on \(127\.0\.0\.1:[0-9]*\).*/\1/p' "$work/server.log" | head -n 1)
  [ -n "$addr" ] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "soak: the server did not start:" >&2
  cat "$work/server.log" >&2
  exit 1
fi
port=${addr##*:}

rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$server_pid/status"; }
fds() { ls "/proc/$server_pid/fd" | wc -l; }

clock=0
peak_rss=0
peak_fds=0
sample() {
  local r f
  r=$(rss)
  f=$(fds)
  [ "$r" -gt "$peak_rss" ] && peak_rss=$r
  [ "$f" -gt "$peak_fds" ] && peak_fds=$f
  printf '%6d  %9s  %5s  %s\n' "$clock" "$r" "$f" "$1"
}

# Runs the load for $1 seconds, sampling each second; fails the run if the load failed.
run_load() {
  local phase=$1 secs=$2 status=0
  python3 "$root/scripts/soak_load.py" 127.0.0.1 "$port" "$secs" >"$work/load.out" 2>&1 &
  load_pid=$!
  while kill -0 "$load_pid" 2>/dev/null; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "soak: FAIL: the server died during the $phase load"
      tail -n 20 "$work/server.log"
      exit 1
    fi
    sample "$phase"
    sleep 1
    clock=$((clock + 1))
  done
  wait "$load_pid" || status=$?
  load_pid=""
  sed "s/^/soak: $phase /" "$work/load.out"
  if [ "$status" -ne 0 ]; then
    echo "soak: FAIL: the $phase load got wrong or missing answers (exit $status)"
    exit 1
  fi
}

# Waits until the descriptor count is back to $1 (at most $settle_limit seconds); fails the
# run if it does not come back.
settle() {
  local phase=$1 want=$2 i
  for i in $(seq $((settle_limit * 10))); do
    if [ "$(fds)" -le "$want" ]; then
      sleep 1 # let freed memory go back where the allocator gives it back
      return 0
    fi
    sleep 0.1
  done
  echo "soak: FAIL: descriptors still at $(fds) (idle: $want) $settle_limit s after the $phase load"
  ls -l "/proc/$server_pid/fd" || true
  exit 1
}

warmup=$((seconds / 5))
[ "$warmup" -ge 2 ] || warmup=2
main=$((seconds - warmup))

echo "soak: server pid $server_pid on $addr; $warmup s warm-up, $main s main load"
printf '%6s  %9s  %5s  %s\n' sec rss_kib fds phase
idle_fds=$(fds)
sample idle

run_load warm-up "$warmup"
settle warm-up "$idle_fds"
start_rss=$(rss)
start_fds=$(fds)
sample START

run_load main "$main"
settle main "$start_fds"
end_rss=$(rss)
end_fds=$(fds)
sample END

echo "soak: start rss=${start_rss} KiB fds=${start_fds}"
echo "soak: end   rss=${end_rss} KiB fds=${end_fds} (rss change $((end_rss - start_rss)) KiB, tolerance ${tolerance_kib} KiB)"
echo "soak: peak  rss=${peak_rss} KiB fds=${peak_fds} (sampled once a second)"

failed=0
if [ "$end_rss" -gt $((start_rss + tolerance_kib)) ]; then
  echo "soak: FAIL: RSS grew by $((end_rss - start_rss)) KiB (tolerance $tolerance_kib KiB)"
  failed=1
fi

kill -TERM "$server_pid"
code=""
for _ in $(seq 100); do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    code=0
    wait "$server_pid" || code=$?
    break
  fi
  sleep 0.1
done
server_pid_done=$server_pid
server_pid=""
if [ -z "$code" ]; then
  echo "soak: FAIL: the server did not exit within 10 s of SIGTERM"
  kill -KILL "$server_pid_done" 2>/dev/null || true
  failed=1
elif [ "$code" -ne 0 ]; then
  echo "soak: FAIL: the server exited $code on SIGTERM"
  tail -n 20 "$work/server.log"
  failed=1
fi
if grep -q "panicked" "$work/server.log"; then
  echo "soak: FAIL: the server log shows a panic"
  grep -n "panicked" "$work/server.log" | head -n 5
  failed=1
fi
sed 's/^/soak: server: /' "$work/server.out"

if [ "$failed" -ne 0 ]; then
  exit 1
fi
echo "soak: PASS"
