#!/usr/bin/env bash
# A bystander's round trips while a storm of TLS clients connects.
#
#   bash benches/tls-storm.sh
#
# `tcpool serve` with plaintext on one port and TLS on another. A bystander (`tcpool bench
# -c 1 --rate 200`, plaintext) sends a message every 5 ms for 6 s; meanwhile, STORMS times
# (3), `tcpool bench --tls -c 1000 -n 1000` connects a thousand TLS clients at once, each
# doing its handshake and one echo. Printed: the bystander's latency percentiles and each
# second's p99 and max, and each storm's connect time. The storm's generator shares the
# machine's cores with the server: on 2 cores its own handshakes take one of them.
#
# Settings: STORMS (3), CONNECTIONS per storm (1000), RATE (none: the server's
# `--tls-max-handshake-rate`, which closes the TLS connections over it before their
# handshake; the server's count of them is printed at the end). Everything is bounded by
# `timeout` and killed on exit.

set -euo pipefail
cd "$(dirname "$0")/.."

STORMS=${STORMS:-3}
CONNECTIONS=${CONNECTIONS:-1000}
RATE=${RATE:-}

work=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet --bin tcpool
tcpool=target/release/tcpool
"$tcpool" tls gen "$work/certs" >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
plain=$(free_port) tls=$(free_port) admin=$(free_port)
rate=()
[ -n "$RATE" ] && rate=(--tls-max-handshake-rate "$RATE")
"$tcpool" serve --port "$plain" --tls-port "$tls" --max-conns $((CONNECTIONS * 2)) \
    --tls-cert "$work/certs/server.pem" --tls-key "$work/certs/server-key.pem" \
    --admin "127.0.0.1:$admin" "${rate[@]}" </dev/null >/dev/null 2>"$work/serve.log" &
pids+=($!)
for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$plain") 2>/dev/null && break
    sleep 0.05
done

timeout 60 "$tcpool" bench -c 1 --rate 200 -d 6 --json "127.0.0.1:$plain" >"$work/bystander.json" &
bystander=$!
sleep 1
for i in $(seq 1 "$STORMS"); do
    timeout 60 "$tcpool" bench --tls --tls-ca "$work/certs/ca.pem" --tls-servername localhost \
        -c "$CONNECTIONS" -n "$CONNECTIONS" --json "127.0.0.1:$tls" >"$work/storm$i.json" 2>/dev/null || true
done
wait "$bystander"

python3 - "$work" "$STORMS" "$admin" "${RATE:-none}" <<'EOF'
import json, sys, urllib.request
work, storms, admin, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
print(f"--tls-max-handshake-rate: {rate}")
b = json.load(open(f"{work}/bystander.json"))
l = b["latency_us"]
print(f"bystander: {b['messages']} round trips, errors {b['errors']}; "
      f"p50 {l['p50']} us, p99 {l['p99']} us, p99.9 {l['p999']} us, max {l['max']} us")
for t in b["timeline"]:
    print(f"  second {t['second']}: p99 {t['p99_us']} us, max {t['max_us']} us")
for i in range(1, storms + 1):
    s = json.load(open(f"{work}/storm{i}.json"))
    print(f"storm {i}: {s['connected']} TLS clients connected in {s['connect_s']:.2f} s, "
          f"errors {s['errors']}")
metrics = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10).read().decode()
for line in metrics.splitlines():
    if line.startswith(('tcpool_sessions_rejected_total{reason="tls-rate"}',
                        'tcpool_tls_handshakes_total{result="full"}')):
        print("server:", line)
EOF
