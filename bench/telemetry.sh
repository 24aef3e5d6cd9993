#!/usr/bin/env bash
# What telemetry costs on the request path (issue 13), one command: `bash bench/telemetry.sh`.
#
# One local deployment, and in the same run, alternating BENCH_ROUNDS times (default 2): the runtime
# served without an OTLP endpoint (metrics and the access log only: what every deployment pays) and
# with one (every request's root span and each model call's span exported over OTLP/HTTP to a sink
# on loopback). Each serving measures `GET /healthz`, `GET /v1/me` and `POST /v1/chat/completions`
# (the mock provider, a ledger row per call) at c=32 for BENCH_SECS (default 8) and c=1 for
# BENCH_REQUESTS (default 1500), then the cost of one `/metrics` scrape. Results: medians per mode,
# and "spans on" over "spans off" as a ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SECS="${BENCH_SECS:-8}"
N="${BENCH_REQUESTS:-1500}"
ROUNDS="${BENCH_ROUNDS:-2}"
OUT="${BENCH_OUT:-bench/out}"
export CARGO_TARGET_DIR="${TENANTCTL_BENCH_TARGET:-/var/tmp/tenantctl-bench}"
P_MOCK=19150 P_RT=19152 P_IDP=19154 P_METRICS=19155 P_SINK=19156
mkdir -p "$OUT"
say "building release binaries (target dir $CARGO_TARGET_DIR)"
cargo build --release --locked -p cli --bin tenantctl -p tests --bin mock-provider --bin gateway-bench >&2
BIN="$CARGO_TARGET_DIR/release"
bench_state telemetry "$BIN"
"$BIN/mock-provider" --listen "127.0.0.1:$P_MOCK" --words 16 >/dev/null & PIDS+=($!)
wait_port "$P_MOCK"
# The OTLP sink: accepts every export, keeps nothing (the collector's cost is not ours).
python3 - "$P_SINK" >/dev/null 2>&1 <<'PY' & PIDS+=($!)
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-type", "application/json"); self.end_headers(); self.wfile.write(b"{}")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
wait_port "$P_SINK"
bench_openai_deployment "$STATE" "$BIN" "$P_MOCK"
export BENCH_TOKEN="$("${TC[@]}" token --tenant bench --ttl 86400 --scope "me:read models:read chat:write")"
RESULTS="$OUT/telemetry.jsonl"
: > "$RESULTS"
base="http://127.0.0.1:$P_RT"
for round in $(seq 1 "$ROUNDS"); do
  for mode in off on; do
    envs=()
    [ "$mode" = on ] && envs=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$P_SINK" OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)
    env "${envs[@]}" "${TC[@]}" serve --listen "127.0.0.1:$P_RT" --idp-listen "127.0.0.1:$P_IDP" --metrics-listen "127.0.0.1:$P_METRICS" 2>/dev/null & SERVE=$!; PIDS+=($SERVE)
    wait_port "$P_RT"
    for target in "healthz GET /healthz" "me GET /v1/me" "chat POST /v1/chat/completions"; do
      set -- $target
      say "round $round, spans $mode: $1 c=32 for ${SECS}s, then c=1"
      "$BIN/gateway-bench" --name "$1-$mode" --method "$2" --url "$base$3" --concurrency 32 --duration-secs "$SECS" --warmup 100 | sed "s/^{/{\"round\":$round,/" | tee -a "$RESULTS"
      "$BIN/gateway-bench" --name "$1-$mode" --method "$2" --url "$base$3" --requests "$N" --concurrency 1 | sed "s/^{/{\"round\":$round,/" | tee -a "$RESULTS"
    done
    "$BIN/gateway-bench" --name "scrape-$mode" --method GET --url "http://127.0.0.1:$P_METRICS/metrics" --requests 200 --concurrency 1 | sed "s/^{/{\"round\":$round,/" | tee -a "$RESULTS"
    kill -TERM "$SERVE"; wait "$SERVE" || true
  done
done
python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
med = lambda xs: sorted(xs)[len(xs) // 2]
def get(name, c, k):
    xs = [r[k] for r in rows if r["name"] == name and r.get("concurrency") == c and k in r]
    return med(xs) if xs else float("nan")
print()
print("| request | spans | c=32 req/s | c=1 p50 (µs) | c=1 p99 (µs) | on/off c=32 | on/off c=1 p50 |")
print("|---|---|---:|---:|---:|---:|---:|")
for n, label in [("healthz", "GET /healthz"), ("me", "GET /v1/me"), ("chat", "POST /v1/chat/completions")]:
    for mode in ("off", "on"):
        extra = ("", "") if mode == "off" else (f"{get(n + '-on', 32, 'rps') / get(n + '-off', 32, 'rps'):.2f}x", f"{get(n + '-on', 1, 'p50_us') / get(n + '-off', 1, 'p50_us'):.2f}x")
        print(f"| {label} | {mode} | {get(n + '-' + mode, 32, 'rps'):.0f} | {get(n + '-' + mode, 1, 'p50_us')} | {get(n + '-' + mode, 1, 'p99_us')} | {extra[0]} | {extra[1]} |")
print(f"| GET /metrics (one scrape) | off / on | | {get('scrape-off', 1, 'p50_us')} / {get('scrape-on', 1, 'p50_us')} | | | |")
failed = [r for r in rows if r.get("errors")]
for r in failed:
    print(f"- **errors**: {r['name']} c={r.get('concurrency')}: {r['errors']} failed requests; these figures do not count")
sys.exit(1 if failed else 0)
PY
