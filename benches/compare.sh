#!/usr/bin/env bash
# tcpool's echo server next to three yardsticks, each loaded by two independent generators.
#
#   bash benches/compare.sh              # every cell, 5 runs a cell (see the estimate it prints)
#   QUICK=1 bash benches/compare.sh      # a short look: 1 s runs, one run a cell
#   RESTART=1 bash benches/compare.sh    # every server started afresh before each measurement
#
# Servers: `tcpool serve` (its defaults, or WORKERS, BALANCE, WORKER_SCHED below); a minimal
# tokio echo server (examples/tokio_echo.rs) at tokio's default thread count; and a minimal
# C epoll echo server (benches/yardsticks/epoll_echo.c, built here with `$CC -O2`) twice: on
# one thread (epoll-1t), and on one thread per CPU, each with its own SO_REUSEPORT listening
# socket on the same port and its own epoll (epoll-Nt-rp).
#
# Generators: `tcpool bench` at each thread count in THREADS, after a warm-up run of its own
# (so that the CPU window covers measured load only), and a minimal C epoll client on one
# thread (benches/yardsticks/epoll_client.c), which shares no code with tcpool: it warms up
# on the same connections, then measures, and checks every echoed byte as tcpool bench does.
#
# Cells (connections x message size, messages in flight per connection): 1, 16, 64, 256 and
# 1000 x 64 B; 16 x 16 KiB; 64 x 64 B with 16 in flight. Each cell is measured RUNS times;
# in each run every generator loads every server in turn, and the servers' order rotates
# from run to run (run 1 starts with tcpool, run 2 with tokio, ...). For each generator it
# prints, per cell and server, the median msgs/s and each run's, the median p50, p99 and
# p99.9, and the median CPU time per message: the server's user + system time from
# /proc/PID/stat over the run, divided by the messages answered (for tcpool bench: the
# measured run and its messages; for the C client: its whole run, warm-up included, and
# every echo it completed). Then a verdict lists, for each generator, every cell where
# tcpool is behind on issue 27's criteria, each comparing medians:
#   - msgs/s below 0.95x the better C server's (the higher), or below tokio's;
#   - p99 above tokio's, or above 1.25x the better C server's (the lower); p99.9 above tokio's;
#   - CPU per message above 1.1x the C servers' (the lower of the two).
#
# Settings (environment): DURATION seconds measured per run (2), WARMUP seconds of load before
# each (0.5), RUNS per cell (5), THREADS tcpool bench thread counts ("1 2"; empty: the C
# client alone), CELLS (see below), WORKERS, BALANCE and WORKER_SCHED passed as `--workers`,
# `--balance` and `--worker-sched` to tcpool (default: none, tcpool's own defaults),
# TCPOOL_LOG as tcpool's RUST_LOG into the kept log (with KEEP=1; default: info,
# `info,tcpool::server::worker::balance=debug` shows each change of the workers in use),
# TOKIO_WORKER_THREADS to tokio (default: unset, tokio's own default), EPOLL_THREADS for the
# SO_REUSEPORT C server (default: one per CPU), CC the C compiler (cc), NICE a niceness for
# the servers and the generators (default: none; `NICE=-19`, as root, puts other work on a
# shared machine behind them, for figures that repeat), RESTART=1 to stop and start each
# server before each of its measurements (default: off, every server runs from start to
# end, as before; on, it costs some 0.05 s a measurement, under a minute of a full run),
# KEEP=1 to keep the logs and every report (reports.txt). The servers and the generators
# share this machine's cores: the numbers compare the servers with each other, not with
# other machines. Check `uptime` first: other work on the machine shows up as noise.
#
# Bounded in time: every generator run is limited by `timeout`, a server that does not come
# up within 10 s aborts the script, and whatever the script started is killed on exit. It
# prints its estimated duration at the start: with the defaults some 22 minutes on 2 cores;
# QUICK=1 some 3.

