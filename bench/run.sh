#!/usr/bin/env bash
# The gateway's throughput and latency, measured side by side with two baselines in one run:
#
#   direct  wrk -> uprox-mock-upstream
#   nginx   wrk -> nginx (plain reverse proxy, keepalive pool) -> uprox-mock-upstream
#   uprox   wrk -> uprox-gateway (standalone mode, full request path) -> uprox-mock-upstream
#
# for a JSON and an SSE chat completion, at 1 and 64 connections. The table (also written to
# bench/results/latest.txt) gives req/s and p50/p99 latency per run, and for uprox the throughput
# ratios and the p50 latency it adds over nginx and over the direct baseline.
#
# This is a benchmark, not a test: numbers on a shared 2-core machine are noisy, and all four
# processes (wrk, nginx, mock, gateway) share the same cores. Everything listens on 127.0.0.1.
#
# Environment:
#   BENCH_DURATION    wrk duration per run (default 10s)
#   BENCH_MODEL       model named in the request body (default gpt-4o-mini)
#   BENCH_TARGETS     which targets to run (default "direct nginx uprox")
#   BENCH_MODES       which bodies (default "json sse")
#   BENCH_CONNS       which connection counts (default "1 64")
#   BENCH_POLICY      "full" (default): the Service has a Policy with allowlists, scopes and
#                     rate limits too high to trigger, so the whole policy path runs;
#                     "auth": no Policy, token auth only (to compare the policy path's cost)
#   BENCH_USAGE       "gateway" (default): streamed requests do not ask for usage, so uprox asks
#                     upstream for it (to cost the request) and strips the usage chunk — the
#                     upstream, on this same machine, then does more work for uprox than for
#                     the others; "client": every target's requests ask for it
#                     (stream_options.include_usage), so the upstream's work is the same
#   BENCH_CACHE       "off" (default): the response cache is off; "hit": every request is
#                     deterministic (temperature 0) and the Service caches answers, so after the
#                     first request uprox answers every one from its cache — compare with direct
#   CARGO_TARGET_DIR  where cargo builds (default target/)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${BENCH_DURATION:-10s}
case ${BENCH_POLICY:-full} in
    full) SERVICE_POLICIES="[bench]" ;;
    auth) SERVICE_POLICIES="[]" ;;
    *) printf '[bench] ERROR: BENCH_POLICY must be full or auth\n' >&2; exit 1 ;;
esac
case ${BENCH_CACHE:-off} in
    off) CACHE_TTL=0 ;;
    hit) CACHE_TTL=3600 ;;
    *) printf '[bench] ERROR: BENCH_CACHE must be off or hit\n' >&2; exit 1 ;;
esac
MODEL=${BENCH_MODEL:-gpt-4o-mini}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
RESULTS_DIR="$ROOT/bench/results"
# A fixed, well-formed machine token (uprox_live_ + 43 base64url characters), supplied in the
# bench config as the MachineToken's Secret so the gateway issues none.
TOKEN="uprox_live_benchBENCHbench0123456789-_benchBENCHbench0"
STARTUP_TIMEOUT=60

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
    printf '[bench] ERROR: %s\n' "$*" >&2
    exit 1
}

(( ${#TOKEN} == 54 )) || die "internal: bench token must be 54 characters, is ${#TOKEN}"

# ---------------------------------------------------------------------------------------------
# Tools: wrk, nginx and curl from Debian, installed only when missing.
# ---------------------------------------------------------------------------------------------
nginx_bin() { command -v nginx || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true; }

install_tools() {
    local missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    [[ -n $(nginx_bin) ]] || missing+=(nginx)
    command -v curl >/dev/null || missing+=(curl)
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]} with apt-get"
    # Keep Debian's nginx package from starting its default service on port 80: this script
    # runs its own nginx in the foreground. A policy-rc.d that is already there is left alone.
    local own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends)
    local rc=0
    # Update the package lists only when the install cannot be done with the ones we have.
    "${apt[@]}" "${missing[@]}" >/dev/null 2>&1 ||
        { apt-get update -qq && "${apt[@]}" "${missing[@]}" >/dev/null; } || rc=$?
    ((own_policy)) && rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || die "apt-get install ${missing[*]} failed"
}

