#!/usr/bin/env bash
# The gateway benchmark (issue 10), one command: `bash bench/gateway.sh`.
#
# One run, one machine, one mock upstream (the `mock-provider` binary, OpenAI wire format). Four
# targets are driven by the same load generator (`gateway-bench`, keep-alive, TCP_NODELAY):
#   direct    the mock provider itself
#   floor     a bare pass-through proxy (`passthrough-proxy`, a few lines of hyper): one HTTP hop
#   tenantctl the runtime's full path: JWT, policy, secret cache, provider adapter, ledger commit
#             (a real local cluster with fsync on, started for the run)
#   litellm   the LiteLLM proxy (PyPI `litellm[proxy]`, pinned below), configured against the mock
# Figures: c=1 latency (p50/p99), c=32 throughput, streaming time to first token and inter-chunk
# gaps, requests of 40 ms or more (Nagle), the durable-commit cost (pg_test_fsync, same disk), RSS
# of the runtime over a soak run, and a perf profile of the runtime under load.
#
# Environment: BENCH_SOAK_SECS (default 600), BENCH_REQUESTS (default 3000), BENCH_SECS (default 10),
# BENCH_OUT (default bench/out). Needs perf for the profile (skipped with a note if absent).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

LITELLM_VERSION="1.81.16" # a known-good release; never 1.82.7 or 1.82.8 (compromised)
LITELLM_VENV="${TENANTCTL_LITELLM_VENV:-/var/tmp/tenantctl-litellm}"
SOAK="${BENCH_SOAK_SECS:-600}"
N="${BENCH_REQUESTS:-3000}"
SECS="${BENCH_SECS:-10}"
OUT="${BENCH_OUT:-bench/out}"
export CARGO_TARGET_DIR="${TENANTCTL_BENCH_TARGET:-/var/tmp/tenantctl-bench}"
P_MOCK=19100 P_FLOOR=19101 P_RT=19102 P_IDP=19104 P_METRICS=19105 P_LITELLM=19103
mkdir -p "$OUT"


if [ ! -x "$LITELLM_VENV/bin/litellm" ] || ! "$LITELLM_VENV/bin/python" -c "import importlib.metadata as m; assert m.version('litellm') == '$LITELLM_VERSION'" 2>/dev/null; then
  say "installing litellm[proxy]==$LITELLM_VERSION into $LITELLM_VENV"
  python3 -m venv "$LITELLM_VENV"
  "$LITELLM_VENV/bin/pip" install --quiet --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION"
fi

say "building release binaries (target dir $CARGO_TARGET_DIR)"
cargo build --release --locked -p cli --bin tenantctl -p tests --bin mock-provider --bin passthrough-proxy --bin gateway-bench >&2
BIN="$CARGO_TARGET_DIR/release"

bench_state bench "$BIN"

# 16 words a reply; in streams a chunk a millisecond (so inter-chunk gaps are measurable).
"$BIN/mock-provider" --listen "127.0.0.1:$P_MOCK" --words 16 --chunk-delay-ms 1 >/dev/null & MOCK_PID=$!; PIDS+=($MOCK_PID)
wait_port "$P_MOCK"
"$BIN/passthrough-proxy" "127.0.0.1:$P_FLOOR" "127.0.0.1:$P_MOCK" >/dev/null & FLOOR_PID=$!; PIDS+=($FLOOR_PID)
wait_port "$P_FLOOR"

say "starting a local deployment (durable Postgres) with one tenant pointed at the mock"
bench_openai_deployment "$STATE" "$BIN" "$P_MOCK"
"${TC[@]}" serve --listen "127.0.0.1:$P_RT" --idp-listen "127.0.0.1:$P_IDP" --metrics-listen "127.0.0.1:$P_METRICS" 2>"$OUT/serve.log" & RT_PID=$!; PIDS+=($RT_PID)
wait_port "$P_RT"
BENCH_TOKEN="$("${TC[@]}" token --tenant bench --ttl 86400)"
export BENCH_TOKEN

say "starting LiteLLM $LITELLM_VERSION against the same mock"
cat > "$STATE/litellm.yaml" <<YAML
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:$P_MOCK/v1
      api_key: os.environ/BENCH_UPSTREAM_KEY
litellm_settings:
  telemetry: false
