#!/usr/bin/env bash
# The API surface's benchmark (issue 12), one command: `bash bench/api.sh`.
#
# One local deployment (durable Postgres), one tenant with ledger rows, the runtime served once, and
# in the same run: requests/s at c=32 (for BENCH_SECS, default 10) and c=1 latency (BENCH_REQUESTS,
# default 2000) of `GET /healthz` (the baseline: no token, no dependency), `GET /v1/me` (a cheap
# authorized read: JWT, tenant, permission, access log) and `GET /v1/usage?limit=50` (a list
# endpoint: 50 ledger rows, totals and budget read through the tenant's handle). Then the audit
# write's price on a privileged change: pgbench runs the same registry update with and without the
# audit append's three statements (lock the chain; read its head and the time (as text: pgbench
# would read the format's colons as variables); insert the event), in
# BENCH_ROUNDS alternating pairs (default 3); and the same for the API's member grant with and
# without its event in the tenant's own chain. `GET /v1/conversations?limit=20` (a page of 20 of
# the caller's 200 conversations) is the paginated list; `PUT /v1/members/{subject}` the audited
# privileged call through HTTP.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SECS="${BENCH_SECS:-10}"
N="${BENCH_REQUESTS:-2000}"
ROUNDS="${BENCH_ROUNDS:-3}"
OUT="${BENCH_OUT:-bench/out}"
export CARGO_TARGET_DIR="${TENANTCTL_BENCH_TARGET:-/var/tmp/tenantctl-bench}"
P_MOCK=19140 P_RT=19142 P_IDP=19144 P_METRICS=19145
mkdir -p "$OUT"
say "building release binaries (target dir $CARGO_TARGET_DIR)"
cargo build --release --locked -p cli --bin tenantctl -p tests --bin mock-provider --bin gateway-bench >&2
BIN="$CARGO_TARGET_DIR/release"
bench_state api "$BIN"
"$BIN/mock-provider" --listen "127.0.0.1:$P_MOCK" --words 16 >/dev/null & PIDS+=($!)
wait_port "$P_MOCK"
bench_openai_deployment "$STATE" "$BIN" "$P_MOCK"
export BENCH_TOKEN="$("${TC[@]}" token --tenant bench --ttl 86400 --scope "me:read models:read chat:write usage:read conversations:read conversations:write members:read members:write")"
"${TC[@]}" serve --listen "127.0.0.1:$P_RT" --idp-listen "127.0.0.1:$P_IDP" --metrics-listen "127.0.0.1:$P_METRICS" 2>/dev/null & PIDS+=($!)
wait_port "$P_RT"
base="http://127.0.0.1:$P_RT"
say "writing 200 ledger rows (calls through the runtime) for the list endpoint"
"$BIN/gateway-bench" --name seed --url "$base/v1/chat/completions" --requests 200 --warmup 0 >/dev/null
say "creating 200 conversations for the paginated list"
for i in $(seq 1 200); do
  curl -sf -o /dev/null -H "authorization: Bearer $BENCH_TOKEN" -H 'content-type: application/json' \
    -d "{\"title\": \"conversation $i\", \"model\": \"gpt-4o-mini\"}" "$base/v1/conversations"
done
RESULTS="$OUT/api.jsonl"
: > "$RESULTS"
for target in "healthz /healthz" "me /v1/me" "usage /v1/usage?limit=50" "conversations /v1/conversations?limit=20"; do
  set -- $target
  say "$1: c=32 for ${SECS}s, then c=1"
  "$BIN/gateway-bench" --name "$1" --method GET --url "$base$2" --concurrency 32 --duration-secs "$SECS" --warmup 100 | tee -a "$RESULTS"
  "$BIN/gateway-bench" --name "$1" --method GET --url "$base$2" --requests "$N" --concurrency 1 | tee -a "$RESULTS"
done
# A privileged call through the API: each grant writes its event to the tenant's chain in the
# grant's transaction (c=1: one durable commit each).
say "PUT /v1/members/{subject}: c=1"
"$BIN/gateway-bench" --name grant --method PUT --body '{"roles": ["tenant_member"]}' --url "$base/v1/members/bench-member" --requests "$N" --concurrency 1 --warmup 20 | tee -a "$RESULTS"

SOCKET="$("${TC[@]}" local status | awk '/socket dir:/ {print $3}')"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
PGRUN=(env)
[ "$(id -u)" = 0 ] && PGRUN=(runuser -u "${TENANTCTL_PG_USER:-postgres}" --)
DB=tenantctl
cat > "$STATE/plain.sql" <<'SQL'
BEGIN;
UPDATE control.tenants SET updated_at = now() WHERE tenant_id = 'bench';
COMMIT;
SQL
cat > "$STATE/audited.sql" <<'SQL'
BEGIN;
UPDATE control.tenants SET updated_at = now() WHERE tenant_id = 'bench';
SELECT pg_advisory_xact_lock(hashtextextended('tenantctl.audit:' || 'bench', 0));
SELECT h.seq, h.hash, (clock_timestamp() AT TIME ZONE 'UTC')::text FROM (SELECT 1) one
  LEFT JOIN LATERAL (SELECT seq, hash FROM control.audit_events WHERE tenant_id = 'bench' ORDER BY seq DESC LIMIT 1) h ON true;