install_tools
NGINX=$(nginx_bin)

log "building release binaries"
cargo build --release --quiet -p uprox-gateway --bins
GATEWAY_BIN="$TARGET_DIR/release/uprox-gateway"
MOCK_BIN="$TARGET_DIR/release/uprox-mock-upstream"
[[ -x $GATEWAY_BIN ]] || die "no $GATEWAY_BIN after the build"
[[ -x $MOCK_BIN ]] || die "no $MOCK_BIN after the build"

# ---------------------------------------------------------------------------------------------
# Processes: started here, stopped by PID on any exit.
# ---------------------------------------------------------------------------------------------
WORK=$(mktemp -d -t uprox-bench.XXXXXX)
PIDS=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Give each process up to 5 s to exit, then kill it.
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if ((rc != 0)); then
        log "logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits until the process writes `listening on http://IP:PORT` to its stderr log; prints IP:PORT.
wait_for_listen() {
    local name=$1 pid=$2 errlog=$3 deadline=$((SECONDS + STARTUP_TIMEOUT)) line
    while ((SECONDS < deadline)); do
        if line=$(grep -aoE 'listening on http://[0-9.]+:[0-9]+' "$errlog" | head -n1) && [[ -n $line ]]; then
            echo "${line#listening on http://}"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$errlog" >&2 || true
            die "$name exited before it was listening"
        fi
        sleep 0.1
    done
    tail -n 30 "$errlog" >&2 || true
    die "$name did not report its address within ${STARTUP_TIMEOUT}s"
}