set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${QUICK:-}" ]; then
    DURATION=${DURATION:-1}
    WARMUP=${WARMUP:-0.3}
    RUNS=${RUNS:-1}
fi
DURATION=${DURATION:-2}
WARMUP=${WARMUP:-0.5}
RUNS=${RUNS:-5}
THREADS=${THREADS-"1 2"}
# connections:size:pipeline
CELLS=${CELLS:-"1:64:1 16:64:1 64:64:1 256:64:1 1000:64:1 16:16384:1 64:64:16"}
EPOLL_THREADS=${EPOLL_THREADS:-$(nproc)}
CC=${CC:-cc}
RESTART=${RESTART:-}
[ "$RESTART" = 0 ] && RESTART=""
niced=()
[ -n "${NICE:-}" ] && niced=(nice -n "$NICE")

work=$(mktemp -d)
declare -A spid=() saddr=()
cleanup() {
    local pid
    for pid in "${spid[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${spid[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1000 connections need more descriptors than the usual soft limit of 1024 (the tokio
# server does not raise its own).
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=65536
ulimit -n "$hard" 2>/dev/null || true

echo "building (release, and the C yardsticks with $CC -O2)..." >&2
cargo build --release --bin tcpool --example tokio_echo \
    --message-format=json-render-diagnostics >"$work/build.json"
executable() {
    grep -o "\"executable\":\"[^\"]*/$1\"" "$work/build.json" | tail -n 1 | cut -d'"' -f4
}
tcpool=$(executable tcpool)
tokio_echo=$(executable tokio_echo)
epoll_echo=$work/epoll_echo
epoll_client=$work/epoll_client
"$CC" -O2 -Wall -pthread -o "$epoll_echo" benches/yardsticks/epoll_echo.c
"$CC" -O2 -Wall -o "$epoll_client" benches/yardsticks/epoll_client.c
[ -x "$tcpool" ] && [ -x "$tokio_echo" ] && [ -x "$epoll_echo" ] && [ -x "$epoll_client" ] ||
    { echo "build produced no binaries" >&2; exit 1; }

# Waits for `listening on ADDR` in file $1; prints ADDR.
listening_on() {
    local addr=""
    for _ in $(seq 500); do
        addr=$(grep -o 'listening on [0-9.]*:[0-9]*' "$1" 2>/dev/null | head -n 1 | cut -d' ' -f3 || true)
        [ -n "$addr" ] && { echo "$addr"; return 0; }
        sleep 0.02
    done
    echo "no 'listening on' line in $1:" >&2
    cat "$1" >&2
    return 1
}

rp=epoll-${EPOLL_THREADS}t-rp
servers=(tcpool tokio epoll-1t "$rp")
tcpool_args=(serve --port 0)
[ -n "${WORKERS:-}" ] && tcpool_args+=(--workers "$WORKERS")
[ -n "${BALANCE:-}" ] && tcpool_args+=(--balance "$BALANCE")
[ -n "${WORKER_SCHED:-}" ] && tcpool_args+=(--worker-sched "$WORKER_SCHED")
starts=0
# Starts server $1 on a free port; sets spid[$1] and saddr[$1].
start_server() {
    local log
    starts=$((starts + 1))
    log="$work/$1.$starts.log"
    case $1 in
        tcpool)
            RUST_LOG=${TCPOOL_LOG:-info} "${niced[@]}" "$tcpool" "${tcpool_args[@]}" </dev/null >/dev/null 2>"$log" & ;;
        tokio) "${niced[@]}" "$tokio_echo" 0 </dev/null >"$log" 2>&1 & ;;
        epoll-1t) "${niced[@]}" "$epoll_echo" -t 1 0 </dev/null >"$log" 2>&1 & ;;
        "$rp") "${niced[@]}" "$epoll_echo" -t "$EPOLL_THREADS" -r 0 </dev/null >"$log" 2>&1 & ;;
    esac
    spid[$1]=$!
    saddr[$1]=$(listening_on "$log")
    [ "$1" = tcpool ] && tcpool_log=$log
    return 0
}
stop_server() {
    kill "${spid[$1]}" 2>/dev/null || true
    wait "${spid[$1]}" 2>/dev/null || true
    unset "spid[$1]"
}
for server in "${servers[@]}"; do
    start_server "$server"
