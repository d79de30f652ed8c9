#!/usr/bin/env bash
# The hyperlight-bench `http-redirect` table for `hl serve` (issue 24, docs/serve.md "Load test"):
# wrk at concurrency 50 against a small Wasm handler and a JavaScript handler under each strategy
# (restore, renew, reuse; pool 4, 1 s sandbox timeout), against a plain Deno.serve handler doing
# the same work in-process (tools/serve_plain.ts), and a WAGI route (restore, renew). One fresh
# server per row, so each row's peak RSS is its own. Loopback only; every run is bounded by --duration.
#
# Usage: bash tools/serve_load.sh [--duration 60s] [--connections 50] [--threads 2] [--pool 4]
#                                 [--warmup 2s] [--rows wasm,js,wagi,drain]
# `drain` sends SIGTERM halfway through a run (drainDelayMs 1000) and compares what the server
# accepted (its access log) with what wrk received (target/serve-load/drain.jsonl).
# Output: a Markdown table on stdout; one JSON line per row in target/serve-load/results.jsonl.
# Needs wrk and curl (Debian packages; tools/setup.sh load installs them). `deno task serve-load`
# runs this with its arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=60s connections=50 threads=2 pool=4 warmup=2s rows=wasm,js,wagi,drain
while [ $# -gt 0 ]; do
  case "$1" in
  --duration) duration=$2 && shift 2 ;;
  --connections) connections=$2 && shift 2 ;;
  --threads) threads=$2 && shift 2 ;;
  --pool) pool=$2 && shift 2 ;;
  --warmup) warmup=$2 && shift 2 ;;
  --rows) rows=$2 && shift 2 ;;
  -h | --help) sed -n '2,15p' "$0" && exit 0 ;;
  *) echo "serve_load: unknown option $1" >&2 && exit 2 ;;
  esac
done
bash tools/setup.sh load # wrk and curl (Debian packages)
out=target/serve-load
mkdir -p "$out"
: >"$out/results.jsonl"
# The fixtures (clang builds them on first use).
eval "$(deno eval 'import { serveFixtures } from "./tests/kvm/_serve.ts";
const f = serveFixtures(); console.log(`wasm=${f.wasm} js=${f.js} wagi=${f.wagi}`);')"

pid=""
stop() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  pid=""
}
trap stop EXIT

# start <log> <command...>: starts a server, waits for its "listening" line, sets $pid and $port.
start() {
  local log=$1
  shift
  : >"$log" # exists before the background command's own redirection does
  "$@" >"$log" 2>&1 &
  pid=$!
  port=""
  for _ in $(seq 1 600); do
    port=$(sed -n 's/.*"event":"listening".*"port":\([0-9]*\).*/\1/p' "$log" | head -1)
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2 && exit 1; }
    sleep 0.1
  done
  [ -n "$port" ] || { echo "serve_load: no listening line in $log" >&2 && exit 1; }
}

wait_ready() {
  for _ in $(seq 1 1200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] && return 0
    sleep 0.1
  done
  echo "serve_load: not ready" >&2 && exit 1
}

# row <name> <handler> <strategy> <path>: warm-up, then the measured run; appends a JSON line.
row() {
  local name=$1 handler=$2 strategy=$3 path=$4
  wrk -t"$threads" -c"$connections" -d"$warmup" -s tools/serve_load.lua "http://127.0.0.1:$port$path" >/dev/null
  local res
  res=$(wrk -t"$threads" -c"$connections" -d"$duration" --timeout 5s -s tools/serve_load.lua \
    "http://127.0.0.1:$port$path" | sed -n 's/^RESULT //p')
  local peak
  peak=$(awk '/VmHWM/ {print $2 * 1024}' "/proc/$pid/status")
  echo "{\"row\":\"$name\",\"handler\":\"$handler\",\"strategy\":\"$strategy\",\"connections\":$connections,\"pool\":$pool,\"duration\":\"$duration\",\"peak_rss_bytes\":$peak,\"result\":$res}" \
    >>"$out/results.jsonl"
  echo "serve_load: $name done" >&2
}

