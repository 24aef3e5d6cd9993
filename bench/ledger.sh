#!/usr/bin/env bash
# The ledger writer (issue 11's benchmark), one command: `bash bench/ledger.sh`.
#
# One local deployment (durable Postgres), one tenant, the mock provider; the runtime served twice in
# the same run, once with `--ledger-commit group` (the default) and once with `--ledger-commit
# direct` (one commit per call), each driven the same way: c=32 for BENCH_SECS (default 10) and c=1
# for BENCH_REQUESTS (default 2000). Figures: rows/s and rows per commit at c=32, p50/p99 at c=1.
# Then the durable commit's own price at a fixed rate (BENCH_RATE, default 1000 req/s, for
# BENCH_PACED_SECS, default 10, in BENCH_PACED_ROUNDS alternating pairs, default 5; latency counted
# from each request's due time): group commit as
# served, against the same path with the commit's wait for the WAL flush switched off for the
# tenant's role (`synchronous_commit = off`: the row is in memory when the call returns, the
# in-memory sink's durability), with `pg_test_fsync` on the same disk.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SECS="${BENCH_SECS:-10}"
N="${BENCH_REQUESTS:-2000}"
RATE="${BENCH_RATE:-1000}"
PACED_SECS="${BENCH_PACED_SECS:-10}"
ROUNDS="${BENCH_PACED_ROUNDS:-5}"
OUT="${BENCH_OUT:-bench/out}"
export CARGO_TARGET_DIR="${TENANTCTL_BENCH_TARGET:-/var/tmp/tenantctl-bench}"
P_MOCK=19120 P_RT=19122 P_IDP=19124 P_METRICS=19125
mkdir -p "$OUT"
say "building release binaries (target dir $CARGO_TARGET_DIR)"
cargo build --release --locked -p cli --bin tenantctl -p tests --bin mock-provider --bin gateway-bench >&2
BIN="$CARGO_TARGET_DIR/release"
bench_state ledger "$BIN"
"$BIN/mock-provider" --listen "127.0.0.1:$P_MOCK" --words 16 >/dev/null & PIDS+=($!)
wait_port "$P_MOCK"
bench_openai_deployment "$STATE" "$BIN" "$P_MOCK"
export BENCH_TOKEN="$("${TC[@]}" token --tenant bench --ttl 86400)"
counter() {
  python3 - "$P_METRICS" "$1" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
print(next(l.split()[1] for l in text.splitlines() if l.startswith(sys.argv[2] + " ")))
PY
}
RESULTS="$OUT/ledger.jsonl"
: > "$RESULTS"
for mode in group direct; do
  say "$mode: serving"
  "${TC[@]}" serve --ledger-commit "$mode" --listen "127.0.0.1:$P_RT" --idp-listen "127.0.0.1:$P_IDP" --metrics-listen "127.0.0.1:$P_METRICS" 2>"$OUT/ledger-$mode.log" & RT=$!; PIDS+=($RT)
  wait_port "$P_RT"
  url="http://127.0.0.1:$P_RT/v1/chat/completions"
  rows0=$(counter tenantctl_ledger_rows_total); commits0=$(counter tenantctl_ledger_commits_total)
  "$BIN/gateway-bench" --name "$mode" --url "$url" --concurrency 32 --duration-secs "$SECS" --warmup 100 | tee -a "$RESULTS"
  rows1=$(counter tenantctl_ledger_rows_total); commits1=$(counter tenantctl_ledger_commits_total)
  echo "{\"name\":\"$mode\",\"c32_rows\":$((rows1 - rows0)),\"c32_commits\":$((commits1 - commits0))}" | tee -a "$RESULTS"
  "$BIN/gateway-bench" --name "$mode" --url "$url" --requests "$N" --concurrency 1 | tee -a "$RESULTS"
  kill "$RT"; wait "$RT" 2>/dev/null || true
