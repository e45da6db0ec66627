#!/usr/bin/env bash
# TLS handshakes per second: tcpool's server next to HAProxy's (and the tokio-rustls echo),
# loaded by two generators: `tcpool bench --reconnect-every 1` (a new connection and
# handshake for every message) and OpenSSL's `s_time` (one connection at a time, nothing
# sent, `-new` for full handshakes and `-reuse` for resumed ones).
#
#   bash benches/tls-handshakes.sh              # every cell, 3 runs a cell (some 5 minutes)
#   RUNS=1 DURATION=1 bash benches/tls-handshakes.sh
#
# Servers, all with one certificate (ECDSA P-256, from `tcpool tls gen`):
#   tcpool      `tcpool serve --tls-cert ... --tls-key ...` at its defaults;
#   tokio-tls   examples/tokio_tls_echo.rs: tokio + tokio-rustls, the same rustls and provider;
#   haproxy     HAProxy terminating TLS (its OpenSSL) in front of `tcpool serve` plaintext.
# Cells: CONNS concurrent connections (1 16 64) x resumption (off: every handshake full;
# tickets: every reconnect resumes). Printed per cell and server: the median handshakes/s of
# the measured window, each run's, the resumed share, the median handshake p50 and p99 as the
# client timed them, and the server's CPU time per handshake (user + system from
# /proc/PID/stat, HAProxy's and its backend's both).
#
# Then s_time against each server, RUNS runs of DURATION seconds each way, beside
# `tcpool bench -c 1 --threads 1 --reconnect-every 0` against the same server: both one
# connection at a time, a handshake and nothing sent, so their rates compare the generators.
#
# Settings: DURATION (3) seconds measured, WARMUP (0.5), RUNS (3), CONNS ("1 16 64"; empty for
# the s_time part alone), THREADS for bench (1), NICE (none; -19 as root puts other work
# behind). Every run is bounded by `timeout`; whatever the script started is killed on exit.

set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-3}
WARMUP=${WARMUP:-0.5}
RUNS=${RUNS:-3}
THREADS=${THREADS:-1}
CONNS=${CONNS-"1 16 64"}
SERVERS=${SERVERS:-"tcpool tokio-tls haproxy"}
# shellcheck source=benches/tls-servers.sh
source benches/tls-servers.sh

bench() { # server connections resume duration [bench flags...] -> JSON report on stdout
    local server=$1 c=$2 resume=$3 d=$4
    shift 4
    timeout --kill-after=5 $((${d%.*} + 30)) "${niced[@]}" "$tcpool" bench --json --tls --tls-ca "$ca" \
        --tls-servername localhost -c "$c" --threads "$THREADS" -d "$d" --reconnect-every "${EVERY:-1}" \
        --tls-resume "$resume" "$@" "127.0.0.1:${port[$server]}"
}

echo "$(uptime)" >&2
printf '\n| connections | resume | server | handshakes/s | runs (k/s) | resumed | p50 | p99 | CPU us/handshake | errors |\n'
printf '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n'
for c in $CONNS; do
    for resume in off tickets; do
        echo "  $c connections, resume $resume..." >&2
        declare -A rates=() shares=() p50s=() p99s=() cpus=() errs=()
        for run in $(seq 1 "$RUNS"); do
            for server in $SERVERS; do
                bench "$server" "$c" "$resume" "$WARMUP" >/dev/null || true
                # shellcheck disable=SC2086
                before=$(cpu_ticks ${procs[$server]})
                report=$(bench "$server" "$c" "$resume" "$DURATION" || true)
                # shellcheck disable=SC2086
                after=$(cpu_ticks ${procs[$server]})
                read -r rate share p50 p99 n errors < <(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
t = r["tls"]
kind = "resumed_us" if t["resumed"] > t["full"] else "full_us"
print(t["per_sec"], t["resumed_share"], t[kind]["p50"], t[kind]["p99"], t["in_window"], r["errors"])
' "$report")
                cpu=$(python3 -c "print((($after - $before) / $hz) * 1e6 / max($n, 1))")
                rates[$server]+="$rate "; shares[$server]+="$share "; p50s[$server]+="$p50 "
                p99s[$server]+="$p99 "; cpus[$server]+="$cpu "; errs[$server]+="$errors "
            done
        done
        for server in $SERVERS; do
            python3 - "$c" "$resume" "$server" "${rates[$server]}" "${shares[$server]}" \
                "${p50s[$server]}" "${p99s[$server]}" "${cpus[$server]}" "${errs[$server]}" <<'EOF'
import statistics as st, sys
c, resume, server, rates, shares, p50, p99, cpu, errs = sys.argv[1:]
f = lambda t: [float(x) for x in t.split()]
us = lambda v: f"{v/1000:.1f}ms" if v >= 1000 else f"{v:.0f}us"
print(f"| {c} | {resume} | {server} | {st.median(f(rates)):.0f} | "
      f"{' '.join(f'{r/1000:.2f}' for r in f(rates))} | {st.median(f(shares))*100:.0f} % | "
      f"{us(st.median(f(p50)))} | {us(st.median(f(p99)))} | {st.median(f(cpu)):.0f} | "
      f"{sum(f(errs)):.0f} |")
EOF
        done
        unset rates shares p50s p99s cpus errs
    done
done

# One connection at a time: OpenSSL's s_time next to bench, each against every server. s_time
# prints whole real seconds, so its rate is its connections over the wall time measured here.
# OpenSSL 3.0's s_time does not resume TLS 1.3 sessions (it never reads the tickets), so the
# resumed row is TLS 1.2 for both generators.
stime() { # server s_time-flags... -> handshakes per wall-clock second
    local server=$1 start end n
    shift
    start=$(date +%s.%N)
    n=$(timeout --kill-after=5 $((DURATION + 30)) "${niced[@]}" openssl s_time \
        -connect "127.0.0.1:${port[$server]}" -CAfile "$ca" -time "$DURATION" "$@" 2>/dev/null |
        awk '/connections in .* real seconds/ { n = $1 } END { print n + 0 }')
    end=$(date +%s.%N)
    python3 -c "print($n / ($end - $start))"
}
printf '\n| server | handshakes | s_time/s (runs) | bench -c 1/s (runs) | bench / s_time |\n'
printf '| --- | --- | --- | --- | --- |\n'
for server in $SERVERS; do
    for way in full resumed; do
        s_runs="" b_runs=""
        for run in $(seq 1 "$RUNS"); do
            if [ "$way" = full ]; then
                s_runs+="$(stime "$server" -new) "
                report=$(EVERY=0 bench "$server" 1 off "$DURATION" || true)
            else
                s_runs+="$(stime "$server" -reuse -tls1_2) "
                report=$(EVERY=0 bench "$server" 1 tickets "$DURATION" --tls-versions 1.2 || true)
            fi
            b_runs+="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["tls"]["per_sec"])' "$report") "
        done
        python3 - "$server" "$way" "$s_runs" "$b_runs" <<'EOF'
import statistics as st, sys
server, way, s, b = sys.argv[1:]
f = lambda t: [float(x) for x in t.split()]
sm, bm = st.median(f(s)), st.median(f(b))
label = "full, TLS 1.3" if way == "full" else "resumed, TLS 1.2"
print(f"| {server} | {label} | {sm:.0f} ({' '.join(f'{x:.0f}' for x in f(s))}) | "
      f"{bm:.0f} ({' '.join(f'{x:.0f}' for x in f(b))}) | {bm / sm if sm else float('nan'):.2f}x |")
EOF
    done
done
echo "$(uptime)" >&2
