#!/usr/bin/env bash
# tcpool bench --reply http1 next to wrk on the same nginx: the same GET of one small static
# file over keep-alive connections, the same connections and threads, run in turns
# (interleaved, so that a busy moment of a shared machine falls on both tools alike). Prints
# each run, then the median of each tool: requests per second and latency percentiles (p50,
# p99), and last an open-loop tcpool run at a fixed --rate.
#
#   bash benches/http.sh
#   ROUNDS=5 CONNECTIONS="1 64 256" THREADS=2 DURATION=5 bash benches/http.sh
#
# nginx (Debian's nginx-light) runs with a configuration of its own written to a temporary
# directory: one worker process, a loopback port, access log off, keep-alive without a
# request limit, and one 64-byte file. tcpool frames and classifies every response (a status
# outside 2xx would be an error); wrk counts them.
#
# Settings (environment): ROUNDS turns per case (3), CONNECTIONS ("1 64 256"), DURATION
# seconds per run (3), THREADS for both tools (1; wrk needs connections >= threads), RATE for
# the open-loop run (20000 requests/s over 64 connections; 0 skips it), WORKERS nginx worker
# processes (1).
#
# Bounded in time: every run is limited by `timeout`; nginx listens on a free loopback port
# and is stopped on exit.

set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-"1 64 256"}
DURATION=${DURATION:-3}
THREADS=${THREADS:-1}
RATE=${RATE:-20000}
WORKERS=${WORKERS:-1}

for tool in nginx wrk python3; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] ||
        { echo "$tool is needed (apt-get install nginx-light wrk python3)" >&2; exit 1; }
done
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

work=$(mktemp -d)
nginx_pid=""
cleanup() {
    [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building (release)..." >&2
cargo build --release --bin tcpool --message-format=json-render-diagnostics >"$work/build.json"
tcpool=$(grep -o '"executable":"[^"]*/tcpool"' "$work/build.json" | tail -n 1 | cut -d'"' -f4)
[ -x "$tcpool" ] || { echo "build produced no binary" >&2; exit 1; }

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/www" "$work/tmp"
# With WORKERS > 1 nginx workers run as an unprivileged user: they must reach the files.
chmod 755 "$work" "$work/www"
printf '%063d\n' 0 >"$work/www/index.txt"
cat >"$work/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes $WORKERS;
pid $work/nginx.pid;
error_log $work/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/tmp;
    proxy_temp_path $work/tmp;
    fastcgi_temp_path $work/tmp;
    uwsgi_temp_path $work/tmp;
    scgi_temp_path $work/tmp;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    server {
        listen 127.0.0.1:$port;
        root $work/www;
    }
}
EOF
[ "$WORKERS" -gt 1 ] && sed -i 's/^master_process off;$//' "$work/nginx.conf"
"$nginx_bin" -c "$work/nginx.conf" -p "$work" &
nginx_pid=$!
for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
    sleep 0.1
done
url="http://127.0.0.1:$port/index.txt"
request="GET /index.txt HTTP/1.1\\r\\nHost: 127.0.0.1:$port\\r\\n\\r\\n"

# tcpool CONNECTIONS [more flags]: prints "rps p50_ms p99_ms".
run_tcpool() {
    local c=$1
    shift
    timeout --kill-after=5 $((DURATION + 30)) "$tcpool" bench "$port" --json -c "$c" \
        --threads "$(( THREADS < c ? THREADS : c ))" -d "$DURATION" --warmup 0.5 \
        --reply http1 --send "$request" "$@" >"$work/run.json" 2>>"$work/bench.log" || true
    python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
if r["errors"]:
    print("0 0 0 errors", r["errors_by_kind"])
else:
    print("%.0f %.3f %.3f reconnects=%d" % (r["msgs_per_sec"], r["latency_us"]["p50"] / 1000,
          r["latency_us"]["p99"] / 1000, r["reconnects"]))
' "$work/run.json"
}

# wrk CONNECTIONS: prints "rps p50_ms p99_ms" (a latency wrk writes in a form not read here
# is 0).
run_wrk() {
    local c=$1
    timeout --kill-after=5 $((DURATION + 30)) wrk -c "$c" -t "$(( THREADS < c ? THREADS : c ))" \
        -d "${DURATION}s" --latency "$url" >"$work/wrk.txt" 2>>"$work/bench.log" || true
    python3 -c '
import re, sys
text = open(sys.argv[1]).read()
def ms(v):
    m = re.match(r"([0-9.]+)(us|ms|s|m)$", v)
    if not m:
        return 0.0
    n, unit = m.groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]
rps = re.search(r"Requests/sec:\s+([0-9.]+)", text)
p50 = re.search(r"50%\s+(\S+)", text)
p99 = re.search(r"99%\s+(\S+)", text)
errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", text)
if not (rps and p50 and p99):
    print("0 0 0")
else:
    print("%.0f %.3f %.3f%s" % (float(rps.group(1)), ms(p50.group(1)), ms(p99.group(1)),
          " " + errors.group(0).replace(" ", "_") if errors else ""))
' "$work/wrk.txt"
}

median() {
    sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print 0 }'
}

printf '%-11s %-22s %12s %9s %9s\n' connections tool "requests/s" "p50 ms" "p99 ms"
for c in $CONNECTIONS; do
    : >"$work/tcpool.txt"
    : >"$work/wrk.txt.all"
    for round in $(seq "$ROUNDS"); do
        read -r rps p50 p99 extra <<<"$(run_tcpool "$c")"
        printf '%-11s %-22s %12s %9s %9s %s\n' "$c" "tcpool bench" "$rps" "$p50" "$p99" "${extra:-}"
        echo "$rps $p50 $p99" >>"$work/tcpool.txt"
        read -r rps p50 p99 extra <<<"$(run_wrk "$c")"
        printf '%-11s %-22s %12s %9s %9s %s\n' "$c" "wrk" "$rps" "$p50" "$p99" "${extra:-}"
        echo "$rps $p50 $p99" >>"$work/wrk.txt.all"
        : "$round"
    done
    for tool in tcpool wrk; do
        file=$work/$tool.txt
        [ "$tool" = wrk ] && file=$work/wrk.txt.all
        printf '%-11s %-22s %12s %9s %9s\n' "$c" "median $tool" \
            "$(cut -d' ' -f1 "$file" | median)" \
            "$(cut -d' ' -f2 "$file" | median)" \
            "$(cut -d' ' -f3 "$file" | median)"
    done
done

if [ "$RATE" != 0 ]; then
    read -r rps p50 p99 extra <<<"$(run_tcpool 64 --rate "$RATE")"
    printf '%-11s %-22s %12s %9s %9s %s\n' 64 "tcpool --rate $RATE" "$rps" "$p50" "$p99" "${extra:-}"
fi