done
tcpool_workers=$(grep -o ' workers=[0-9]*' "$tcpool_log" | head -n 1 | cut -d= -f2)
tcpool_sched=$(grep -o 'worker-sched=[a-z]*' "$tcpool_log" | head -n 1 | cut -d= -f2)
tokio_threads=${TOKIO_WORKER_THREADS:-$(nproc)}
described="tcpool serve (workers=$tcpool_workers worker-sched=$tcpool_sched), tokio_echo ($tokio_threads threads), epoll_echo (epoll-1t: 1 thread; $rp: $EPOLL_THREADS threads, SO_REUSEPORT)"
echo "$described" >&2

generators=()
for t in $THREADS; do
    generators+=("bench$t")
done
generators+=(cclient)
gen_name() {
    case $1 in
        bench*) echo "tcpool bench --threads ${1#bench}" ;;
        cclient) echo "epoll_client (C, 1 thread)" ;;
    esac
}
# How a generator's runs go and what its CPU column divides.
gen_notes() {
    case $1 in
        bench*) echo "a ${WARMUP}s warm-up run, then ${DURATION}s measured on new connections; CPU: the server's over the measured run / the messages measured" ;;
        cclient) echo "${WARMUP}s of warm-up, then ${DURATION}s measured on the same connections; CPU: the server's over the whole run / every echo of the run" ;;
    esac
}
ncells=$(wc -w <<<"$CELLS")
# Seconds per measurement beyond WARMUP + DURATION, seen on a 2-core machine: tcpool bench
# starts twice (warm-up run, measured run), the C client once and drains briefly.
estimate=$(awk -v cells="$ncells" -v runs="$RUNS" -v n="${#servers[@]}" -v t="$(wc -w <<<"$THREADS")" \
    -v d="$DURATION" -v w="$WARMUP" -v r="${RESTART:+0.1}" 'BEGIN {
        per = t * (w + d + 0.9 + r) + (w + d + 0.3 + r);
        secs = cells * runs * n * per;
        if (secs < 120) printf "%.0f s", secs; else printf "%.0f min", secs / 60 }')
echo "${DURATION}s per run after ${WARMUP}s warm-up, $RUNS run(s) a cell, ${#generators[@]} generators x ${#servers[@]} servers x $ncells cells${NICE:+, nice $NICE}${RESTART:+, servers restarted before each measurement}: about $estimate; load: $(uptime | sed 's/.*load/load/')" >&2
started_at=$(date +%s)

ticks=$(getconf CLK_TCK)
# User + system CPU ticks of process $1 so far.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# Reads a number from a one-line JSON report, the key's first occurrence (the report's own,
# before any per-second timeline): field FILE KEY [OBJECT].
field() {
    local json
    json=$(cat "$1")
    if [ -n "${3:-}" ]; then
        json=$(grep -o "\"$3\":{[^}]*}" <<<"$json" | head -n 1)
    fi
    grep -o "\"$2\":[0-9.eE+-]*" <<<"$json" | head -n 1 | cut -d: -f2
}

