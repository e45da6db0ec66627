#!/usr/bin/env bash
# tcpool's TLS echo next to two yardsticks, loaded by `tcpool bench --tls` in turn.
#
#   bash benches/tls.sh                 # every cell, 3 runs a cell (some 6 minutes)
#   RUNS=1 DURATION=1 bash benches/tls.sh
#
# Servers, all with one certificate (ECDSA P-256, from `tcpool tls gen`):
#   tcpool      `tcpool serve --tls-cert ... --tls-key ...` at its defaults;
#   tokio-tls   examples/tokio_tls_echo.rs: tokio + tokio-rustls, the same rustls, provider
#               (aws-lc-rs) and configuration, tokio's default thread count;
#   haproxy     HAProxy terminating TLS (its OpenSSL) in front of `tcpool serve` plaintext,
#               the way a user serves TLS without tcpool's own.
# Cells (connections x message size): 16, 64 and 1000 x 64 B; 16 x 16 KiB. In each run every
# server is loaded in turn, each after a warm-up run of its own. Printed per cell and server:
# the median msgs/s, each run's, the median p50 and p99, and the CPU time per message (user +
# system from /proc/PID/stat of the server's processes, HAProxy's and its backend's both,
# over the measured run, divided by the messages measured).
#
# Settings: DURATION seconds measured (2), WARMUP seconds before (0.5), RUNS (3), CELLS
# ("16:64 64:64 1000:64 16:16384"), THREADS for bench (1), NICE (none; -19 as root puts other
# work behind). Every run is bounded by `timeout`; whatever the script started is killed on
# exit. The servers and the generator share this machine's cores.

set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-2}
WARMUP=${WARMUP:-0.5}
RUNS=${RUNS:-3}
THREADS=${THREADS:-1}
CELLS=${CELLS:-"16:64 64:64 1000:64 16:16384"}
# shellcheck source=benches/tls-servers.sh
source benches/tls-servers.sh

bench() { # server connections size duration -> JSON report on stdout
    timeout --kill-after=5 $((${4%.*} + 30)) "${niced[@]}" "$tcpool" bench --json --tls --tls-ca "$ca" \
        --tls-servername localhost -c "$2" -s "$3" --threads "$THREADS" -d "$4" \
        "127.0.0.1:${port[$1]}"
}

echo "$(uptime)" >&2
printf '\n| cell | server | msgs/s | runs (k msgs/s) | p50 | p99 | CPU us/msg | errors |\n'
printf '| --- | --- | --- | --- | --- | --- | --- | --- |\n'
for cell in $CELLS; do
    c=${cell%%:*} s=${cell##*:}
    echo "  $c x $s B..." >&2
    declare -A rates=() p50s=() p99s=() cpus=() errs=()
    for run in $(seq 1 "$RUNS"); do
        for server in tcpool tokio-tls haproxy; do
            bench "$server" "$c" "$s" "$WARMUP" >/dev/null || true
            # shellcheck disable=SC2086
            before=$(cpu_ticks ${procs[$server]})
            report=$(bench "$server" "$c" "$s" "$DURATION" || true)
            # shellcheck disable=SC2086
            after=$(cpu_ticks ${procs[$server]})
            read -r rate p50 p99 msgs errors < <(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
print(r["msgs_per_sec"], r["latency_us"]["p50"], r["latency_us"]["p99"], r["messages"], r["errors"])
' "$report")
            cpu=$(python3 -c "print((($after - $before) / $hz) * 1e6 / max($msgs, 1))")
            rates[$server]+="$rate "; p50s[$server]+="$p50 "; p99s[$server]+="$p99 "
            cpus[$server]+="$cpu "; errs[$server]+="$errors "
        done
    done
    for server in tcpool tokio-tls haproxy; do
        python3 - "$c x $s B" "$server" "${rates[$server]}" "${p50s[$server]}" "${p99s[$server]}" \
            "${cpus[$server]}" "${errs[$server]}" <<'EOF'
import statistics as st, sys
cell, server, rates, p50, p99, cpu, errs = sys.argv[1:]
f = lambda t: [float(x) for x in t.split()]
us = lambda v: f"{v/1000:.1f}ms" if v >= 1000 else f"{v:.0f}us"
print(f"| {cell} | {server} | {st.median(f(rates)):.0f} | "
      f"{' '.join(f'{r/1000:.1f}' for r in f(rates))} | {us(st.median(f(p50)))} | "
      f"{us(st.median(f(p99)))} | {st.median(f(cpu)):.2f} | {sum(f(errs)):.0f} |")
EOF
    done
    unset rates p50s p99s cpus errs
done
echo "$(uptime)" >&2
