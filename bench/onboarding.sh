#!/usr/bin/env bash
# Onboarding cost per tenant as the deployment grows (issue 4): for one tier, time batches of 10 tenants
# onboarded at tenant 1, 1,000 and 5,000 (durable local cluster, one `tenantctl apply` per batch, so
# each batch also pays one observe/plan pass over the whole registry; a CHECKPOINT precedes each timed
# batch). Prints a Markdown row.
# Usage: bash bench/onboarding.sh schema|pool|dedicated [MARKS...]   (default marks: 1 1000 5000)
set -euo pipefail
cd "$(dirname "$0")/.."
tier="${1:?tier: schema, pool or dedicated}"; shift
marks=("${@:-1 1000 5000}"); read -r -a marks <<< "${marks[*]}"
batch=10
cargo build --quiet -p cli --bin tenantctl
bin="${CARGO_TARGET_DIR:-target}/debug/tenantctl"
state=$(mktemp -d /tmp/tc-bench.XXXXXX)
trap '"$bin" --state-dir "$state" local stop >/dev/null 2>&1 || true; rm -rf "$state"' EXIT
"$bin" --state-dir "$state" -q local start
work=$(mktemp -d /tmp/tc-bench-m.XXXXXX)
trap '"$bin" --state-dir "$state" local stop >/dev/null 2>&1 || true; rm -rf "$state" "$work"' EXIT

write() { # write manifests $1..$2 into directory $3
  mkdir -p "$3"
  for i in $(seq "$1" "$2"); do
    sed -e "s/^id: acme$/id: b${i}x/" -e "s/^tier: schema$/tier: $tier/" tenants/acme.yaml > "$3/b${i}x.yaml"
  done
}
apply_dir() { "$bin" --state-dir "$state" -q --no-progress apply "$1" > /dev/null; }

done_so_far=0
row="| $tier |"
for mark in "${marks[@]}"; do
  if (( mark - 1 > done_so_far )); then
    write $((done_so_far + 1)) $((mark - 1)) "$work/bulk-$mark"
    apply_dir "$work/bulk-$mark"
    done_so_far=$((mark - 1))
  fi
  write "$mark" $((mark + batch - 1)) "$work/batch-$mark"
  # Flush what the bulk load wrote, so the timed batch does not pay for an earlier batch's checkpoint.
  psql -q -h "$state/pg/run" -p 5432 -U tenantctl_admin -d postgres -c CHECKPOINT >/dev/null
  start=$(date +%s%N)
  apply_dir "$work/batch-$mark"
  end=$(date +%s%N)
  done_so_far=$((mark + batch - 1))
  per=$(( (end - start) / batch / 1000000 ))
  row="$row tenant $mark: ${per} ms |"
  eval "ms_$mark=$per"
done
first="ms_${marks[0]}"; last="ms_${marks[-1]}"
ratio=$(python3 -c "print(f'{${!last}/max(${!first},1):.2f}')")
echo "$row ${ratio}x |"
