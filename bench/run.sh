#!/usr/bin/env bash
# Load benchmark: modelgate against the direct path, nginx and haproxy, side by
# side in one run on loopback (issue 7). Writes bench/results/latest.{md,png}.
#
#   bench/run.sh                 # full run (`make bench`), about 8 minutes
#   BENCH_DURATION=2 BENCH_ROUNDS=1 BENCH_CASES="direct nginx haproxy" bench/run.sh
#
# Settings (environment):
#   BENCH_DURATION  seconds per measurement (default 5)
#   BENCH_ROUNDS    rounds per case and concurrency; every other round runs the
#                   cases in reverse order so drift on this shared machine hits
#                   all cases alike (default 2)
#   BENCH_CONNS     concurrencies (default "1 8 32 128")
#   BENCH_CASES     subset of: direct nginx haproxy mg-nofilter mg-noop mg-full
#                   ks-direct ks-nginx ks-mg-full llm-stream filter-cost (default: all).
#                   filter-cost is not a wrk case either: bench/filter_cost.py times the filter
#                   alone under V8 (Node.js) and wasmtime beside a minimal filter, counting its
#                   host calls, and bench/guest_instructions.py counts its guest instructions
#                   under cachegrind (BENCH_FILTER_REQUESTS requests per case, default 2000). llm-stream
#                   is not a wrk case: bench/llm_stream.py times streamed chats against
#                   KServe's OpenAI server (.venv-llm) directly and through modelgate
#                   with the full policy (BENCH_LLM_REQUESTS streams each, default 100)
#   BENCH_OUT       results directory (default bench/results)
#   BENCH_PYTHON    Python with PyJWT and matplotlib (default .venv/bin/python)
#   BENCH_PROFILE   if 1: no table; instead per-request counters (perf stat) for
#                   each case and a `perf record` profile of each modelgate case,
#                   at c=32, into bench/results/profile.txt (cases default to
#                   nginx haproxy mg-nofilter mg-noop mg-full)
#
# Ports 18500-18599 on 127.0.0.1. Every process started here is killed on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
DURATION=${BENCH_DURATION:-5}
ROUNDS=${BENCH_ROUNDS:-2}
CONNS=${BENCH_CONNS:-"1 8 32 128"}
if [[ ${BENCH_PROFILE:-0} == 1 ]]; then
    CASES=${BENCH_CASES:-"nginx haproxy mg-nofilter mg-noop mg-full"}
else
    CASES=${BENCH_CASES:-"direct nginx haproxy mg-nofilter mg-noop mg-full ks-direct ks-nginx ks-mg-full llm-stream filter-cost"}
fi
OUT=${BENCH_OUT:-$BENCH/results}
PY=${BENCH_PYTHON:-$ROOT/.venv/bin/python}
MODELGATE=$ROOT/target/release/modelgate
WASM=$ROOT/target/modelgate.wasm

# One port per listener, fixed so configs and logs are easy to read.
P_UPSTREAM=18501      # static nginx: case 1's target and everyone's upstream
P_NGINX=18502
P_HAPROXY=18503
P_MG_NOFILTER=18504
P_MG_NOOP=18505
P_MG_FULL=18506
P_KSERVE=18510        # KServe model server (HTTP); 18511 is its gRPC port
P_KSERVE_GRPC=18511
P_KS_NGINX=18512
P_KS_MG_FULL=18513
P_OPENAI=18514        # KServe OpenAI model server (llm-stream)
P_MG_LLM=18515
P_ADMIN_BASE=18520    # modelgate admin listeners: 18520 + index

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
wants() { [[ " $CASES " == *" $1 "* ]]; }
wants_any() { local c; for c in "$@"; do wants "$c" && return 0; done; return 1; }

# --- prerequisites ---------------------------------------------------------