# Waits until an HTTP GET answers 2xx (with optional extra curl arguments).
wait_for_http() {
    local name=$1 pid=$2 url=$3
    shift 3
    local deadline=$((SECONDS + STARTUP_TIMEOUT))
    while ((SECONDS < deadline)); do
        if curl -fsS -o /dev/null --max-time 2 "$@" "$url" 2>/dev/null; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || die "$name exited before it answered $url"
        sleep 0.2
    done
    die "$name did not answer $url within ${STARTUP_TIMEOUT}s"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# -- the upstream ------------------------------------------------------------------------------
NO_COLOR=1 "$MOCK_BIN" --listen 127.0.0.1:0 >"$WORK/mock.out" 2>"$WORK/mock.err" &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
MOCK_ADDR=$(wait_for_listen uprox-mock-upstream "$MOCK_PID" "$WORK/mock.err")
wait_for_http uprox-mock-upstream "$MOCK_PID" "http://$MOCK_ADDR/v1/models"
log "mock upstream on $MOCK_ADDR"

# -- nginx as a plain reverse proxy ------------------------------------------------------------
NGINX_DIR="$WORK/nginx"
mkdir -p "$NGINX_DIR/logs" "$NGINX_DIR/tmp"
NGINX_PORT=$(free_port)
cat >"$NGINX_DIR/nginx.conf" <<EOF
daemon off;
worker_processes auto;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/logs/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path $NGINX_DIR/tmp/client_body;
    proxy_temp_path $NGINX_DIR/tmp/proxy;
    fastcgi_temp_path $NGINX_DIR/tmp/fastcgi;
    uwsgi_temp_path $NGINX_DIR/tmp/uwsgi;
    scgi_temp_path $NGINX_DIR/tmp/scgi;
    keepalive_requests 1000000;
    upstream mock {
        server $MOCK_ADDR;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
"$NGINX" -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" -e "$NGINX_DIR/logs/error.log" \
    >"$WORK/nginx.out" 2>"$WORK/nginx.err" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
NGINX_ADDR="127.0.0.1:$NGINX_PORT"
wait_for_http nginx "$NGINX_PID" "http://$NGINX_ADDR/v1/models"
log "nginx on $NGINX_ADDR"

# -- the gateway in standalone mode ------------------------------------------------------------
mkdir -p "$WORK/config" "$WORK/state"
cat >"$WORK/config/bench.yaml" <<EOF
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {name: upstream, namespace: bench}
spec:
  type: openai-compatible
  baseUrl: "http://$MOCK_ADDR/v1"
  models: ["*"]
  keys: [{label: main, secretRef: {name: upstream-key, key: apiKey}}]
---
apiVersion: v1
kind: Secret
metadata: {name: upstream-key, namespace: bench}
stringData: {apiKey: sk-bench}
---
apiVersion: uprox.dev/v1alpha1
kind: Policy
metadata: {name: bench, namespace: bench}
spec:
  providers: ["upstream"]
  models: ["*"]
  scopes: [chat, models]
  rateLimits: {requestsPerMinute: 100000000, tokensPerMinute: 2000000000, maxConcurrentRequests: 100000}
---
apiVersion: uprox.dev/v1alpha1
kind: Service
metadata: {name: bench, namespace: bench}
spec: {policies: $SERVICE_POLICIES, cacheTtlSeconds: $CACHE_TTL}
---
apiVersion: uprox.dev/v1alpha1
kind: Budget
metadata: {name: bench, namespace: bench}
spec: {services: [bench], dailyUSD: "1000000", monthlyUSD: "1000000", action: Block}
---
apiVersion: uprox.dev/v1alpha1
kind: MachineToken
metadata: {name: bench, namespace: bench}
spec: {service: bench, secretName: bench-token}
---
apiVersion: v1
kind: Secret
metadata:
  name: bench-token
  namespace: bench
  labels: {uprox.dev/machine-token: bench}
  annotations: {uprox.dev/rotation: "0"}
stringData: {token: $TOKEN}
EOF
NO_COLOR=1 "$GATEWAY_BIN" --config "$WORK/config" --state "$WORK/state" --listen 127.0.0.1:0 \
    >"$WORK/gateway.out" 2>"$WORK/gateway.err" &
GATEWAY_PID=$!
PIDS+=("$GATEWAY_PID")
GATEWAY_ADDR=$(wait_for_listen uprox-gateway "$GATEWAY_PID" "$WORK/gateway.err")
wait_for_http uprox-gateway "$GATEWAY_PID" "http://$GATEWAY_ADDR/readyz"
log "uprox-gateway on $GATEWAY_ADDR"

declare -A ADDR=([direct]=$MOCK_ADDR [nginx]=$NGINX_ADDR [uprox]=$GATEWAY_ADDR)
read -r -a TARGETS <<< "${BENCH_TARGETS:-direct nginx uprox}"
read -r -a MODES <<< "${BENCH_MODES:-json sse}"
read -r -a CONNS <<< "${BENCH_CONNS:-1 64}"

# ---------------------------------------------------------------------------------------------
# Request bodies and the wrk script.
# ---------------------------------------------------------------------------------------------
body_for() {
    local stream=false options=""
    [[ $1 == sse ]] && stream=true
    [[ $1 == sse && ${BENCH_USAGE:-gateway} == client ]] && options=',"stream_options":{"include_usage":true}'
    [[ ${BENCH_CACHE:-off} == hit ]] && options+=',"temperature":0'
    printf '{"model":"%s","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":32,"stream":%s%s}' \
        "$MODEL" "$stream" "$options"
}

for mode in "${MODES[@]}"; do
    body=$(body_for "$mode")
    # The body is a Lua long string: it holds no "]]".
    cat >"$WORK/$mode.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
wrk.body = [[$body]]

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d seconds=%.3f rps=%.2f p50_us=%d p99_us=%d status_errors=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout))
end
EOF
done

