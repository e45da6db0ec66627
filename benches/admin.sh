#!/usr/bin/env bash
# What observing the server costs: echo throughput and CPU per message with `--admin` off and
# on (scraped once a second), in interleaved runs, then the time of one `/metrics` scrape
# (and of `/stats`, `/sessions`) with SESSIONS idle sessions connected, then the latency of
# one admin request: REQUESTS sequential `/healthz` and `/stats` on one kept-alive connection
# (Python's http.client), median and p99.
#
#   bash benches/admin.sh                 # 5 interleaved pairs of 3 s runs, 10,000 sessions
#   RUNS=3 SESSIONS=2000 bash benches/admin.sh
#   PARTS=latency REQUESTS=5000 bash benches/admin.sh
#
# Settings (environment): PARTS to run ("load scrape latency"), RUNS pairs (5), DURATION
# seconds per run (3), CONNECTIONS for the load (64), SESSIONS for the scrape (10000; needs
# that many descriptors twice over, for the server and the client), REQUESTS per route for the
# latency (2000). The generator shares the machine's cores with the server: check
# `uptime` first, other work shows up as noise. CPU per message is the server's user + system
# time from /proc/PID/stat over the run, divided by the messages answered.
#
# Bounded: every run is limited by `timeout`, and whatever the script started is killed on
# exit.

set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
DURATION=${DURATION:-3}
CONNECTIONS=${CONNECTIONS:-64}
SESSIONS=${SESSIONS:-10000}
REQUESTS=${REQUESTS:-2000}
PARTS=${PARTS:-load scrape latency}
part() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

cargo build --release -q
bin=target/release/tcpool
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
tick=$(getconf CLK_TCK)

# Starts `tcpool serve ARGS` on free ports; sets $pid, $port and $admin (empty without --admin).
start() {
    "$bin" serve --port 0 "$@" </dev/null >/dev/null 2>"$tmp/err" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 100); do grep -q ' listening on' "$tmp/err" && break; sleep 0.1; done
    port=$(grep -o ' listening on [0-9.]*:[0-9]*' "$tmp/err" | head -1 | awk -F: '{print $2}')
    admin=$(grep -o 'admin endpoint on http://[0-9.:]*' "$tmp/err" | sed 's#.*http://##' || true)
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# One measured run against the server started last; prints msgs/s and CPU us per message.
measure() {
    local label=$1 before after scraper=""
    if [ -n "$admin" ]; then
        (for _ in $(seq $((DURATION + 3))); do
            curl -s -o /dev/null --max-time 2 "http://$admin/metrics" || true
            sleep 1
        done) &
        scraper=$!
    fi
    before=$(cpu_ticks "$pid")
    timeout $((DURATION + 30)) "$bin" bench "127.0.0.1:$port" -c "$CONNECTIONS" -d "${DURATION}s" \
        --warmup 0.5s --json >"$tmp/report.json"
    after=$(cpu_ticks "$pid")
    [ -n "$scraper" ] && kill "$scraper" 2>/dev/null || true
    python3 - "$label" "$before" "$after" "$tick" "$tmp/report.json" <<'EOF'
import json, sys
label, before, after, tick, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
r = json.load(open(path))
cpu = (after - before) / tick
print("%-10s %10.0f msg/s  p50 %6d us  p99 %7d us  server CPU %.2f us/msg  errors %d" % (
    label, r["msgs_per_sec"], r["latency_us"]["p50"], r["latency_us"]["p99"],
    cpu / max(1, r["messages"]) * 1e6, r["errors"]))
EOF
}

stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; }

if part load; then
echo "echo load: $CONNECTIONS connections, ${DURATION}s runs, --admin off and on (scraped every second)"
for run in $(seq "$RUNS"); do
    if [ $((run % 2)) -eq 1 ]; then order="off on"; else order="on off"; fi
    for which in $order; do
        if [ "$which" = on ]; then start --admin 127.0.0.1:0; else start; fi
        measure "admin-$which"
        stop
    done
done
echo
fi

if part scrape; then
echo "scrape cost with $SESSIONS idle sessions"
start --admin 127.0.0.1:0
timeout 300 python3 - "$port" "$admin" "$SESSIONS" <<'EOF'
import resource, socket, statistics, sys, time, urllib.request
port, admin, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
def timed(path, k):
    times = []
    for _ in range(k):
        t = time.perf_counter()
        body = urllib.request.urlopen("http://%s%s" % (admin, path), timeout=30).read()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, min(times) * 1e3, len(body)
print("%6d sessions  /metrics   median %7.2f ms  min %7.2f ms  %8d bytes" % ((0,) + timed("/metrics", 20)))
socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
deadline = time.time() + 60
while time.time() < deadline:
    text = urllib.request.urlopen("http://%s/metrics" % admin, timeout=30).read().decode()
    active = [l for l in text.splitlines() if l.startswith("tcpool_sessions_active ")]
    if active and float(active[0].split()[1]) >= n:
        break
    time.sleep(0.1)
for path, k in (("/metrics", 20), ("/stats", 20), ("/sessions", 5)):
    print("%6d sessions  %-10s median %7.2f ms  min %7.2f ms  %8d bytes" % ((n, path) + timed(path, k)))
for s in socks:
    s.close()
EOF
stop
echo
fi

if part latency; then
echo "admin request latency: $REQUESTS sequential requests per route on one kept-alive connection"
start --admin 127.0.0.1:0
timeout 300 python3 - "$admin" "$REQUESTS" <<'EOF'
import http.client, statistics, sys, time
admin, n = sys.argv[1], int(sys.argv[2])
host, port = admin.rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port), timeout=10)
for path in ("/healthz", "/stats"):
    for _ in range(50):  # warm-up
        conn.request("GET", path)
        conn.getresponse().read()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        times.append(time.perf_counter() - t)
        assert r.status == 200, r.status
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print("%-9s median %6.1f us  p99 %6.1f us  max %7.1f us  (%d requests, one connection)" % (
        path, statistics.median(times) * 1e6, p99 * 1e6, times[-1] * 1e6, n))
conn.close()
EOF
stop
fi