config() { # config <kind> <file> <strategy> -> path of a one-route config
  local kind=$1 file=$2 strategy=$3 f="$out/$1-$3.json" key=module
  [ "$kind" = js ] && key=source
  cat >"$f" <<JSON
{ "hostname": "127.0.0.1", "port": 0, "accessLog": false,
  "routes": [{ "path": "/h/*", "kind": "$kind", "$key": "$file", "strategy": "$strategy",
               "poolSize": $pool, "timeoutMs": 1000, "acquireTimeoutMs": 10000 }] }
JSON
  echo "$f"
}

for handler in ${rows//,/ }; do
  case "$handler" in
  wasm | js)
    file=${!handler}
    start "$out/plain-$handler.log" deno run -A tools/serve_plain.ts --kind "$handler" --module "$file"
    row "plain-$handler" "$handler" plain /h/x
    stop
    for strategy in restore renew reuse; do
      start "$out/$handler-$strategy.log" deno run -A cli.ts serve --config "$(config "$handler" "$file" "$strategy")"
      wait_ready
      row "$handler-$strategy" "$handler" "$strategy" /h/x
      stop
    done
    ;;
  drain)
    # SIGTERM halfway through a run: every request the server accepted (logged) must be a 200
    # that wrk received; what wrk fails to send after the listener closed was never accepted.
    f="$out/drain.json"
    cat >"$f" <<JSON
{ "hostname": "127.0.0.1", "port": 0, "accessLog": true, "drainDelayMs": 1000,
  "routes": [{ "path": "/h/*", "kind": "js", "source": "$js", "poolSize": $pool,
               "timeoutMs": 1000, "acquireTimeoutMs": 10000 }] }
JSON
    start "$out/drain.log" deno run -A cli.ts serve --config "$f"
    wait_ready
    secs=${duration%s}
    (sleep $((secs / 2)) && kill -TERM "$pid") &
    res=$(wrk -t"$threads" -c"$connections" -d"$duration" --timeout 5s -s tools/serve_load.lua \
      "http://127.0.0.1:$port/h/x" | sed -n 's/^RESULT //p')
    wait "$pid" && code=0 || code=$?
    pid=""
    accepted=$(grep -c '"route":"/h/\*"' "$out/drain.log" || true)
    failed=$(grep '"route":"/h/\*"' "$out/drain.log" | grep -vc '"status":200' || true)
    echo "{\"row\":\"drain\",\"handler\":\"js\",\"strategy\":\"restore\",\"exit_code\":$code,\"accepted\":$accepted,\"accepted_not_200\":$failed,\"result\":$res}" >"$out/drain.jsonl"
    echo "serve_load: drain: exit $code, accepted $accepted, accepted but not 200: $failed, wrk: $res" >&2
    ;;
  wagi)
    # restore: a pool member restored to the post-instantiate snapshot per request (the
    # request's env and stdin per run); renew: a new VM from that snapshot per request.
    for strategy in restore renew; do
      start "$out/wagi-$strategy.log" deno run -A cli.ts serve --config "$(config wagi "$wagi" "$strategy")"
      wait_ready
      row "wagi-$strategy" wagi "$strategy" /h/x
      stop
    done
    ;;
  *) echo "serve_load: unknown row set $handler" >&2 && exit 2 ;;
  esac
done

# The table: rps as a share of the plain handler's rps in the same run.
deno eval --ext=ts '
const rows = Deno.readTextFileSync("target/serve-load/results.jsonl").split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
const plain: Record<string, number> = {};
for (const r of rows) if (r.strategy === "plain") plain[r.handler] = r.result.rps;
console.log("| handler | strategy | rps | % of plain | p50 ms | p95 ms | p99 ms | p99.99 ms | errors | peak RSS MiB |");
console.log("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
for (const r of rows) {
  const x = r.result;
  const errors = x.connect_errors + x.read_errors + x.write_errors + x.timeouts + x.non_2xx;
  const share = plain[r.handler] ? `${(100 * x.rps / plain[r.handler]).toFixed(1)}%` : "—";
  console.log(`| ${r.handler} | ${r.strategy} | ${x.rps.toFixed(0)} | ${share} | ${x.p50_ms.toFixed(2)} | ${x.p95_ms.toFixed(2)} | ${x.p99_ms.toFixed(2)} | ${x.p9999_ms.toFixed(2)} | ${errors} | ${(r.peak_rss_bytes / 2 ** 20).toFixed(0)} |`);
}'