done
SOCKET="$("${TC[@]}" local status | awk '/socket dir:/ {print $3}')"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
PGRUN=(env)
[ "$(id -u)" = 0 ] && PGRUN=(runuser -u "${TENANTCTL_PG_USER:-postgres}" --)
psql_admin() { "${PGRUN[@]}" "$PG_BIN/psql" -h "$SOCKET" -U tenantctl_admin -d tenantctl -v ON_ERROR_STOP=1 -qAt -c "$1"; }
ROLE="$(psql_admin "SELECT db_role FROM control.tenants WHERE tenant_id = 'bench'")"
# Rounds alternate durable and in-memory (this machine drifts over a minute; pairs taken close
# together compare like with like).
for round in $(seq 1 "$ROUNDS"); do
  for durability in durable memory; do
    if [ "$durability" = memory ]; then
      psql_admin "ALTER ROLE \"$ROLE\" SET synchronous_commit = off" >/dev/null
    else
      psql_admin "ALTER ROLE \"$ROLE\" RESET synchronous_commit" >/dev/null
    fi
    say "round $round: paced $RATE req/s for ${PACED_SECS}s, commits $durability"
    "${TC[@]}" serve --listen "127.0.0.1:$P_RT" --idp-listen "127.0.0.1:$P_IDP" --metrics-listen "127.0.0.1:$P_METRICS" 2>"$OUT/ledger-paced-$durability.log" & RT=$!; PIDS+=($RT)
    wait_port "$P_RT"
    "$BIN/gateway-bench" --name "paced-$durability" --url "http://127.0.0.1:$P_RT/v1/chat/completions" --warmup 200 --rate "$RATE" --duration-secs "$PACED_SECS" | tee -a "$RESULTS"
    kill "$RT"; wait "$RT" 2>/dev/null || true
  done
done
psql_admin "ALTER ROLE \"$ROLE\" RESET synchronous_commit" >/dev/null
"$PG_BIN/pg_test_fsync" -s 2 -f "$STATE/fsync.test" > "$OUT/ledger_fsync.txt" 2>&1 || true
python3 - "$OUT/ledger_fsync.txt" <<'PY' | tee -a "$RESULTS"
import json, re, sys
m = re.search(r"fdatasync\s+([\d.]+) ops/sec\s+(\d+) usecs/op", open(sys.argv[1]).read())
print(json.dumps({"name": "fsync", "fdatasync_us": int(m.group(2)) if m else 0}))
PY
python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def get(name, key, pred=lambda r: True):
    return next(r[key] for r in rows if r["name"] == name and key in r and pred(r))
for m in ("group", "direct"):
    print(f"{m}: c=32 {get(m, 'rps', lambda r: r['concurrency'] == 32):.0f} req/s, "
          f"{get(m, 'c32_rows') / max(1, get(m, 'c32_commits')):.1f} rows a commit; "
          f"c=1 p50 {get(m, 'p50_us', lambda r: r['concurrency'] == 1)} us, "
          f"p99 {get(m, 'p99_us', lambda r: r['concurrency'] == 1)} us")
g = get("group", "rps", lambda r: r["concurrency"] == 32)
d = get("direct", "rps", lambda r: r["concurrency"] == 32)
print(f"group / direct at c=32: {g / d:.2f}x")
durs = [r for r in rows if r["name"] == "paced-durable"]
mems = [r for r in rows if r["name"] == "paced-memory"]
fsync = get("fsync", "fdatasync_us")
print("round | durable p50 / p99 / p99.9 (us) | in-memory p50 / p99 / p99.9 (us) | added p50 | added p99")
for i, (d, m) in enumerate(zip(durs, mems), 1):
    print(f"{i} | {d['p50_us']} / {d['p99_us']} / {d['p999_us']} ({d['errors']} errors) | "
          f"{m['p50_us']} / {m['p99_us']} / {m['p999_us']} ({m['errors']} errors) | "
          f"{d['p50_us'] - m['p50_us']} | {d['p99_us'] - m['p99_us']}")
med = lambda xs: sorted(xs)[len(xs) // 2]
print(f"median added at {durs[0]['rate']} req/s over {len(durs)} pairs: "
      f"p50 +{med([d['p50_us'] - m['p50_us'] for d, m in zip(durs, mems)])} us, "
      f"p99 +{med([d['p99_us'] - m['p99_us'] for d, m in zip(durs, mems)])} us "
      f"(target: the window, the commit ahead, plus two fsyncs: 2 x {fsync} = {2 * fsync} us of fdatasync)")
PY