# One request per target and mode with curl first, so a broken setup fails with the response in
# view instead of as a wall of non-2xx counts.
for target in "${TARGETS[@]}"; do
    for mode in "${MODES[@]}"; do
        out="$WORK/check-$target-$mode.txt"
        code=$(curl -sS -o "$out" -w '%{http_code}' --max-time 10 \
            -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
            --data-binary "$(body_for "$mode")" "http://${ADDR[$target]}/v1/chat/completions") || code=000
        if [[ $code != 2* ]]; then
            head -c 2000 "$out" >&2 || true
            echo >&2
            die "$target $mode: POST /v1/chat/completions answered HTTP $code"
        fi
        if [[ $mode == sse ]] && ! grep -q '^data: \[DONE\]' "$out"; then
            head -c 2000 "$out" >&2 || true
            die "$target sse: the stream did not end with data: [DONE]"
        fi
    done
done

# ---------------------------------------------------------------------------------------------
# The runs.
# ---------------------------------------------------------------------------------------------
declare -A RPS P50 P99 CPU
FAILURES=()
declare -A SERVER_PID=([direct]=$MOCK_PID [nginx]=$NGINX_PID [uprox]=$GATEWAY_PID)

# CPU time (user + system, clock ticks) of a server process and its children (nginx's workers):
# the work each request costs the proxy, which wall-clock throughput on a noisy shared machine
# shows only roughly.
cpu_ticks() {
    local total=0 pid fields
    for pid in "$1" $(pgrep -P "$1" || true); do
        [[ -r /proc/$pid/stat ]] || continue
        # Fields after the command (which may hold spaces): utime and stime are 14 and 15.
        fields=$(sed 's/^.*) //' "/proc/$pid/stat")
        total=$((total + $(awk '{ print $12 + $13 }' <<<"$fields")))
    done
    echo "$total"
}
TICKS_PER_SECOND=$(getconf CLK_TCK)

run_one() {
    local target=$1 mode=$2 conns=$3 threads=2
    ((conns == 1)) && threads=1
    local out="$WORK/wrk-$target-$mode-$conns.txt"
    log "wrk $target $mode c=$conns t=$threads d=$DURATION"
    local ticks_before
    ticks_before=$(cpu_ticks "${SERVER_PID[$target]}")
    timeout --kill-after=10 "$(($(duration_seconds "$DURATION") + 60))" \
        wrk -t"$threads" -c"$conns" -d"$DURATION" --latency -s "$WORK/$mode.lua" \
        "http://${ADDR[$target]}/v1/chat/completions" >"$out" 2>&1 ||
        { cat "$out" >&2; die "wrk failed for $target $mode c=$conns"; }
    local line
    line=$(grep -a '^BENCH_RESULT ' "$out" | tail -n1) || { cat "$out" >&2; die "no result from wrk for $target $mode c=$conns"; }
    local -A r=()
    local kv
    for kv in ${line#BENCH_RESULT }; do r[${kv%%=*}]=${kv#*=}; done
    local key="$target/$mode/$conns"
    local ticks=$(($(cpu_ticks "${SERVER_PID[$target]}") - ticks_before))
    CPU[$key]=$(awk -v t="$ticks" -v hz="$TICKS_PER_SECOND" -v n="${r[requests]}" \
        'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else printf "n/a" }')
    RPS[$key]=${r[rps]}
    P50[$key]=${r[p50_us]}
    P99[$key]=${r[p99_us]}
    local non2xx
    non2xx=$(grep -aoE 'Non-2xx or 3xx responses: [0-9]+' "$out" | grep -oE '[0-9]+$' || true)
    if [[ -n $non2xx && $non2xx != 0 ]] || ((r[status_errors] != 0)); then
        FAILURES+=("$key: ${non2xx:-${r[status_errors]}} non-2xx responses")
        grep -a -B2 -A2 'Non-2xx' "$out" >&2 || true
    fi
    if ((r[connect_errors] + r[read_errors] + r[write_errors] != 0)); then
        FAILURES+=("$key: socket errors connect=${r[connect_errors]} read=${r[read_errors]} write=${r[write_errors]}")
    fi
    ((r[timeouts] == 0)) || FAILURES+=("$key: ${r[timeouts]} timeouts")
    ((r[requests] > 0)) || FAILURES+=("$key: no request completed")
}

# wrk's duration syntax (10, 10s, 2m, 1h) in whole seconds, for the outer timeout.
duration_seconds() {
    local d=$1
    case $d in
        *h) echo $((${d%h} * 3600)) ;;
        *m) echo $((${d%m} * 60)) ;;
        *s) echo "${d%s}" ;;
        *) echo "$d" ;;
    esac
}
[[ $(duration_seconds "$DURATION") =~ ^[0-9]+$ ]] || die "BENCH_DURATION must be like 10, 10s, 2m or 1h, not $DURATION"

