#!/usr/bin/env bash
# The AWS target at scale against a local moto (issue 5):
#   apply of N tenants (default 100) at parallelism 1, 8 and 32: wall time, AWS calls per tenant and
#     how busy moto was, as ratios against parallelism 1 in the same run; then a re-apply (nothing to
#     change). Twice: with moto as is (stacks complete instantly, so moto's one Python process is the
#     bottleneck), and with stacks taking 2 s to settle (tests/clients/moto_server.py), which is what
#     parallelism is for: on AWS a tenant stack takes minutes;
#   plan of M manifests (default 1000): all new (render only + one listing), then all deployed and
#     unchanged (digest short-circuit), then all changed (one change set each), against
#     `tenantctl render` of the same manifests as the baseline.
# The control plane is a durable local cluster reached by URL (a stand-in for the platform's RDS).
# moto is one Python process: absolute times say more about moto than about AWS; the ratios and the
# calls per tenant are the point. Prints Markdown rows.
# Usage: bash bench/aws.sh [APPLY_TENANTS] [PLAN_MANIFESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
n_apply="${1:-100}"
n_plan="${2:-1000}"
cargo build --quiet -p cli --bin tenantctl
bin="${CARGO_TARGET_DIR:-target}/debug/tenantctl"

work=$(mktemp -d /tmp/tc-bench-aws.XXXXXX)
chmod o+x "$work"
state="$work/state"
moto_pid=""
cleanup() {
  [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null || true
  "$bin" --state-dir "$state" local stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
"$bin" --state-dir "$state" -q local start

# An admin with a password and only CREATEROLE + CREATEDB (as a managed database's master user).
password=$(openssl rand -hex 24)
psql -q -h "$state/pg/run" -p 5432 -U tenantctl_admin -d postgres \
  -c "CREATE ROLE bench_admin LOGIN CREATEROLE CREATEDB" >/dev/null
psql -q -h "$state/pg/run" -p 5432 -U tenantctl_admin -d postgres -v ON_ERROR_STOP=1 \
  -c "ALTER ROLE bench_admin PASSWORD '$password'" >/dev/null
socket=$(python3 -c "import urllib.parse,sys;print(urllib.parse.quote(sys.argv[1], safe=''))" "$state/pg/run")

start_moto() { # [stack operation seconds]: (re)starts moto, sets AWS_ENDPOINT_URL and moto_pid
  [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null && wait "$moto_pid" 2>/dev/null || true
  port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  MOTO_STACK_OPERATION_SECONDS="${1:-0}" python3 tests/clients/moto_server.py -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
  moto_pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
  python3 tests/clients/moto_fixture.py "$AWS_ENDPOINT_URL" upload-code tenantctl-code runtime.zip
}
moto_cpu_ms() { # CPU time moto has used so far (user + system), in ms
  awk -v hz="$(getconf CLK_TCK)" '{print int(($14 + $15) * 1000 / hz)}' "/proc/$moto_pid/stat"
}
export AWS_REGION=eu-west-1 AWS_DEFAULT_REGION=eu-west-1 \
  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing TENANTCTL_POLL_MAX_MS=1000
# moto lacks Cost Explorer; point it at a port nothing listens on: activation fails, is reported as a
# warning, and costs a few calls per run (it is not what is measured here).
export AWS_ENDPOINT_URL_COST_EXPLORER="http://127.0.0.1:9"

write() { # write manifests 1..$1 with ids <$4>00001... into directory $2, optional sed expression $3
  mkdir -p "$2"
  for i in $(seq 1 "$1"); do
    sed -e "s/^id: acme$/id: ${4:-t}$(printf %05d "$i")/" -e "${3:-s/x/x/}" tenants/acme.yaml > "$2/t$i.yaml"
  done
}
now() { date +%s%N; }
run() { # env namespace parallelism command dir -> JSON on stdout
  TENANTCTL_DATABASE_URL="postgres://bench_admin:$password@$socket:5432/$2" \
    "$bin" --state-dir "$state" --target aws --env "$1" --namespace "$2" --parallelism "$3" \
    --lambda-code s3://tenantctl-code/runtime.zip --arch x86-64 --no-progress --output json "$4" "$5" 2>/dev/null
}
calls() { # total on stdout; per operation on stderr (BENCH_VERBOSE=1)
  python3 -c 'import json,os,sys;d=json.load(sys.stdin);print(d.get("aws_calls",0));os.environ.get("BENCH_VERBOSE") and print(d.get("aws_calls_by_operation"),file=sys.stderr)'
}

# Each run gets its own environment, namespace and tenant ids (secret names are per tenant id, and
# one account holds one environment's tenants in production).
apply_series() { # label, stack operation seconds
  start_moto "$2"
  declare -A ms
  for p in 1 8 32; do
    write "$n_apply" "$work/apply-$2-$p" "" "s$2-p$p-"
    local cpu0 start end c
    cpu0=$(moto_cpu_ms)
    start=$(now)
    c=$(run "a$2x$p" "bench$2x$p" "$p" apply "$work/apply-$2-$p" | calls)
    end=$(now)
    ms[$p]=$(( (end - start) / 1000000 ))
    local busy=$(( ($(moto_cpu_ms) - cpu0) * 100 / (ms[$p] > 0 ? ms[$p] : 1) ))
    echo "| $1 | apply $n_apply, parallelism $p | $(( ms[$p] / 1000 )).$(( ms[$p] % 1000 / 100 )) s | $(python3 -c "print(f'{$c/$n_apply:.1f}')") | ${busy}% | $(python3 -c "print(f'{${ms[1]}/${ms[$p]}:.2f}x')") |"
  done
  local start end c
  start=$(now)
  c=$(run "a$2x8" "bench$2x8" 8 apply "$work/apply-$2-8" | calls)
  end=$(now)
  echo "| $1 | re-apply $n_apply unchanged, parallelism 8 | $(( (end - start) / 1000000 )) ms | $(python3 -c "print(f'{$c/$n_apply:.2f}')") | | |"
}
echo "| moto | run | wall | AWS calls/tenant | moto CPU busy | speed-up vs parallelism 1 |"
echo "|---|---|---|---|---|---|"
apply_series "as is (instant stacks)" 0
apply_series "stacks take 2 s, as on AWS (minutes there)" 2

start_moto 0
write "$n_plan" "$work/plan" "" "plan-"
start=$(now)
"$bin" --state-dir "$state" --env p --output json render "$work/plan" --out "$work/rendered" >/dev/null
end=$(now)
base=$(( (end - start) / 1000000 ))
echo
echo "| run | wall | AWS calls/tenant | vs render |"
echo "|---|---|---|---|"
echo "| render $n_plan manifests (baseline) | $base ms | 0 | 1.00x |"
plan_row() { # label env namespace dir
  start=$(now)
  c=$(run "$2" "$3" 8 plan "$4" | calls || true)
  end=$(now)
  local t=$(( (end - start) / 1000000 ))
  echo "| plan $n_plan manifests, $1 | $t ms | $(python3 -c "print(f'{$c/$n_plan:.2f}')") | $(python3 -c "print(f'{$t/max($base,1):.2f}x')") |"
}
plan_row "all new" p benchplan "$work/plan"
run p benchplan 32 apply "$work/plan" >/dev/null || true
plan_row "all deployed, unchanged" p benchplan "$work/plan"
write "$n_plan" "$work/plan-changed" "s/usage_days: 400/usage_days: 800/" "plan-"
plan_row "all changed (a change set each)" p benchplan "$work/plan-changed"
