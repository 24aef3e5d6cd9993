#!/usr/bin/env bash
# The web console's server time (issue 14's benchmark), one command: `bash bench/console.sh`.
#
# A local deployment (durable Postgres) with BENCH_TENANTS pool tenants (default 100) and a year of
# ledger: BENCH_ROWS_PER_DAY rows a tenant a day (default 24) from the first day of the month twelve
# months ago to today, 8 models and 20 subjects each, written in one statement (the ledger's trigger
# keeps its daily rollups as it does for the runtime's writes). A tenant admin of `t001` and a
# platform operator sign in through the console's real OpenID Connect flow (curl, cookie jar), then
# each page is requested BENCH_REQUESTS times (default 30, one at a time) and so is the API call the
# page makes (the baseline, with the same caller's bearer token, same run): median and p95 of the
# whole request on loopback, and the page's median against its API call's.
# Target: every page under 200 ms with a year of ledger for 100 tenants.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
TENANTS="${BENCH_TENANTS:-100}"
PER_DAY="${BENCH_ROWS_PER_DAY:-24}"
N="${BENCH_REQUESTS:-30}"
OUT="${BENCH_OUT:-bench/out}"
export CARGO_TARGET_DIR="${TENANTCTL_BENCH_TARGET:-/var/tmp/tenantctl-bench}"
P_RT=19162 P_IDP=19164 P_METRICS=19165
mkdir -p "$OUT"
say "building the release binary (target dir $CARGO_TARGET_DIR)"
cargo build --release --locked -p cli --bin tenantctl >&2
BIN="$CARGO_TARGET_DIR/release"
bench_state console "$BIN"
TC=("$BIN/tenantctl" --state-dir "$STATE" --no-progress -q)
"${TC[@]}" local start >&2
mkdir -p "$STATE/tenants"
for i in $(seq 1 "$TENANTS"); do
  id=$(printf 't%03d' "$i")
  cat > "$STATE/tenants/$id.yaml" <<YAML
version: 1
id: $id
display_name: Tenant $id
tier: pool
models:
  providers:
    mock: [mock-small, mock-large]
  default: mock-small
budget:
  monthly_usd: "1000000"
tags:
  cost-center: cc-$(( i % 7 ))
retention:
  usage_days: 400
YAML
done
say "applying $TENANTS pool tenants"
start=$(date +%s)
"${TC[@]}" apply "$STATE/tenants" >&2
say "applied in $(( $(date +%s) - start )) s"
PSQL=(psql -X -q -t -A -h "$STATE/pg/run" -p 5432 -U tenantctl_admin -d tenantctl)
FIRST="$(date -u -d "$(date -u +%Y-%m-01) -12 months" +%Y-%m-%d)"
TODAY="$(date -u +%Y-%m-%d)"
DAYS=$(( ( $(date -u -d "$TODAY" +%s) - $(date -u -d "$FIRST" +%s) ) / 86400 + 1 ))
ROWS=$(( TENANTS * DAYS * PER_DAY ))
say "writing $ROWS ledger rows ($TENANTS tenants x $DAYS days x $PER_DAY) from $FIRST"
start=$(date +%s)
# The pool is fenced even for its owner: the maintenance policy lets the migrator (which the admin
# may act as) write one tenant's rows at a time, with the transaction's tenant set to it.
"${PSQL[@]}" <<SQL
SET synchronous_commit = off;
SELECT pool.usage_ledger_partitions('$FIRST', 14);
SET ROLE tenantctl_migrator;
DO \$seed\$
DECLARE
    tid text;
BEGIN
    FOR t IN 1 .. $TENANTS LOOP
        tid := 't' || lpad(t::text, 3, '0');
        PERFORM set_config('app.tenant_id', tid, true);
        INSERT INTO pool.usage_ledger (id, tenant_id, request_id, subject, provider, model,
            input_tokens, output_tokens, cost_micro_usd, price_book_version, created_at)
        SELECT gen_random_uuid(), tid, gen_random_uuid(), 'user-' || (r % 20), 'mock',
               'model-' || (r % 8), 100 + r % 900, 10 + r % 500, 1000 + (r * t) % 99997, '2026-12-01',
               '$FIRST'::timestamptz + d * interval '1 day' + (r * 3571 % 86400) * interval '1 second'
          FROM generate_series(0, $DAYS - 1) AS d, generate_series(1, $PER_DAY) AS r
         WHERE '$FIRST'::timestamptz + d * interval '1 day' <= now();
    END LOOP;
END
\$seed\$;
RESET ROLE;
VACUUM ANALYZE pool.usage_ledger;
SQL
say "written in $(( $(date +%s) - start )) s"
"${TC[@]}" status >/dev/null || true   # records each tenant's check (the tenants page shows it)
"${TC[@]}" serve --listen "127.0.0.1:$P_RT" --idp-listen "127.0.0.1:$P_IDP" --metrics-listen "127.0.0.1:$P_METRICS" 2>"$OUT/console-serve.log" & PIDS+=($!)
wait_port "$P_RT"
base="http://127.0.0.1:$P_RT" idp="http://127.0.0.1:$P_IDP"