YAML
BENCH_UPSTREAM_KEY="$(head -c 16 /dev/urandom | base64)" LITELLM_LOG=ERROR \
  "$LITELLM_VENV/bin/litellm" --config "$STATE/litellm.yaml" --host 127.0.0.1 --port "$P_LITELLM" >"$OUT/litellm.log" 2>&1 & LITELLM_PID=$!; PIDS+=($LITELLM_PID)
wait_port "$P_LITELLM"
sleep 2

targets=(
  "direct http://127.0.0.1:$P_MOCK/v1/chat/completions"
  "floor http://127.0.0.1:$P_FLOOR/v1/chat/completions"
  "tenantctl http://127.0.0.1:$P_RT/v1/chat/completions"
  "litellm http://127.0.0.1:$P_LITELLM/v1/chat/completions"
)
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
: > "$OUT/cpu.jsonl"
run() { "$BIN/gateway-bench" "$@" | tee -a "$RESULTS"; }
# The runtime's ledger counters (rows, commits, time in commits), before and after a phase.
ledger_counters() {
  python3 - "$P_METRICS" "$OUT/ledger_$1.txt" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
open(sys.argv[2], "w").write("".join(l + "\n" for l in text.splitlines() if l.startswith("tenantctl_ledger_") and "{" not in l and "_write_duration" not in l))
PY
}
# CPU time (clock ticks, user + system) of each process of the run, and of the whole machine, so a
# c=32 phase can be split into CPU per request by process (where the cores went).
cpu_snapshot() {
  local pg=0 p
  for p in $(pgrep -u "${TENANTCTL_PG_USER:-postgres}" 2>/dev/null); do
    pg=$((pg + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  local lit=0
  for p in $LITELLM_PID $(pgrep -P "$LITELLM_PID" 2>/dev/null); do
    lit=$((lit + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "mock=$(awk '{print $14 + $15}' /proc/$MOCK_PID/stat) floor=$(awk '{print $14 + $15}' /proc/$FLOOR_PID/stat) tenantctl=$(awk '{print $14 + $15}' /proc/$RT_PID/stat) postgres=$pg litellm=$lit machine=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat) idle=$(awk '/^cpu / {print $5 + $6}' /proc/stat)"
}
for t in "${targets[@]}"; do
  set -- $t
  say "$1: c=1 latency ($N requests)"
  [ "$1" = tenantctl ] && ledger_counters c1_before
  run --name "$1" --url "$2" --requests "$N" --concurrency 1
  [ "$1" = tenantctl ] && ledger_counters c1_after
  say "$1: c=32 throughput (${SECS}s)"
  [ "$1" = tenantctl ] && ledger_counters c32_before
  cpu_before="$(cpu_snapshot)"
  run --name "$1" --url "$2" --concurrency 32 --duration-secs "$SECS" --warmup 100
  echo "{\"name\":\"$1\",\"cpu_before\":\"$cpu_before\",\"cpu_after\":\"$(cpu_snapshot)\"}" >> "$OUT/cpu.jsonl"
  [ "$1" = tenantctl ] && ledger_counters c32_after
  say "$1: streaming, c=1"
  run --name "$1" --url "$2" --mode stream --requests 300 --warmup 30
done

say "the durable commit on this disk (pg_test_fsync)"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
"$PG_BIN/pg_test_fsync" -s 2 -f "$STATE/fsync.test" > "$OUT/pg_test_fsync.txt" 2>&1 || true
grep -m1 -E "fdatasync +[0-9.]+ ops/sec" "$OUT/pg_test_fsync.txt" >&2 || true
say "the ledger write itself, timed (pgbench, the runtime's prepared ledger_append, same cluster)"
SOCKET="$("${TC[@]}" local status | awk '/socket dir:/ {print $3}')"
cat > "$STATE/ledger.sql" <<'SQL'
SELECT t_bench.ledger_append('bench', 't_bench', ARRAY[gen_random_uuid()], ARRAY[gen_random_uuid()], ARRAY['bench'], ARRAY['openai'], ARRAY['gpt-4o-mini'], ARRAY[5::bigint], ARRAY[16::bigint], ARRAY[11::bigint], ARRAY['bench'], ARRAY['complete'], ARRAY[false], ARRAY[0::bigint], ARRAY[0::bigint], ARRAY[0::bigint], ARRAY['chatcmpl-bench'], ARRAY['{"prompt_tokens": 5, "completion_tokens": 16}'], ARRAY[NULL::bigint], ARRAY['{"cost-center": "bench", "tenant": "bench", "tier": "schema"}'], ARRAY[now()]);
SQL
chmod 644 "$STATE/ledger.sql"
PGRUN=(env)
[ "$(id -u)" = 0 ] && PGRUN=(runuser -u "${TENANTCTL_PG_USER:-postgres}" --)
"${PGRUN[@]}" "$PG_BIN/pgbench" -n -h "$SOCKET" -U tenantctl_admin -M prepared -f "$STATE/ledger.sql" -t 2000 -c 1 tenantctl > "$OUT/ledger_commit.txt" 2>&1 || true
grep -m1 "latency average" "$OUT/ledger_commit.txt" >&2 || { say "the timed ledger statement failed:"; tail -n 5 "$OUT/ledger_commit.txt" >&2; exit 1; }

if command -v perf >/dev/null 2>&1; then
  say "profiling the runtime under c=1 load (perf, 10 s)"
  "$BIN/gateway-bench" --name profile --url "http://127.0.0.1:$P_RT/v1/chat/completions" --concurrency 1 --duration-secs 12 --warmup 0 >/dev/null &
  LOAD=$!
  sleep 1
  perf record -F 1999 -g -p "$RT_PID" -o "$STATE/perf.data" -- sleep 10 >/dev/null 2>&1 || true
  wait "$LOAD" || true
  perf report -i "$STATE/perf.data" --stdio --no-children --sort dso,symbol --percent-limit 0.7 2>/dev/null | grep -v '^$' | head -n 120 > "$OUT/profile.txt" || true
else
  say "perf is not installed: no profile (apt-get install linux-perf)"
fi

say "soak: the runtime at c=8 for ${SOAK}s, RSS sampled every 10 s"
: > "$OUT/rss.txt"
( while kill -0 "$RT_PID" 2>/dev/null; do awk '/VmRSS/ {print $2}' "/proc/$RT_PID/status" >> "$OUT/rss.txt"; sleep 10; done ) &
SAMPLER=$!
"$BIN/gateway-bench" --name soak --url "http://127.0.0.1:$P_RT/v1/chat/completions" --concurrency 8 --duration-secs "$SOAK" --warmup 0 > "$OUT/soak.json"
kill "$SAMPLER" 2>/dev/null || true
python3 - "$RESULTS" "$OUT" <<'PY'
import json, sys, re, pathlib
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = pathlib.Path(sys.argv[2])
by = {(r["name"], r["mode"], r.get("concurrency", 1)): r for r in rows}
names = ["direct", "floor", "tenantctl", "litellm"]
def g(n, m, c, k): return by.get((n, m, c), {}).get(k, 0)
fsync = re.search(r"fdatasync\s+([\d.]+) ops/sec\s+(\d+) usecs/op", (out / "pg_test_fsync.txt").read_text())
commit_us = int(fsync.group(2)) if fsync else 0
ledger = re.search(r"latency average = ([\d.]+) ms", (out / "ledger_commit.txt").read_text()) if (out / "ledger_commit.txt").exists() else None
ledger_us = int(float(ledger.group(1)) * 1000) if ledger else 0
def counters(phase):
    f = out / f"ledger_{phase}.txt"
    if not f.exists():
        return {}
    return {l.split()[0]: float(l.split()[1]) for l in f.read_text().splitlines() if l.strip()}
def delta(phase):
    a, b = counters(phase + "_before"), counters(phase + "_after")
    d = {k.removeprefix("tenantctl_ledger_").removesuffix("_total"): b.get(k, 0) - a.get(k, 0) for k in b}
    d["commit_microseconds"] = int(d.pop("commit_seconds", 0) * 1e6)
    return {k: int(v) for k, v in d.items()}
print("| target | c=1 p50 (µs) | c=1 p99 (µs) | c=32 req/s | TTFT p50 (µs) | inter-chunk mean (µs) | ≥40 ms |")
print("|---|---:|---:|---:|---:|---:|---:|")
for n in names:
    print(f"| {n} | {g(n,'plain',1,'p50_us')} | {g(n,'plain',1,'p99_us')} | {g(n,'plain',32,'rps'):.0f} | {g(n,'stream',1,'ttft_p50_us')} | {g(n,'stream',1,'gap_mean_us')} | {g(n,'plain',1,'over_40ms')} |")
floor = lambda k, m="plain", c=1: g("floor", m, c, k)
tc = lambda k, m="plain", c=1: g("tenantctl", m, c, k)
print()
print(f"- durable commit on this disk (pg_test_fsync, fdatasync of one 8 kB write): {commit_us} µs")
print(f"- the ledger write itself (pgbench, the prepared `ledger_append` statement the runtime sends): {ledger_us} µs")
d1, d32 = delta("c1"), delta("c32")
if d1.get("commits"):
    print(f"- the ledger commit as the runtime timed it at c=1: {d1['commit_microseconds'] // d1['commits']} µs mean over {d1['commits']} commits")
if d32.get("commits"):
    print(f"- group commit at c=32: {d32['rows']} rows in {d32['commits']} commits, {d32['rows'] / d32['commits']:.1f} rows a commit, {d32['commit_microseconds'] // d32['commits']} µs a commit")
print(f"- tenantctl added p50 over the floor at c=1: {tc('p50_us') - floor('p50_us')} µs (target: 50 µs + the commit: {50 + commit_us} µs by fdatasync, {50 + ledger_us} µs by the ledger write)")
print(f"- tenantctl added TTFT over the floor: {tc('ttft_p50_us','stream') - floor('ttft_p50_us','stream')} µs; added inter-chunk: {tc('gap_mean_us','stream') - floor('gap_mean_us','stream')} µs")
lit = g("litellm", "plain", 32, "rps") or 1
print(f"- c=32 throughput, tenantctl / LiteLLM: {g('tenantctl','plain',32,'rps') / lit:.1f}x; tenantctl / floor: {g('tenantctl','plain',32,'rps') / (g('floor','plain',32,'rps') or 1):.2f}x")
# Where the cores went at c=32: CPU per request by process (the warm-up's 100 requests included).
tick_us = 1_000_000 // 100
print()
print("| c=32 target | CPU µs a request: load generator + rest | mock | floor | tenantctl | postgres | litellm | machine busy |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
others = 0
for line in (out / "cpu.jsonl").read_text().splitlines():
    c = json.loads(line)
    a = dict(kv.split("=") for kv in c["cpu_before"].split())
    b = dict(kv.split("=") for kv in c["cpu_after"].split())
    d = {k: int(b[k]) - int(a[k]) for k in a}
    r = by.get((c["name"], "plain", 32), {})
    n = max(1, r.get("requests", 0) + 100)
    per = lambda k: d[k] * tick_us // n
    rest = per("machine") - sum(per(k) for k in ("mock", "floor", "tenantctl", "postgres", "litellm"))
    busy = d["machine"] * 100 // max(1, d["machine"] + d["idle"])
    print(f"| {c['name']} | {rest} | {per('mock')} | {per('floor')} | {per('tenantctl')} | {per('postgres')} | {per('litellm')} | {busy}% |")
    if c["name"] == "tenantctl":
        others = rest + per("mock") + per("postgres")
# The machine's ceiling for the tenantctl path at c=32: all its cores divided by the CPU the rest of
# the path (load generator, mock, Postgres with the ledger) spent per request, as if the runtime
# itself cost nothing. A throughput target above it cannot be met on this machine.
import os
cores = os.cpu_count() or 1
if others > 0:
    ceiling = cores * 1_000_000 // others
    print(f"- ceiling at c=32 with a runtime that cost no CPU: {cores} cores / {others} µs a request (load generator, mock, Postgres) = {ceiling} req/s = {ceiling / lit:.1f}x LiteLLM, {ceiling / (g('floor','plain',32,'rps') or 1):.2f}x the floor")
rss = [int(x) for x in (out / "rss.txt").read_text().split()]
soak = json.loads((out / "soak.json").read_text())
if rss:
    print(f"- soak: {soak['requests']} requests in the run, {soak['errors']} errors; RSS first {rss[0]//1024} MiB, max {max(rss)//1024} MiB, last {rss[-1]//1024} MiB over {len(rss)} samples")
failed = [r for r in rows if r.get("errors")] + ([soak] if soak.get("errors") else [])
for r in failed:
    print(f"- **errors**: {r['name']} {r['mode']} c={r.get('concurrency', 1)}: {r['errors']} failed requests; these figures do not count")
sys.exit(1 if failed else 0)
PY