# Interleave the targets so that each comparison is made under the same machine conditions.
for mode in "${MODES[@]}"; do
    for conns in "${CONNS[@]}"; do
        for target in "${TARGETS[@]}"; do
            run_one "$target" "$mode" "$conns"
        done
    done
done

# ---------------------------------------------------------------------------------------------
# The table.
# ---------------------------------------------------------------------------------------------
ms() { awk -v us="$1" 'BEGIN { printf "%.3f", us / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }
added_ms() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == "") printf "n/a"; else printf "%+.3f", (a - b) / 1000 }'; }

mkdir -p "$RESULTS_DIR"
TABLE="$WORK/table.txt"
{
    echo "uprox benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet 2>/dev/null || echo ' (dirty)')," \
        "duration $DURATION per run, model $MODEL, cache ${BENCH_CACHE:-off}, $(nproc) cores," \
        "$("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), $(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}')"
    echo "uprox/nginx and uprox/direct: throughput ratios; +p50: latency uprox adds at the median;"
    echo "cpu us/req: CPU time (user + system) the target's server process spent per request"
    echo
    printf '%-7s %-5s %5s %11s %9s %9s %11s %12s %13s %15s %16s\n' \
        target mode conns 'req/s' 'p50 ms' 'p99 ms' 'cpu us/req' 'uprox/nginx' 'uprox/direct' '+p50 vs nginx' '+p50 vs direct'
    for mode in "${MODES[@]}"; do
        for conns in "${CONNS[@]}"; do
            for target in "${TARGETS[@]}"; do
                key="$target/$mode/$conns"
                extra=("" "" "" "")
                if [[ $target == uprox ]]; then
                    extra=(
                        "$(ratio "${RPS[$key]}" "${RPS[nginx/$mode/$conns]:-}")"
                        "$(ratio "${RPS[$key]}" "${RPS[direct/$mode/$conns]:-}")"
                        "$(added_ms "${P50[$key]}" "${P50[nginx/$mode/$conns]:-}")"
                        "$(added_ms "${P50[$key]}" "${P50[direct/$mode/$conns]:-}")"
                    )
                fi
                printf '%-7s %-5s %5s %11.1f %9s %9s %11s %12s %13s %15s %16s\n' \
                    "$target" "$mode" "$conns" "${RPS[$key]}" "$(ms "${P50[$key]}")" "$(ms "${P99[$key]}")" \
                    "${CPU[$key]}" "${extra[@]}"
            done
        done
    done
} | sed 's/ *$//' >"$TABLE"

if ((${#FAILURES[@]} != 0)); then
    {
        echo
        echo "INVALID: runs with errors"
        printf '  %s\n' "${FAILURES[@]}"
    } >>"$TABLE"
fi
cat "$TABLE"
cp "$TABLE" "$RESULTS_DIR/latest.txt"
log "table written to bench/results/latest.txt"

if ((${#FAILURES[@]} != 0)); then
    printf '[bench] FAILED: %s\n' "${FAILURES[@]}" >&2
    die "${#FAILURES[@]} run(s) had errors; the numbers above are not valid"
fi
