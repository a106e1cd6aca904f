#!/usr/bin/env bash
# Rate-limit state under key rotation, through the real gateway process (issue 12):
# `modelgate serve` with modelgate.wasm, a quota keyed by a header the caller chooses
# (bench/config/limiter-policy.json: `x-caller`, 1 request/s, burst 5, default maxKeys
# 16,384), in front of a static nginx. wrk sends LIMITER_KEYS requests, each with a key
# never sent before (bench/limiter_keys.lua), while:
#   - the gateway's VmRSS and VmHWM (/proc) are sampled at 0, 10 %, 25 %, 50 % and 100 %
#     of the keys: with the bounded table they plateau; one shared-data entry per key, as
#     before the table, would grow them by about 100 MB per million keys;
#   - an active caller (fixed key) sends 4 requests a second throughout: its state stays
#     live, so no number of other keys may take its room, and it must be admitted exactly
#     as GCRA allows, burst + elapsed × rate, never more (a reset) nor refused as "too many
#     active callers";
#   - after the flood, a fresh fixed key gets exactly its burst (5 × 200), then 429s.
# The shared-data entry count itself is not observable from outside: the admin listener
# (host/src/admin.rs) serves /ready, /metrics and /config_dump, none of which counts
# shared data; the count is checked in-process by filter/tests/modelgate_filter.rs
# (rate_limit_state_stays_within_max_keys_however_many_keys_arrive).
#
#   bench/limiter_keys.sh                       # 1,000,000 keys, a few minutes
#   LIMITER_KEYS=20000 LIMITER_OUT=/tmp/lk.md bench/limiter_keys.sh
#
# Settings (environment):
#   LIMITER_KEYS     distinct keys to send (default 1000000)
#   LIMITER_CONNS    wrk connections, over 2 threads (default 32)
#   LIMITER_BUDGET   seconds the flood may take in all; past it the run stops and reports
#                    the keys it sent (default 240; the whole run stays under 5 minutes)
#   LIMITER_OUT      report (default bench/results/limiter_keys.md)
#   MODELGATE, MODELGATE_WASM   the release host and filter (default: target/ of this
#                    checkout, as `make build` and `make wasm` leave them)
# Needs wrk and nginx (Debian packages, installed as bench/run.sh does). Ports are picked
# free at start. Every process started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
KEYS=${LIMITER_KEYS:-1000000}
CONNS=${LIMITER_CONNS:-32}
BUDGET=${LIMITER_BUDGET:-240}
OUT=${LIMITER_OUT:-$BENCH/results/limiter_keys.md}
MODELGATE=${MODELGATE:-$ROOT/target/release/modelgate}
WASM=${MODELGATE_WASM:-$ROOT/target/modelgate.wasm}
# The quota of bench/config/limiter-policy.json.
RATE=1
BURST=5
MODEL=sklearn-iris

log() { printf '[limiter %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in wrk nginx; do
    command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] ||
        die "$tool missing: apt-get install wrk nginx (bench/run.sh installs them)"
done
export PATH=$PATH:/usr/sbin
[[ -x $MODELGATE ]] || die "$MODELGATE missing: run 'make build' or set MODELGATE"
[[ -f $WASM ]] || die "$WASM missing: run 'make wasm' or set MODELGATE_WASM"

RUN=$(mktemp -d /tmp/modelgate-limiter.XXXXXX)
PIDS=()
cleanup() {
    local p
    touch "$RUN/active.stop"
    # Children first (the watchdog's sleep, the active caller's curl), then the process.
    for p in "${PIDS[@]}"; do
        pkill -P "$p" 2>/dev/null || true
        kill "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    log "logs and rendered configs kept in $RUN"
}
trap cleanup EXIT
# The whole run is bounded: the flood by its budget, everything else by this watchdog.
(sleep $((BUDGET + 50)) && kill -TERM $$) 2>/dev/null &
PIDS+=($!)

