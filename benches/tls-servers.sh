# Sourced by the TLS benchmarks (benches/tls.sh, benches/tls-handshakes.sh): builds tcpool and
# the tokio-rustls echo (release), makes certificates with `tcpool tls gen`, and starts the
# three TLS servers they compare, each on a free loopback port, killed on exit:
#   tcpool      `tcpool serve --tls-cert ... --tls-key ...` at its defaults;
#   tokio-tls   examples/tokio_tls_echo.rs: tokio + tokio-rustls, the same rustls and provider;
#   haproxy     HAProxy terminating TLS (its OpenSSL) in front of `tcpool serve` plaintext.
# Leaves: `port[SERVER]`, `procs[SERVER]` (the processes whose CPU is the server's), `tcpool`,
# `ca`, `work`, `niced` (NICE), `free_port`, `wait_port`, `cpu_ticks` and `hz`.

niced=()
[ -n "${NICE:-}" ] && niced=(nice -n "$NICE")

work=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "building (release)..." >&2
cargo build --release --quiet --bin tcpool --example tokio_tls_echo
tcpool=target/release/tcpool
"$tcpool" tls gen "$work/certs" >/dev/null
cert=$work/certs/server.pem key=$work/certs/server-key.pem ca=$work/certs/ca.pem
cat "$cert" "$key" >"$work/certs/combined.pem"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    local i
    for i in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    exit 1
}

declare -A port=() procs=()
p=$(free_port)
"${niced[@]}" "$tcpool" serve --port "$p" --tls-cert "$cert" --tls-key "$key" </dev/null >/dev/null 2>"$work/tcpool.log" &
pids+=($!); port[tcpool]=$p; procs[tcpool]=$!
p=$(free_port)
"${niced[@]}" target/release/examples/tokio_tls_echo "$cert" "$key" "$p" >/dev/null 2>&1 &
pids+=($!); port[tokio-tls]=$p; procs[tokio-tls]=$!
backend=$(free_port)
"${niced[@]}" "$tcpool" serve --port "$backend" </dev/null >/dev/null 2>"$work/backend.log" &
pids+=($!); backend_pid=$!
p=$(free_port)
cat >"$work/haproxy.cfg" <<EOF
global
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend front
  bind 127.0.0.1:$p ssl crt $work/certs/combined.pem
  default_backend back
backend back
  server tcpool 127.0.0.1:$backend
EOF
"${niced[@]}" haproxy -db -f "$work/haproxy.cfg" </dev/null >/dev/null 2>&1 &
pids+=($!); port[haproxy]=$p; procs[haproxy]="$! $backend_pid"
for s in tcpool tokio-tls haproxy; do wait_port "${port[$s]}"; done
wait_port "$backend"

cpu_ticks() { # user + system ticks of the given processes
    local total=0 pid
    for pid in "$@"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}
hz=$(getconf CLK_TCK)