# One measured run: measure GENERATOR SERVER CONNECTIONS SIZE PIPELINE; prints
# "msgs_per_sec p50_us p99_us p999_us cpu_us_per_msg errors" (errors "failed" when there was
# no report).
measure() {
    local gen=$1 server=$2 c=$3 s=$4 p=$5 addr pid out before after limit answered
    addr=${saddr[$server]} pid=${spid[$server]}
    out="$work/run.json"
    rm -f "$out"
    case $gen in
        bench*)
            limit=$(awk -v d="$DURATION" -v w="$WARMUP" 'BEGIN { printf "%d", d + w + 30 }')
            # Warm-up in its own run, so that the CPU window below covers measured load only.
            timeout --kill-after=5 "$limit" "${niced[@]}" "$tcpool" bench "$addr" --json -c "$c" \
                -s "$s" --pipeline "$p" --threads "${gen#bench}" -d "$WARMUP" --connect-timeout 10 \
                >/dev/null 2>>"$work/bench.log" || true
            before=$(cpu_ticks "$pid")
            timeout --kill-after=5 "$limit" "${niced[@]}" "$tcpool" bench "$addr" --json -c "$c" \
                -s "$s" --pipeline "$p" --threads "${gen#bench}" -d "$DURATION" --connect-timeout 10 \
                >"$out" 2>>"$work/bench.log" || true
            after=$(cpu_ticks "$pid")
            answered=messages
            ;;
        cclient)
            # Connect (at most 10 s), warm-up, measure, drain (at most 5 s).
            limit=$(awk -v d="$DURATION" -v w="$WARMUP" 'BEGIN { printf "%d", d + w + 30 }')
            before=$(cpu_ticks "$pid")
            timeout --kill-after=5 "$limit" "${niced[@]}" "$epoll_client" "$addr" -c "$c" -s "$s" \
                -p "$p" -w "$WARMUP" -d "$DURATION" -t 10 >"$out" 2>>"$work/bench.log" || true
            after=$(cpu_ticks "$pid")
            answered=answered
            ;;
    esac
    [ -n "${KEEP:-}" ] && [ -s "$out" ] &&
        echo "$gen $server $c:$s:$p $(cat "$out")" >>"$work/reports.txt"
    if [ ! -s "$out" ]; then
        echo "0 0 0 0 0 failed"
        return
    fi
    awk -v mps="$(field "$out" msgs_per_sec)" -v n="$(field "$out" "$answered")" \
        -v p50="$(field "$out" p50 latency_us)" -v p99="$(field "$out" p99 latency_us)" \
        -v p999="$(field "$out" p999 latency_us)" -v errors="$(field "$out" errors)" \
        -v cpu=$((after - before)) -v hz="$ticks" \
        'BEGIN { printf "%.0f %s %s %s %.2f %d\n", mps, p50, p99, p999,
                 (n > 0 ? cpu / hz * 1e6 / n : 0), errors }'
}

median() {
    tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2];
        else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

human_us() {
    awk -v us="$1" 'BEGIN {
        if (us < 1000) printf "%dus", us + 0.5;
        else if (us < 1000000) printf "%.1fms", us / 1000;
        else printf "%.2fs", us / 1000000 }'
}

cell_label() {
    local c s p
    IFS=: read -r c s p <<<"$1"
    if [ "$s" -ge 1024 ] && [ $((s % 1024)) = 0 ]; then s="$((s / 1024)) KiB"; else s="$s B"; fi
    printf '%s x %s' "$c" "$s"
    [ "$p" != 1 ] && printf ', %s in flight' "$p"
    return 0
}

