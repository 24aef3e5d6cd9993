# Shared by the bench scripts (sourced): messages, a state directory cleaned up on exit, waiting for
# a port, and a local deployment with one benchmark tenant.
#
# say MESSAGE...: to stderr, prefixed `bench:`.
# bench_state NAME BIN: makes STATE (a fresh directory under /tmp); on exit every pid in PIDS is
# killed and the local cluster in STATE (started by BIN's tenantctl) is stopped and removed.
# wait_port PORT: waits up to 30 s for something to listen on 127.0.0.1:PORT, else exits.
# bench_openai_deployment STATE BIN PORT: `bench_deployment` with tenant `bench` on `gpt-4o-mini`
# through the mock provider on PORT (OpenAI wire format), with a generated provider key.
#
# bench_deployment STATE BIN MODELS: starts the local cluster in STATE and applies tenant `bench`
# (schema tier) whose `models:` block is MODELS (YAML, indented two spaces), with its budgets (the
# tenant's and each subject's, both enforced) and rate limits set high so a benchmark measures the
# path, not the limit. Sets TC, the tenantctl
# command line for STATE.

# The Python tools (moto, the SDKs) are in the tests' virtual environment (scripts/test-prereqs.sh).
PY_VENV="${TENANTCTL_PY_VENV:-/var/tmp/tenantctl-py}"
if [ -x "$PY_VENV/bin/python3" ]; then export PATH="$PY_VENV/bin:$PATH"; fi

bench_deployment() {
  local state=$1 bin=$2 models=$3
  TC=("$bin/tenantctl" --state-dir "$state" --no-progress -q)
  "${TC[@]}" local start >&2
  mkdir -p "$state/tenants"
  cat > "$state/tenants/bench.yaml" <<YAML
version: 1
id: bench
display_name: Benchmark tenant
tier: schema
models:
$models
budget:
  monthly_usd: "1000000"
  per_subject_monthly_usd: "1000000"
# The limits are enforced; set high so the benchmark measures the path, not the limit.
rate_limits:
  requests_per_minute: 1000000
  tokens_per_minute: 1000000000
tags:
  cost-center: bench
retention:
  usage_days: 400
YAML
  "${TC[@]}" apply "$state/tenants" >&2
}

say() { printf 'bench: %s\n' "$*" >&2; }

bench_state() {
  STATE="$(mktemp -d "/tmp/tenantctl-$1-XXXXXX")"
  chmod 755 "$STATE"
  BENCH_BIN=$2
  PIDS=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$BENCH_BIN/tenantctl" --state-dir "$STATE" --no-progress local stop >/dev/null 2>&1 || true
  rm -rf "$STATE"
}

wait_port() {
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  say "nothing listens on port $1"; exit 1
}

bench_openai_deployment() {
  bench_deployment "$1" "$2" "  providers:
    openai:
      models: [gpt-4o-mini]
      endpoint: { base_url: \"http://127.0.0.1:$3/v1\", region: local }
  default: gpt-4o-mini"
  head -c 24 /dev/urandom | base64 | "${TC[@]}" secret put bench providers/openai >/dev/null
}