install_missing_packages() {
    local missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
    command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
    if wants filter-cost; then
        command -v node >/dev/null || missing+=(nodejs)
        command -v valgrind >/dev/null || missing+=(valgrind)
    fi
    ((${#missing[@]} == 0)) && return
    log "installing ${missing[*]} from Debian packages"
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_python() {
    if [[ ! -x $PY ]]; then
        [[ -x $ROOT/scripts/setup.sh ]] || die "no Python at $PY and no scripts/setup.sh to make one"
        "$ROOT/scripts/setup.sh"
    fi
    if ! "$PY" -c 'import jwt, cryptography, matplotlib' 2>/dev/null; then
        log "installing PyJWT, cryptography and matplotlib into $PY's environment"
        "$PY" -m pip install -q pyjwt cryptography matplotlib
    fi
}

install_missing_packages
export PATH=$PATH:/usr/sbin
ensure_python
if wants_any mg-nofilter mg-noop mg-full ks-mg-full llm-stream filter-cost; then
    [[ -x $MODELGATE ]] || die "$MODELGATE missing: run 'make build' (or 'make bench')"
    [[ -f $WASM ]] || die "$WASM missing: run 'make wasm'"
fi
# 1,000 keep-alive connections plus upstream connections need more than 1024 fds;
# servers started below inherit this limit (capped by the hard limit, which an
# unprivileged container may not raise).
fd_hard=$(ulimit -Hn)
if [[ $fd_hard == unlimited ]] || ((fd_hard > 65536)); then fd_hard=65536; fi
ulimit -n "$fd_hard"
((fd_hard >= 4096)) || die "open-file limit $fd_hard is too low for the 1,000-connection check"

RUN=$(mktemp -d /tmp/modelgate-bench.XXXXXX)
RESULTS=$RUN/results.jsonl
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    log "logs and rendered configs kept in $RUN"
}
trap cleanup EXIT
log "run directory $RUN"

# --- helpers ----------------------------------------------------------------

# render TEMPLATE OUT VAR=VALUE...: fill @VAR@ placeholders of a bench/config template.
render() {
    local template=$1 out=$2 args=() kv value
    shift 2
    for kv in "$@" "RUN=$RUN"; do
        value=${kv#*=}
        value=${value//\\/\\\\}
        value=${value//&/\\&}
        value=${value//|/\\|}
        args+=(-e "s|@${kv%%=*}@|$value|g")
    done
    sed "${args[@]}" "$template" >"$out"
    if grep -q '@[A-Z_]*@' "$out"; then die "unfilled placeholder in $out"; fi
}

wait_http() { # URL SECONDS PID: until the URL answers 2xx or the process dies
    local url=$1 deadline=$((SECONDS + $2)) pid=$3
    until curl -sf -o /dev/null --max-time 2 "$url"; do
        kill -0 "$pid" 2>/dev/null || die "process $pid for $url exited; see $RUN"
        ((SECONDS < deadline)) || die "$url not answering after $2 s; see $RUN"
        sleep 0.2
    done
}

# The process and its children (nginx workers), as a space-separated pid list.
proc_tree() {
    local pid=$1
    echo "$pid $(ps -o pid= --ppid "$pid" | tr '\n' ' ')"
}

cpu_ticks() { # PIDS...: utime+stime summed over processes (all threads included)
    local total=0 p f
    for p in "$@"; do
        if [[ -r /proc/$p/stat ]]; then
            # Fields after the ")" closing comm: utime and stime are 12th and 13th.
            f=$(sed 's/^.*) //' "/proc/$p/stat")
            read -r -a f <<<"$f"
            total=$((total + f[11] + f[12]))
        fi
    done
    echo "$total"
}

status_kib() { # FIELD PIDS...: a /proc/<pid>/status field in KiB, summed
    local field=$1 total=0 p v
    shift
    for p in "$@"; do
        v=$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

declare -A CASE_URL CASE_PID

# spawn LOGNAME CMD...: start a server in the background; its pid is left in $STARTED.
spawn() {
    local name=$1
    shift
    "$@" >"$RUN/$name.log" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
}

start_nginx() { # NAME TEMPLATE VAR=VALUE...
    local name=$1 template=$2 conf=$RUN/$1.conf
    shift 2
    render "$template" "$conf" "NAME=$name" "$@"
    mkdir -p "$RUN/$name"
    spawn "$name" nginx -p "$RUN/$name" -c "$conf" -g 'daemon off;'
}

# --- servers ----------------------------------------------------------------

TICK_HZ=$(getconf CLK_TCK)

setup_static_cases() {
    start_nginx upstream "$BENCH/config/nginx-upstream.conf.in" "UPSTREAM_PORT=$P_UPSTREAM"
    wait_http "http://127.0.0.1:$P_UPSTREAM/" 10 "$STARTED"
    CASE_URL[direct]=http://127.0.0.1:$P_UPSTREAM
    CASE_PID[direct]=$STARTED

    if wants nginx; then
        start_nginx nginx-static "$BENCH/config/nginx-proxy.conf.in" \
            "LISTEN_PORT=$P_NGINX" "BACKEND_PORT=$P_UPSTREAM"
        wait_http "http://127.0.0.1:$P_NGINX/" 10 "$STARTED"
        CASE_URL[nginx]=http://127.0.0.1:$P_NGINX
        CASE_PID[nginx]=$STARTED
    fi
    if wants haproxy; then
        render "$BENCH/config/haproxy.cfg.in" "$RUN/haproxy.cfg" \
            "LISTEN_PORT=$P_HAPROXY" "BACKEND_PORT=$P_UPSTREAM"
        spawn haproxy haproxy -db -f "$RUN/haproxy.cfg"
        wait_http "http://127.0.0.1:$P_HAPROXY/" 10 "$STARTED"
        CASE_URL[haproxy]=http://127.0.0.1:$P_HAPROXY
        CASE_PID[haproxy]=$STARTED
    fi
}

setup_kserve_cases() {
    spawn kserve "$PY" "$ROOT/tests/e2e/model_server.py" \
        --model iris --name sklearn-iris --port "$P_KSERVE"
    # Start-up trains the model and imports KServe: tens of seconds on a busy machine.
    wait_http "http://127.0.0.1:$P_KSERVE/v1/models/sklearn-iris" 180 "$STARTED"
    CASE_URL[ks-direct]=http://127.0.0.1:$P_KSERVE
    CASE_PID[ks-direct]=$STARTED

    if wants ks-nginx; then
        start_nginx nginx-kserve "$BENCH/config/nginx-proxy.conf.in" \
            "LISTEN_PORT=$P_KS_NGINX" "BACKEND_PORT=$P_KSERVE"
        wait_http "http://127.0.0.1:$P_KS_NGINX/v1/models/sklearn-iris" 10 "$STARTED"
        CASE_URL[ks-nginx]=http://127.0.0.1:$P_KS_NGINX
        CASE_PID[ks-nginx]=$STARTED
    fi
}

# llm-stream: KServe's OpenAI server (tests/e2e/openai_server.py, 2 ms per token, so a stream
# arrives event by event) and modelgate with the full policy in front of it.
setup_llm_case() {
    [[ -x $ROOT/.venv-llm/bin/python ]] || "$ROOT/scripts/setup.sh" --llm
    spawn openai "$ROOT/.venv-llm/bin/python" "$ROOT/tests/e2e/openai_server.py" \
        --port "$P_OPENAI" --token-delay-ms 2
    # Start-up imports vLLM and torch: tens of seconds on a busy machine.
    wait_http "http://127.0.0.1:$P_OPENAI/openai/v1/models" 240 "$STARTED"
    render "$BENCH/config/policy-llm.json.in" "$RUN/policy-llm.json" \
        "JWKS=$(cat "$RUN/jwks.json")" "ISSUER=$JWT_ISSUER" "AUDIENCE=$JWT_AUDIENCE"
    start_modelgate mg-llm "$BENCH/config/modelgate-llm.yaml.in" "$P_MG_LLM" "$P_OPENAI" 4 "WASM=$WASM"
}

# Case 5 reuses the host's own no-op test filter (host/tests/filters/noop), built
# where and how the host's tests build it.
build_noop_filter() {
    log "building the no-op filter (host/tests/filters/noop)"
    cargo build -q --release --target wasm32-wasip1 -p noop \
        --manifest-path "$ROOT/host/tests/filters/Cargo.toml" --target-dir "$ROOT/target/test-filters"
    NOOP_WASM=$ROOT/target/test-filters/wasm32-wasip1/release/noop.wasm
}

# start_modelgate CASE TEMPLATE PORT BACKEND_PORT ADMIN_INDEX [VAR=VALUE...]
start_modelgate() {
    local case=$1 template=$2 port=$3 backend=$4 admin=$((P_ADMIN_BASE + $5))
    shift 5
    render "$template" "$RUN/$case.yaml" "LISTEN_PORT=$port" "BACKEND_PORT=$backend" \
        "ADMIN_PORT=$admin" "$@"
    RUST_LOG=warn spawn "$case" "$MODELGATE" serve --config "$RUN/$case.yaml"
    wait_http "http://127.0.0.1:$admin/ready" 60 "$STARTED"
    CASE_URL[$case]=http://127.0.0.1:$port
    CASE_PID[$case]=$STARTED
}

setup_modelgate_cases() {
    if wants mg-nofilter; then
        start_modelgate mg-nofilter "$BENCH/config/modelgate-nofilter.yaml.in" \
            "$P_MG_NOFILTER" "$P_UPSTREAM" 0
    fi
    if wants mg-noop; then
        build_noop_filter
        start_modelgate mg-noop "$BENCH/config/modelgate-noop.yaml.in" \
            "$P_MG_NOOP" "$P_UPSTREAM" 1 "NOOP_WASM=$NOOP_WASM"
    fi
    if wants_any mg-full ks-mg-full; then
        render "$BENCH/config/policy.json.in" "$RUN/policy.json" \
            "JWKS=$(cat "$RUN/jwks.json")" "ISSUER=$JWT_ISSUER" "AUDIENCE=$JWT_AUDIENCE"
    fi
    if wants mg-full; then
        start_modelgate mg-full "$BENCH/config/modelgate-full.yaml.in" \
            "$P_MG_FULL" "$P_UPSTREAM" 2 "WASM=$WASM"
    fi
    if wants ks-mg-full; then
        start_modelgate ks-mg-full "$BENCH/config/modelgate-full.yaml.in" \
            "$P_KS_MG_FULL" "$P_KSERVE" 3 "WASM=$WASM"
    fi
}

# --- measurement ------------------------------------------------------------

# measure CASE CONC ROUND SECONDS: one wrk run, appended to $RESULTS as a sample.
measure() {
    local case=$1 conc=$2 round=$3 secs=$4 threads pids before after line
    threads=$((conc < 2 ? 1 : 2))
    read -r -a pids <<<"$(proc_tree "${CASE_PID[$case]}")"
    before=$(cpu_ticks "${pids[@]}")
    line=$(BENCH_TOKEN=$TOKEN wrk -t"$threads" -c"$conc" -d"${secs}s" --timeout 5s \
        -s "$BENCH/request.lua" "${CASE_URL[$case]}" | grep '^{' | tail -n1)
    after=$(cpu_ticks "${pids[@]}")
    [[ -n $line ]] || die "wrk printed no summary for $case c=$conc"
    printf '{"type":"sample","case":"%s","c":%d,"round":%d,"cpu_s":%s,"wrk":%s}\n' \
        "$case" "$conc" "$round" "$(awk -v t=$((after - before)) -v hz="$TICK_HZ" 'BEGIN{print t/hz}')" \
        "$line" >>"$RESULTS"
    log "$(printf '%-12s c=%-3d round %d: %s' "$case" "$conc" "$round" \
        "$(sed -E 's/.*"requests":([0-9]+).*"p50_us":([0-9]+).*"p99_us":([0-9]+).*/\1 req, p50 \2 us, p99 \3 us/' <<<"$line")")"
}

write_meta() {
    local wasm_bytes=0
    [[ -f $WASM ]] && wasm_bytes=$(stat -c %s "$WASM")
    local model
    model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    printf '{"type":"meta","nproc":%d,"cpu_model":"%s","kernel":"%s","loadavg":"%s","started":"%s","duration_s":%s,"rounds":%d,"wrk_threads":"%s","pinning":"%s","wasm_bytes":%d}\n' \
        "$(nproc)" "$model" "$(uname -r)" "$(cut -d' ' -f1-3 /proc/loadavg)" \
        "$(date -u '+%Y-%m-%d %H:%M UTC')" "$DURATION" "$ROUNDS" \
        "1 thread at c=1, 2 threads otherwise" "no CPU pinning" "$wasm_bytes" >>"$RESULTS"
}

record_rss() {
    local case pids
    for case in "${ACTIVE[@]}"; do
        read -r -a pids <<<"$(proc_tree "${CASE_PID[$case]}")"
        printf '{"type":"rss","case":"%s","vmhwm_kib":%d,"processes":%d}\n' \
            "$case" "$(status_kib VmHWM "${pids[@]}")" "${#pids[@]}" >>"$RESULTS"
    done
}

# keepalive_rss_check CASE PORT: modelgate's memory with 1,000 keep-alive connections
# open at once (wrk -c1000), sampled while they are open and as the peak after.
keepalive_rss_check() {
    local case=$1 port=$2 pid=${CASE_PID[$1]} conns=1000 secs=4 wrk_pid rss connected line
    log "keep-alive check: $conns connections to $case for $secs s"
    BENCH_TOKEN=$TOKEN wrk -t2 -c"$conns" -d"${secs}s" --timeout 5s -s "$BENCH/request.lua" \
        "${CASE_URL[$case]}" >"$RUN/conn1000.txt" 2>&1 &
    wrk_pid=$!
    sleep $((secs - 1))
    rss=$(status_kib VmRSS "$pid")
    connected=$(ss -Htn state established "( sport = :$port )" | wc -l)
    wait "$wrk_pid" || die "wrk -c$conns failed: $(cat "$RUN/conn1000.txt")"
    line=$(grep '^{' "$RUN/conn1000.txt" | tail -n1)
    printf '{"type":"conn1000","case":"%s","connections":%d,"duration_s":%d,"connected":%d,"vmrss_kib":%d,"vmhwm_kib":%d,"rps":%s,"errors":%s}\n' \
        "$case" "$conns" "$secs" "$connected" "$rss" "$(status_kib VmHWM "$pid")" \
        "$(sed -E 's/.*"requests":([0-9]+),"duration_us":([0-9]+).*/\1 \2/' <<<"$line" | awk '{printf "%.1f", $1 / ($2 / 1e6)}')" \
        "$(sed -E 's/.*"err_connect":([0-9]+),"err_read":([0-9]+),"err_write":([0-9]+),"err_status":([0-9]+),"err_timeout":([0-9]+).*/\1 \2 \3 \4 \5/' <<<"$line" | awk '{print $1+$2+$3+$4+$5}')" \
        >>"$RESULTS"
}

# count_case CASE CONC: CPU time, context switches, migrations and syscalls per
# request for a case's processes, from perf's software counters over one wrk run.
count_case() {
    local case=$1 conc=$2 secs=5 pids line reqs
    pids=$(proc_tree "${CASE_PID[$case]}" | xargs | tr ' ' ',')
    perf stat -x, -e task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter \
        -p "$pids" -o "$RUN/stat-$case.csv" -- sleep "$((secs + 1))" &
    local perf_pid=$!
    sleep 0.3
    line=$(BENCH_TOKEN=$TOKEN wrk -t"$((conc < 2 ? 1 : 2))" -c"$conc" -d"${secs}s" \
        -s "$BENCH/request.lua" "${CASE_URL[$case]}" | grep '^{')
    wait "$perf_pid"
    reqs=$(sed -E 's/.*"requests":([0-9]+).*/\1/' <<<"$line")
    awk -F, -v reqs="$reqs" -v c="$case" -v conc="$conc" -v secs="$secs" '
        $3 == "task-clock" { cpu = $1 / 1000 }
        $3 == "context-switches" { cs = $1 }
        $3 == "cpu-migrations" { mig = $1 }
        $3 == "raw_syscalls:sys_enter" { sys = $1 }
        END { printf "| %d | %s | %.0f | %.1f | %.2f | %.3f | %.2f |\n",
              conc, c, reqs / secs, cpu / reqs * 1e6, cs / reqs, mig / reqs, sys / reqs }' "$RUN/stat-$case.csv"
}

# profile_case CASE: where the proxy's CPU time goes under load, from perf's
# cpu-clock sampling (hardware counters are not available in this VM). Wasm code
# compiled by wasmtime has no symbols: perf shows it as "[JIT]" addresses.
profile_case() {
    local case=$1 secs=10 data=$RUN/perf.data pids
    pids=$(proc_tree "${CASE_PID[$case]}" | xargs | tr ' ' ',')
    log "profiling $case for $secs s at c=32"
    BENCH_TOKEN=$TOKEN wrk -t2 -c32 -d"$((secs + 2))s" -s "$BENCH/request.lua" \
        "${CASE_URL[$case]}" >"$RUN/profile-wrk.txt" &
    local wrk_pid=$!
    sleep 1
    perf record -q -e cpu-clock -F 1999 -g -p "$pids" -o "$data" -- sleep "$secs" 2>/dev/null
    wait "$wrk_pid"
    echo "## $case: perf record, cpu-clock at 1999 Hz for $secs s under wrk -c32"
    echo "wrk: $(grep '^{' "$RUN/profile-wrk.txt")"
    # (|| true: grep finding nothing to drop must not end the run)
    echo
    echo "### by shared object (self time)"
    perf report -i "$data" --no-children --sort dso --stdio -g none 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -20 || true
    echo
    echo "### by symbol (self time, top 70)"
    perf report -i "$data" --no-children --sort dso,sym --stdio -g none 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -70 || true
}

# host_calls CASE: how often the filter calls each Proxy-Wasm host function per
# request, counted with uprobes on the runtime's ABI functions (best effort: needs
# root and tracefs; functions the compiler inlined everywhere are not counted).
host_calls() {
    local case=$1 pid=${CASE_PID[$1]} seg_offset seg_vaddr delta fn addr name line reqs
    # perf probe takes file offsets: vaddr minus the executable segment's vaddr-offset delta.
    read -r seg_offset seg_vaddr < <(readelf -lW "$MODELGATE" | awk '$1 == "LOAD" && / R E / {print $2, $3; exit}')
    delta=$((seg_vaddr - seg_offset))
    perf probe -q -d 'probe_modelgate:*' 2>/dev/null || true
    while read -r addr fn; do
        name=mg_$(sed -E 's/.*abi::([a-z_]+)::([a-z_]+)$/\1__\2/' <<<"$fn")
        perf probe -q -x "$MODELGATE" -a "$name=$(printf '0x%x' $((16#$addr - delta)))" 2>/dev/null || true
    done < <(nm -C "$MODELGATE" | awk '$2 ~ /^[tT]$/ && $3 ~ /^modelgate_runtime::abi::[a-z_]+::[a-z_]+$/ {print $1, $3}' \
        | grep -v -E '::(add|add_to_linker)$' | sort -u -k2,2)
    if ! perf probe -l 2>/dev/null | grep -q probe_modelgate; then
        echo "(uprobes unavailable here: host calls not counted)"
        return
    fi
    perf stat -x, -e 'probe_modelgate:*' -p "$pid" -o "$RUN/probes-$case.csv" -- sleep 4 &
    local perf_pid=$!
    sleep 0.3
    line=$(BENCH_TOKEN=$TOKEN wrk -t1 -c4 -d3s -s "$BENCH/request.lua" "${CASE_URL[$case]}" | grep '^{')
    wait "$perf_pid"
    perf probe -q -d 'probe_modelgate:*' 2>/dev/null || true
    reqs=$(sed -E 's/.*"requests":([0-9]+).*/\1/' <<<"$line")
    echo "| host function | calls / request |"
    echo "|---|---:|"
    awk -F, -v reqs="$reqs" '$3 ~ /^probe_modelgate:/ && $1 > 0 {
        name = $3; sub(/^probe_modelgate:mg_/, "", name); sub(/__/, "::", name)
        printf "| %s | %.2f |\n", name, $1 / reqs }' "$RUN/probes-$case.csv"
}

# profile_cases: the BENCH_PROFILE=1 report, bench/results/profile.txt.
profile_cases() {
    local case report=$OUT/profile.txt
    command -v perf >/dev/null || die "perf missing (Debian: apt-get install linux-perf)"
    mkdir -p "$OUT"
    {
        echo "# modelgate profile ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(uname -r))"
        echo
        echo "## per request, wrk for 5 s (perf stat software counters of the proxy's processes)"
        echo
        echo "| c | case | req/s | CPU µs / req | context switches / req | migrations / req | syscalls / req |"
        echo "|---:|---|---:|---:|---:|---:|---:|"
        for conc in 1 32; do
            for case in "${ACTIVE[@]}"; do count_case "$case" "$conc"; done
        done
        echo
        if wants mg-full; then
            echo "## host calls the full-policy filter makes per request (uprobes, wrk -c4 for 3 s)"
            echo
            host_calls mg-full
            echo
        fi
        for case in "${ACTIVE[@]}"; do
            [[ $case == mg-* || $case == ks-mg-* ]] && profile_case "$case"
            echo
        done
    } >"$report"
    log "profile written to $report"
}

# --- main -------------------------------------------------------------------

# One RS256 key per run, made by PyJWT: the filter verifies a signature it has never
# seen before this run, then serves it from its token cache.
JWT_ISSUER=https://issuer.bench.modelgate.local
JWT_AUDIENCE=modelgate-bench
TOKEN=$("$PY" "$BENCH/keys.py" "$RUN" "$JWT_ISSUER" "$JWT_AUDIENCE" bench-client "predict")
write_meta
setup_static_cases
if wants_any ks-direct ks-nginx ks-mg-full; then setup_kserve_cases; fi
setup_modelgate_cases
if wants llm-stream; then setup_llm_case; fi

ACTIVE=()
for case in $CASES; do
    [[ $case == llm-stream || $case == filter-cost ]] && continue
    [[ -n ${CASE_URL[$case]:-} ]] || die "case $case was not started"
    ACTIVE+=("$case")
done

# Every case must answer the benchmark request with 200 before it is measured: a
# proxy that answers 401 or 404 fast would otherwise look like a fast proxy.
for case in "${ACTIVE[@]}"; do
    status=$(curl -s -o "$RUN/check-$case.txt" -w '%{http_code}' -X POST \
        -H 'Content-Type: application/json' -H "Authorization: Bearer $TOKEN" \
        --data '{"instances":[[6.8,2.8,4.8,1.4]]}' "${CASE_URL[$case]}/v1/models/sklearn-iris:predict")
    [[ $status == 200 ]] || die "$case answered $status to the benchmark request: $(cat "$RUN/check-$case.txt")"
done

if [[ ${BENCH_PROFILE:-0} == 1 ]]; then
    profile_cases
    exit 0
fi

log "warm-up: 1 s per case at c=32"
for case in "${ACTIVE[@]}"; do
    BENCH_TOKEN=$TOKEN wrk -t2 -c32 -d1s -s "$BENCH/request.lua" "${CASE_URL[$case]}" >/dev/null
done

for conc in $CONNS; do
    for ((round = 1; round <= ROUNDS; round++)); do
        order=("${ACTIVE[@]}")
        if ((round % 2 == 0)); then
            order=()
            for ((i = ${#ACTIVE[@]} - 1; i >= 0; i--)); do order+=("${ACTIVE[i]}"); done
        fi
        for case in "${order[@]}"; do measure "$case" "$conc" "$round" "$DURATION"; done
    done
done
record_rss
# The no-filter case separates the gateway's own per-connection memory from the VMs'.
if wants mg-nofilter; then keepalive_rss_check mg-nofilter "$P_MG_NOFILTER"; fi
if wants mg-full; then keepalive_rss_check mg-full "$P_MG_FULL"; fi
if wants llm-stream; then
    log "llm-stream: ${BENCH_LLM_REQUESTS:-100} streamed chats each, direct and through modelgate"
    "$PY" "$BENCH/llm_stream.py" "http://127.0.0.1:$P_OPENAI" "${CASE_URL[mg-llm]}" "$TOKEN" \
        --requests "${BENCH_LLM_REQUESTS:-100}" >>"$RESULTS"
fi
if wants filter-cost; then
    log "filter-cost: the filter alone under V8 and wasmtime, then its guest instructions (cachegrind)"
    "$PY" "$BENCH/filter_cost.py" --requests "${BENCH_FILTER_REQUESTS:-2000}" --out "$RESULTS" >&2
    "$PY" "$BENCH/guest_instructions.py" --out "$RESULTS" >&2
fi
printf '{"type":"end","loadavg":"%s"}\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS"

"$PY" "$BENCH/report.py" "$RESULTS" "$OUT" "$ROOT/target/criterion"
cp "$RESULTS" "$OUT/latest.jsonl"
