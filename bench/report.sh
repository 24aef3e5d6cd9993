#!/usr/bin/env bash
# The month's usage report at scale (issue 11's benchmark), one command: `bash bench/report.sh`.
#
# A local deployment (durable Postgres) with one tenant; BENCH_ROWS ledger rows (default 10 million)
# spread over one month, 8 models, 50 subjects, written in one statement as the ledger's trigger
# would see them; then, timed, three runs each of:
#   baseline   `SELECT count(*)` over the month's rows (a plain scan of the same rows, same cluster)
#   report     `tenantctl usage report --month` (per tenant and model, exact sums)
#   api        `GET /v1/usage/report?group_by=model` for the month (the tenant's own report)
#   api-day    `GET /v1/usage/report` (by day, from the daily totals)
# Target: the month's report under 2 s at 10 million rows.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROWS="${BENCH_ROWS:-10000000}"
OUT="${BENCH_OUT:-bench/out}"
export CARGO_TARGET_DIR="${TENANTCTL_BENCH_TARGET:-/var/tmp/tenantctl-bench}"
P_RT=19112 P_IDP=19114 P_METRICS=19115
mkdir -p "$OUT"

say "building the release binary (target dir $CARGO_TARGET_DIR)"
cargo build --release --locked -p cli --bin tenantctl >&2
BIN="$CARGO_TARGET_DIR/release"
bench_state report "$BIN"
bench_deployment "$STATE" "$BIN" "  providers:
    mock: [mock-small]
  default: mock-small"
MONTH="$(date -u -d 'last month' +%Y-%m)"
FIRST="$MONTH-01"
PSQL=(psql -X -q -t -A -h "$STATE/pg/run" -p 5432 -U tenantctl_admin -d tenantctl)
say "writing $ROWS ledger rows into $MONTH"
start=$(date +%s.%N)
"${PSQL[@]}" <<SQL
SET synchronous_commit = off;
-- The month's ledger partition, as the deployment would have made it when that month was current.
SELECT t_bench.usage_ledger_partitions('$FIRST', 1);
INSERT INTO t_bench.usage_ledger (id, tenant_id, request_id, subject, provider, model, input_tokens,
    output_tokens, cost_micro_usd, price_book_version, created_at)
SELECT gen_random_uuid(), 'bench', gen_random_uuid(), 'user-' || (i % 50), 'mock',
       'model-' || (i % 8), 100 + i % 900, 10 + i % 500, 1 + i % 997, '2026-12-01',
       '$FIRST'::timestamptz + (i % (28 * 86400)) * interval '1 second'
  FROM generate_series(1, $ROWS) AS i;
VACUUM ANALYZE t_bench.usage_ledger;
SQL
say "written in $(echo "$(date +%s.%N) - $start" | bc) s"
"${TC[@]}" serve --listen "127.0.0.1:$P_RT" --idp-listen "127.0.0.1:$P_IDP" --metrics-listen "127.0.0.1:$P_METRICS" 2>"$OUT/report-serve.log" & RT_PID=$!; PIDS+=($RT_PID)
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$P_RT") 2>/dev/null && break; sleep 0.1; done
TOKEN="$("${TC[@]}" token --tenant bench --scope usage:read)"

time_it() { # name, command...: three runs, each a line of milliseconds
  local name=$1; shift
  for run in 1 2 3; do
    local t0 t1
    t0=$(date +%s%N)
    "$@" >/dev/null
    t1=$(date +%s%N)
    echo "$name $(( (t1 - t0) / 1000000 ))"
  done
}
{
  time_it baseline "${PSQL[@]}" -c "SELECT count(*) FROM t_bench.usage_ledger WHERE created_at >= '$FIRST' AND created_at < '$FIRST'::date + interval '1 month'"
  time_it report "${TC[@]}" usage report --month "$MONTH" --format json
  time_it api curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$P_RT/v1/usage/report?from=$MONTH&to=$MONTH&group_by=model"
  time_it api-day curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$P_RT/v1/usage/report?from=$MONTH&to=$MONTH"
} | tee "$OUT/report.txt"
total=$("${TC[@]}" usage report --month "$MONTH" --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["totals"]["requests"])')
say "the report counted $total requests (of $ROWS written)"
[ "$total" = "$ROWS" ] || { say "the report's total is wrong"; exit 1; }
awk '{ s[$1] = s[$1] " " $2 } END { for (k in s) print k ":" s[k] " ms" }' "$OUT/report.txt" >&2