INSERT INTO control.audit_events (tenant_id, seq, at, actor, action, target, outcome, request_id, detail, prev_hash, hash, v)
SELECT 'bench', coalesce(max(seq), 0) + 1, clock_timestamp(), 'tenantctl-bench', 'suspend', 'tenant/bench', 'succeeded', '', 'bench',
       repeat('0', 64), md5(random()::text) || md5(random()::text), 1
  FROM control.audit_events WHERE tenant_id = 'bench';
COMMIT;
SQL
# The API's privileged call: a member grant in the tenant's own schema, with and without its
# event in the tenant's chain (the three statements `service::audit_trail::append` sends).
cat > "$STATE/grant-plain.sql" <<'SQL'
BEGIN;
SET LOCAL search_path = t_bench;
INSERT INTO members (tenant_id, id, subject, roles, granted_by) VALUES ('bench', gen_random_uuid(), 'pgbench-member', '{tenant_member}', 'bench')
  ON CONFLICT (tenant_id, subject) DO UPDATE SET roles = EXCLUDED.roles, updated_at = now();
COMMIT;
SQL
cat > "$STATE/grant-audited.sql" <<'SQL'
BEGIN;
SET LOCAL search_path = t_bench;
INSERT INTO members (tenant_id, id, subject, roles, granted_by) VALUES ('bench', gen_random_uuid(), 'pgbench-member', '{tenant_member}', 'bench')
  ON CONFLICT (tenant_id, subject) DO UPDATE SET roles = EXCLUDED.roles, updated_at = now();
SELECT pg_advisory_xact_lock(hashtextextended('tenantctl.tenant-audit:' || 'bench', 0));
SELECT h.seq, h.hash, (clock_timestamp() AT TIME ZONE 'UTC')::text FROM (SELECT 1) one
  LEFT JOIN LATERAL (SELECT seq, hash FROM audit_events WHERE tenant_id = 'bench' ORDER BY seq DESC LIMIT 1) h ON true;
INSERT INTO audit_events (tenant_id, id, seq, at, actor, action, target, outcome, request_id, detail, prev_hash, hash, v)
SELECT 'bench', gen_random_uuid(), coalesce(max(seq), 0) + 1, clock_timestamp(), 'bench', 'members.set_roles', 'member/pgbench-member', 'succeeded', '', 'roles tenant_member',
       repeat('0', 64), md5(random()::text) || md5(random()::text), 1
  FROM audit_events WHERE tenant_id = 'bench';
COMMIT;
SQL
chmod 644 "$STATE"/*.sql
pgb() {
  "${PGRUN[@]}" "$PG_BIN/pgbench" -n -h "$SOCKET" -U tenantctl_admin -M prepared -f "$STATE/$1.sql" -t 1000 -c 1 "$DB" > "$STATE/pgbench-$1.txt" 2>&1 || true
  awk '/latency average/ {print $4}' "$STATE/pgbench-$1.txt"
}
for round in $(seq 1 "$ROUNDS"); do
  for mode in plain audited grant-plain grant-audited; do
    ms="$(pgb "$mode")"
    [ -n "$ms" ] || { say "pgbench failed for $mode:"; grep -m3 -i "error" "$STATE/pgbench-$mode.txt" >&2; exit 1; }
    echo "{\"name\":\"privileged-$mode\",\"round\":$round,\"latency_ms\":$ms}" | tee -a "$RESULTS"
  done
done
python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
get = lambda n, c, k: next((r[k] for r in rows if r["name"] == n and r.get("concurrency") == c and k in r), None)
print()
print("| endpoint | c=32 req/s | vs /healthz | c=1 p50 (µs) | c=1 p99 (µs) |")
print("|---|---:|---:|---:|---:|")
base = get("healthz", 32, "rps") or 1
for n, label in [("healthz", "GET /healthz"), ("me", "GET /v1/me"), ("usage", "GET /v1/usage?limit=50"), ("conversations", "GET /v1/conversations?limit=20 (of 200)")]:
    print(f"| {label} | {get(n, 32, 'rps'):.0f} | {get(n, 32, 'rps') / base:.2f}x | {get(n, 1, 'p50_us')} | {get(n, 1, 'p99_us')} |")
print(f"| PUT /v1/members/{{subject}} (audited) | | | {get('grant', 1, 'p50_us')} | {get('grant', 1, 'p99_us')} |")
plain = [r["latency_ms"] for r in rows if r["name"] == "privileged-plain"]
audited = [r["latency_ms"] for r in rows if r["name"] == "privileged-audited"]
med = lambda xs: sorted(xs)[len(xs) // 2]
print()
print(f"- a privileged change (one registry update, committed durably): {med(plain) * 1000:.0f} µs; with its audit event: {med(audited) * 1000:.0f} µs; the audit write adds {(med(audited) - med(plain)) * 1000:.0f} µs ({med(audited) / med(plain):.2f}x), medians of {len(plain)} alternating pairs")
gp = [r["latency_ms"] for r in rows if r["name"] == "privileged-grant-plain"]
ga = [r["latency_ms"] for r in rows if r["name"] == "privileged-grant-audited"]
print(f"- the API's member grant (one upsert in the tenant's schema, committed durably): {med(gp) * 1000:.0f} µs; with its event in the tenant's chain: {med(ga) * 1000:.0f} µs; the audit write adds {(med(ga) - med(gp)) * 1000:.0f} µs ({med(ga) / med(gp):.2f}x)")
failed = [r for r in rows if r.get("errors")]
for r in failed:
    print(f"- **errors**: {r['name']} c={r.get('concurrency')}: {r['errors']} failed requests; these figures do not count")
sys.exit(1 if failed else 0)
PY
