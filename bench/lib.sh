# Shared by the bench scripts (sourced): a local deployment with one benchmark tenant.
#
# bench_deployment STATE BIN MODELS: starts the local cluster in STATE and applies tenant `bench`
# (schema tier) whose `models:` block is MODELS (YAML, indented two spaces), with its budget and
# rate limits set high so a benchmark measures the path, not the limit. Sets TC, the tenantctl
# command line for STATE.
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