# Every measurement's numbers, by "generator|cell|server|metric": runs separated by spaces.
declare -A got=()
ncount=${#servers[@]}
for cell in $CELLS; do
    IFS=: read -r c s p <<<"$cell"
    echo "  $(cell_label "$cell")..." >&2
    for run in $(seq "$RUNS"); do
        # Rotate the servers' order: run r starts with server (r - 1) mod n.
        order=()
        for i in $(seq 0 $((ncount - 1))); do
            order+=("${servers[$(((run - 1 + i) % ncount))]}")
        done
        for gen in "${generators[@]}"; do
            for server in "${order[@]}"; do
                if [ -n "$RESTART" ]; then
                    stop_server "$server"
                    start_server "$server"
                fi
                read -r mps p50 p99 p999 cpu err <<<"$(measure "$gen" "$server" "$c" "$s" "$p")"
                [ "$err" = failed ] && err=1 && echo "    $gen on $server: no report" >&2
                k="$gen|$cell|$server"
                got[$k|mps]="${got[$k|mps]:-} $mps"
                got[$k|p50]="${got[$k|p50]:-} $p50"
                got[$k|p99]="${got[$k|p99]:-} $p99"
                got[$k|p999]="${got[$k|p999]:-} $p999"
                got[$k|cpu]="${got[$k|cpu]:-} $cpu"
                got[$k|err]=$((${got[$k|err]:-0} + err))
            done
        done
    done
done

# Medians, by "generator|cell|server|metric".
declare -A med=()
for gen in "${generators[@]}"; do
    for cell in $CELLS; do
        for server in "${servers[@]}"; do
            k="$gen|$cell|$server"
            for m in mps p50 p99 p999 cpu; do
                med[$k|$m]=$(median <<<"${got[$k|$m]}")
            done
        done
    done
done

# Prints the lesser (op "min") or greater ("max") of two numbers and which of the two C
# servers it belongs to: "VALUE NAME".
pick_c() {
    local op=$1 a=$2 b=$3
    awk -v op="$op" -v a="$a" -v b="$b" -v na=epoll-1t -v nb="$rp" 'BEGIN {
        if ((op == "max" && b > a) || (op == "min" && b < a)) print b, nb; else print a, na }'
}
gt() { awk -v a="$1" -v b="$2" -v f="${3:-1}" 'BEGIN { exit !(a > b * f) }'; }
lt() { awk -v a="$1" -v b="$2" -v f="${3:-1}" 'BEGIN { exit !(a < b * f) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

echo
echo "$described"
echo "${DURATION}s measured after ${WARMUP}s of warm-up, $RUNS run(s) a cell, servers taking turns; $(nproc) core(s) shared by the servers and the generators"
for gen in "${generators[@]}"; do
    echo
    echo "## generator: $(gen_name "$gen")"
    echo "($(gen_notes "$gen"); medians of the runs; tcpool/this: tcpool's msgs/s / this server's)"
    echo
    echo "| cell                    | server        |  msgs/s   | tcpool/this | runs (k msgs/s)          |   p50   |   p99   |  p99.9  | CPU us/msg | errors |"
    echo "| ----------------------- | ------------- | --------- | ----------- | ------------------------ | ------- | ------- | ------- | ---------- | ------ |"
    for cell in $CELLS; do
        label=$(cell_label "$cell")
        for server in "${servers[@]}"; do
            k="$gen|$cell|$server"
            runs=$(awk '{ for (i = 1; i <= NF; i++)
                printf "%s" (($i < 100000) ? "%.1f" : "%.0f"), (i > 1 ? " " : ""), $i / 1000 }' <<<"${got[$k|mps]}")
            vs=""
            [ "$server" != tcpool ] && vs="$(ratio "${med[$gen|$cell|tcpool|mps]}" "${med[$k|mps]}")x"
            printf '| %-23s | %-13s | %9.0f | %11s | %-24s | %7s | %7s | %7s | %10.2f | %6s |\n' \
                "$label" "$server" "${med[$k|mps]}" "$vs" "$runs" "$(human_us "${med[$k|p50]}")" \
                "$(human_us "${med[$k|p99]}")" "$(human_us "${med[$k|p999]}")" "${med[$k|cpu]}" \
                "${got[$k|err]}"
            label=""
        done
    done
    # The median over the cells of tcpool's msgs/s against tokio's and the better C server's.
    vs_tokio="" vs_c=""
    for cell in $CELLS; do
        k="$gen|$cell"
        read -r best _ <<<"$(pick_c max "${med[$k|epoll-1t|mps]}" "${med[$k|$rp|mps]}")"
        vs_tokio="$vs_tokio $(ratio "${med[$k|tcpool|mps]}" "${med[$k|tokio|mps]}")"
        vs_c="$vs_c $(ratio "${med[$k|tcpool|mps]}" "$best")"
    done
    echo
    echo "tcpool's msgs/s, the median over the cells: $(median <<<"${vs_tokio//-/}")x tokio's, $(median <<<"${vs_c//-/}")x the better C server's"
done

echo
echo "## verdict: cells where tcpool is behind on issue 27's criteria (medians)"
echo "   msgs/s >= 0.95x the better C server's and >= tokio's; p99 <= tokio's and <= 1.25x the"
echo "   better C server's; p99.9 <= tokio's; CPU per message <= 1.1x the lower C server's"
behind_total=0 cells_total=0
for gen in "${generators[@]}"; do
    echo
    echo "$(gen_name "$gen"):"
    behind_here=0
    for cell in $CELLS; do
        k="$gen|$cell"
        cells_total=$((cells_total + 1))
        t_mps=${med[$k|tcpool|mps]} t_p99=${med[$k|tcpool|p99]} t_p999=${med[$k|tcpool|p999]} t_cpu=${med[$k|tcpool|cpu]}
        k_mps=${med[$k|tokio|mps]} k_p99=${med[$k|tokio|p99]} k_p999=${med[$k|tokio|p999]}
        read -r c_mps c_mps_name <<<"$(pick_c max "${med[$k|epoll-1t|mps]}" "${med[$k|$rp|mps]}")"
        read -r c_p99 c_p99_name <<<"$(pick_c min "${med[$k|epoll-1t|p99]}" "${med[$k|$rp|p99]}")"
        read -r c_cpu c_cpu_name <<<"$(pick_c min "${med[$k|epoll-1t|cpu]}" "${med[$k|$rp|cpu]}")"
        why=()
        lt "$t_mps" "$c_mps" 0.95 &&
            why+=("msgs/s $(ratio "$t_mps" "$c_mps")x the better C server's ($c_mps_name, $(printf '%.0f' "$c_mps"))")
        lt "$t_mps" "$k_mps" &&
            why+=("msgs/s $(ratio "$t_mps" "$k_mps")x tokio's ($(printf '%.0f' "$k_mps"))")
        gt "$t_p99" "$k_p99" &&
            why+=("p99 $(human_us "$t_p99") > tokio's $(human_us "$k_p99")")
        gt "$t_p99" "$c_p99" 1.25 &&
            why+=("p99 $(human_us "$t_p99") > 1.25x the better C server's $(human_us "$c_p99") ($c_p99_name)")
        gt "$t_p999" "$k_p999" &&
            why+=("p99.9 $(human_us "$t_p999") > tokio's $(human_us "$k_p999")")
        gt "$t_cpu" "$c_cpu" 1.1 &&
            why+=("CPU $t_cpu us/msg > 1.1x the lower C server's $c_cpu ($c_cpu_name)")
        [ "${got[$k|tcpool|err]}" -gt 0 ] && why+=("${got[$k|tcpool|err]} error(s) or failed run(s)")
        others=()
        for server in "${servers[@]:1}"; do
            [ "${got[$k|$server|err]}" -gt 0 ] && others+=("$server ${got[$k|$server|err]}")
        done
        if [ "${#why[@]}" -gt 0 ]; then
            behind_here=$((behind_here + 1))
            echo "  $(cell_label "$cell"): $(printf '%s; ' "${why[@]}" | sed 's/; $//')"
        fi
        # Another server's errors make its figures, and so the comparison, doubtful.
        if [ "${#others[@]}" -gt 0 ]; then
            echo "  $(cell_label "$cell"): note: errors or failed runs of $(printf '%s, ' "${others[@]}" | sed 's/, $//')"
        fi
    done
    [ "$behind_here" = 0 ] && echo "  none"
    behind_total=$((behind_total + behind_here))
done
echo
echo "tcpool behind in $behind_total of $cells_total cell(s) x generator(s)"
echo
took=$(($(date +%s) - started_at))
echo "took $((took / 60)) min $((took % 60)) s; load afterwards: $(uptime | sed 's/.*load/load/')"