# render TEMPLATE OUT VAR=VALUE...: fill @VAR@ placeholders (bench/run.sh's format).
render() {
    local template=$1 out=$2 args=() kv
    shift 2
    for kv in "$@" "RUN=$RUN"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
    sed "${args[@]}" "$template" >"$out"
    if grep -q '@[A-Z_]*@' "$out"; then die "unfilled placeholder in $out"; fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() { # URL PID: until the URL answers 2xx (30 s) or the process dies
    local deadline=$((SECONDS + 30))
    until curl -sf -o /dev/null --max-time 2 "$1"; do
        kill -0 "$2" 2>/dev/null || die "process $2 for $1 exited; see $RUN"
        ((SECONDS < deadline)) || die "$1 not answering after 30 s; see $RUN"
        sleep 0.2
    done
}

kib() { awk -v f="$1:" '$1 == f {print $2}' "/proc/$GATEWAY/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
commas() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }

# --- servers ------------------------------------------------------------------

P_UPSTREAM=$(free_port)
P_GATEWAY=$(free_port)
P_ADMIN=$(free_port)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

render "$BENCH/config/nginx-upstream.conf.in" "$RUN/upstream.conf" "UPSTREAM_PORT=$P_UPSTREAM"
mkdir -p "$RUN/upstream"
nginx -p "$RUN/upstream" -c "$RUN/upstream.conf" -g 'daemon off;' >"$RUN/upstream.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$P_UPSTREAM/" "$!"

cp "$BENCH/config/limiter-policy.json" "$RUN/policy.json"
render "$BENCH/config/modelgate-full.yaml.in" "$RUN/modelgate.yaml" "LISTEN_PORT=$P_GATEWAY" \
    "BACKEND_PORT=$P_UPSTREAM" "ADMIN_PORT=$P_ADMIN" "WASM=$WASM"
RUST_LOG=warn "$MODELGATE" serve --config "$RUN/modelgate.yaml" >"$RUN/modelgate.log" 2>&1 &
GATEWAY=$!
PIDS+=("$GATEWAY")
wait_http "http://127.0.0.1:$P_ADMIN/ready" "$GATEWAY"
URL=http://127.0.0.1:$P_GATEWAY
MODEL_URL=$URL/v1/models/$MODEL

# status KEY: one request with x-caller KEY; prints the status and the kind of answer.
status() {
    local code answer=$RUN/answer.$BASHPID
    code=$(curl -s -o "$answer" -w '%{http_code}' --max-time 10 -H "x-caller: $1" "$MODEL_URL") || true
    if [[ $code == 429 ]] && grep -q 'too many active callers' "$answer"; then
        echo "$code full"
    elif [[ $code == 429 ]]; then
        echo "$code limited"
    else
        echo "$code"
    fi
}

[[ $(status bench-check) == 200 ]] || die "the gateway did not answer 200 to a first request; see $RUN"

# --- measurement --------------------------------------------------------------

ROWS=()
SENT=0 OK=0 FULL=0 LIMITED=0 OTHER=0 ERRORS=0 FLOOD_US=0
sample() { # LABEL
    ROWS+=("| $1 | $(mib "$(kib VmRSS)") | $(mib "$(kib VmHWM)") | $OK | $FULL | $LIMITED | $OTHER | $(awk -v n=$((OK + FULL + LIMITED + OTHER)) -v us="$FLOOD_US" 'BEGIN {print us ? int(n / (us / 1e6)) : "-"}') |")
    log "sample $1: VmRSS $(kib VmRSS) KiB, VmHWM $(kib VmHWM) KiB"
}

# flood SEGMENT COUNT: COUNT more responses to requests with new keys. Each wrk thread
# stops at its share and leaves a file; wrk then gets SIGINT, its signal to end and report.
flood() {
    local left=$((BUDGET - SECONDS + FLOOD_START)) wrk_pid line start=$EPOCHREALTIME
    ((left > 0)) || return 1
    LIMITER_PREFIX="$1" LIMITER_PER_THREAD=$(($2 / 2)) LIMITER_DONE="$RUN/done-$1" \
        wrk -t2 -c"$CONNS" -d"${left}s" --timeout 5s -s "$BENCH/limiter_keys.lua" "$URL" \
        >"$RUN/wrk-$1.txt" 2>&1 &
    wrk_pid=$!
    while kill -0 "$wrk_pid" 2>/dev/null && ! [[ -e $RUN/done-$1-0 && -e $RUN/done-$1-1 ]]; do
        sleep 0.1
    done
    kill -INT "$wrk_pid" 2>/dev/null || true
    wait "$wrk_pid" || true
    FLOOD_US=$((FLOOD_US + ${EPOCHREALTIME/./} - ${start/./}))
    line=$(grep '^{' "$RUN/wrk-$1.txt" | tail -n1) || die "wrk printed no summary in segment $1: $(cat "$RUN/wrk-$1.txt")"
    read -r s o f l x e < <(python3 -c 'import json, sys; j = json.loads(sys.argv[1]); print(j["sent"], j["ok"], j["full"], j["limited"], j["other"], j["err_connect"] + j["err_read"] + j["err_write"] + j["err_timeout"])' "$line")
    SENT=$((SENT + s)) OK=$((OK + o)) FULL=$((FULL + f)) LIMITED=$((LIMITED + l))
    OTHER=$((OTHER + x)) ERRORS=$((ERRORS + e))
    ((SECONDS < FLOOD_START + BUDGET)) || return 1
}

# The active caller: 4 requests a second with one key, logged as "<epoch s> <status> [kind]".
active_caller() {
    while [[ ! -e $RUN/active.stop ]]; do
        echo "$(date +%s.%N) $(status active-caller)" >>"$RUN/active.log"
        sleep 0.25
    done
}

sample "0 (idle)"
active_caller &
PIDS+=($!)
sleep 2 # the active caller spends its burst and is limited from here on
FLOOD_START=$SECONDS
done_keys=0
reached=yes
for pct in 10 25 50 100; do
    target=$((KEYS * pct / 100))
    if ! flood "p$pct" $((target - done_keys)); then
        reached=no
        log "flood budget of $BUDGET s spent at $((OK + FULL + LIMITED + OTHER)) keys"
    fi
    done_keys=$target
    sample "$(commas $((OK + FULL + LIMITED + OTHER)))"
    [[ $reached == yes ]] || break
done
sleep 1
touch "$RUN/active.stop"
wait "${PIDS[-1]}" 2>/dev/null || true

# A fresh key after the flood, once the flood's slots are past (one emission interval,
# 1 s): exactly its burst, then 429 "rate limit exceeded".
sleep 1.5
FRESH=()
for _ in $(seq $((BURST + 3))); do FRESH+=("$(status fresh-after-flood)"); done
fresh_ok=0
for s in "${FRESH[@]}"; do [[ $s == 200 ]] && fresh_ok=$((fresh_ok + 1)); done
fresh_expected="$(printf '200 %.0s' $(seq $BURST))$(printf '429 limited %.0s' 1 2 3)"
fresh_got="$(printf '%s ' "${FRESH[@]}")"

# The active caller's account: admitted = burst + floor(elapsed × rate), give or take one
# for the 0.25 s between its requests and the clocks of client and gateway.
read -r active_n active_ok active_limited active_bad active_span < <(awk '
    NR == 1 {first = $1} {last = $1; n++}
    $2 == 200 {ok++} $2 == 429 && $3 == "limited" {lim++} !($2 == 200 || ($2 == 429 && $3 == "limited")) {bad++}
    END {printf "%d %d %d %d %.2f\n", n, ok, lim, bad, last - first}' "$RUN/active.log")
active_expected=$(awk -v b=$BURST -v r=$RATE -v t="$active_span" 'BEGIN {print b + int(t * r)}')

CHECKS=()
FAILED=0
check() { # DESCRIPTION CONDITION...
    local what=$1
    shift
    if "$@"; then CHECKS+=("- pass: $what"); else CHECKS+=("- **FAIL**: $what"); FAILED=1; fi
}
within_one() { (($1 >= $2 - 1 && $1 <= $2 + 1)); }
check "active caller admitted $active_ok times in ${active_span} s of $active_n requests (expected $active_expected ± 1 = burst $BURST + ${active_span} s × $RATE/s)" \
    within_one "$active_ok" "$active_expected"
check "active caller never refused for lack of a slot nor answered otherwise ($active_bad such answers; $active_limited × 429 rate limit exceeded)" \
    test "$active_bad" -eq 0
check "fresh key after the flood: $fresh_got(expected $fresh_expected)" test "$fresh_got" == "$fresh_expected"
check "no flood key (each new) was refused as over its own limit ($LIMITED) or answered other than 200/429 ($OTHER), no socket errors ($ERRORS)" \
    test $((LIMITED + OTHER + ERRORS)) -eq 0
check "the flood reached $(commas "$KEYS") keys within $BUDGET s" test "$reached" == yes

# --- report -------------------------------------------------------------------

total=$((OK + FULL + LIMITED + OTHER))
{
    echo "# Rate-limit keys through the gateway ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "\`bench/limiter_keys.sh\`: \`modelgate serve\` (release) with modelgate.wasm, one quota keyed by the \`x-caller\` header (1 request/s, burst 5, maxKeys 16,384: bench/config/limiter-policy.json), nginx upstream, wrk -t2 -c$CONNS; every flood request carries a key never sent before. $(nproc) CPUs, load average at the end $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "| distinct keys answered | VmRSS MiB | VmHWM MiB | 200 | 429 table full | 429 over limit | other | flood req/s |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "Flood: $(commas "$total") keys answered ($(commas "$SENT") sent; wrk drops its last in-flight requests when a segment ends) in $(awk -v us="$FLOOD_US" 'BEGIN {printf "%.0f", us / 1e6}') s."
    echo "\"429 table full\" is the documented answer at the bound (docs/config.md, Bounded state): a new key whose bucket of 16 holds only other keys' live state; each admitted flood key keeps its record live for 1 s, so at these rates the table runs near full."
    echo "Shared-data entries: not observable from outside the process (the admin listener serves /ready, /metrics, /config_dump; none counts shared data); the count is checked in-process by filter/tests/modelgate_filter.rs, and here the bound shows as the RSS plateau."
    echo
    echo "Checks:"
    printf '%s\n' "${CHECKS[@]}"
} >"$OUT"
cat "$OUT"
log "report written to $OUT"
exit "$FAILED"