sign_in() { # JAR LOGIN-QUERY FORM-EXTRA: the console's own flow, as a browser would follow it
  local jar=$1 to query back
  to=$(curl -sf -c "$jar" -b "$jar" -o /dev/null -w '%{redirect_url}' "$base/console/login?$2") \
    || { say "the console's login failed ($2)"; exit 1; }
  query=${to#*\?}
  back=$(curl -sf -o /dev/null -w '%{redirect_url}' --data "$query&$3" "$idp/authorize") \
    || { say "the identity provider's login failed ($3)"; exit 1; }
  curl -sf -c "$jar" -b "$jar" -o /dev/null "$back" || { say "the callback failed: $back"; exit 1; }
  grep -q tenantctl_console "$jar" || { say "no session after signing in ($2)"; exit 1; }
}
ADMIN_JAR="$STATE/admin.jar" OP_JAR="$STATE/op.jar"
sign_in "$ADMIN_JAR" "tenant=t001" "tenant=t001&subject=bench-admin&role=tenant_admin"
sign_in "$OP_JAR" "staff=1" "subject=bench-op&role=platform_operator"
ADMIN_TOKEN="$("${TC[@]}" token --tenant t001 --sub bench-admin --scope "$(echo me:read models:read usage:read members:read audit:read policy:read credentials:read)")"
OP_TOKEN="$("${TC[@]}" token --operator --sub bench-op)"
# The longest range a report covers (366 days): the twelve months ending this one.
YEAR_FROM="$(date -u -d "$(date -u +%Y-%m-01) -11 months" +%Y-%m)" MONTH="${TODAY:0:7}"

measure() { # NAME CURL-ARGS...: N requests, one at a time; prints NAME and each time in microseconds
  local name=$1; shift
  local status
  status=$(curl -s -o /dev/null -w '%{http_code}' "$@")   # warm, and it must answer 200
  [ "$status" = 200 ] || { say "$name answered $status: ${*: -1}"; exit 1; }
  for _ in $(seq 1 "$N"); do
    echo "$name $(curl -sf -o /dev/null -w '%{time_total}' "$@" | awk '{ printf "%d", $1 * 1000000 }')"
  done
}
page() { # NAME JAR PATH API-TOKEN API-PATH
  measure "page:$1" -b "$2" "$base$3"
  measure "api:$1" -H "Authorization: Bearer $4" "$base$5"
}
{
  page me "$ADMIN_JAR" /console/me "$ADMIN_TOKEN" /v1/me/usage
  page usage-month "$ADMIN_JAR" /console/usage "$ADMIN_TOKEN" /v1/usage/daily
  page usage-year "$ADMIN_JAR" "/console/usage?from=$YEAR_FROM&to=$MONTH" "$ADMIN_TOKEN" "/v1/usage/daily?from=$YEAR_FROM&to=$MONTH"
  page finance "$ADMIN_JAR" /console/finance "$ADMIN_TOKEN" "/v1/usage/models?from=$MONTH&to=$MONTH"
  page members "$ADMIN_JAR" /console/members "$ADMIN_TOKEN" "/v1/members?limit=200"
  page audit "$ADMIN_JAR" /console/audit "$ADMIN_TOKEN" "/v1/audit/events?limit=50"
  page policy "$ADMIN_JAR" /console/policy "$ADMIN_TOKEN" /v1/policy
  page tenants "$OP_JAR" /console/platform "$OP_TOKEN" /v1/platform/tenants
  page spend-month "$OP_JAR" /console/platform/spend "$OP_TOKEN" /v1/platform/spend
  page spend-year "$OP_JAR" "/console/platform/spend?from=$YEAR_FROM&to=$MONTH" "$OP_TOKEN" "/v1/platform/usage?from=$YEAR_FROM&to=$MONTH"
  page reconciliations "$OP_JAR" /console/platform/reconciliations "$OP_TOKEN" /v1/platform/reconciliations
  page prices "$OP_JAR" /console/platform/prices "$OP_TOKEN" /v1/platform/prices
} > "$OUT/console.txt"
python3 - "$OUT/console.txt" <<'PY' | tee "$OUT/console-summary.txt"
import sys, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, us = line.split()
    runs[name].append(int(us))
def q(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(p * len(v)))]
print("| page | page median / p95 (ms) | its API call median / p95 (ms) | page / API |")
print("|---|---:|---:|---:|")
for name in [k[5:] for k in runs if k.startswith("page:")]:
    p, a = runs["page:" + name], runs["api:" + name]
    print(f"| {name} | {q(p, .5) / 1000:.1f} / {q(p, .95) / 1000:.1f} | {q(a, .5) / 1000:.1f} / {q(a, .95) / 1000:.1f} | {q(p, .5) / max(q(a, .5), 1):.2f}x |")
PY
