#!/usr/bin/env bash
# Identity-layer benchmarks (issue 3), with their baseline measured in the same run:
#   openssl speed rsa2048 (one core)  vs  our cold RS256 verify, warm cached verify, and the auth layer
#   on a realistic token mix. Prints a Markdown table for docs/benchmarks.md.
# Usage: bash bench/auth.sh        (takes about a minute)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v openssl >/dev/null || { echo "openssl is needed for the baseline (apt-get install openssl)" >&2; exit 1; }

target_dir="${CARGO_TARGET_DIR:-target}"
openssl_out=$(openssl speed -seconds 5 rsa2048 2>/dev/null | grep -E '^rsa *2048')
# "rsa 2048 bits 0.000652s 0.000019s 1533.9 52117.0": the last column is verifications per second.
openssl_verify_per_s=$(echo "$openssl_out" | awk '{print $NF}')

cargo bench --quiet -p runtime --bench auth -- --warm-up-time 2 --measurement-time 6 >&2

ns() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['mean']['point_estimate'])" "$target_dir/criterion/$1/new/estimates.json"; }
cold=$(ns verify/cold_rs256)
warm=$(ns verify/warm_cached)
mix=$(ns auth_layer/mix)

python3 - "$openssl_verify_per_s" "$cold" "$warm" "$mix" <<'PY'
import sys
openssl_per_s, cold_ns, warm_ns, mix_ns = map(float, sys.argv[1:])
openssl_us = 1e6 / openssl_per_s
print(f"| measurement | per operation | ratio |")
print(f"| --- | --- | --- |")
print(f"| `openssl speed rsa2048` verify (baseline) | {openssl_us:.2f} µs | 1.00 |")
print(f"| cold RS256 verify (decode + signature + claims) | {cold_ns/1000:.2f} µs | {cold_ns/1000/openssl_us:.2f}x openssl |")
print(f"| warm verify (cache hit, tenant binding) | {warm_ns/1000:.2f} µs | {warm_ns/cold_ns:.3f}x cold |")
print(f"| auth layer, token mix, one core | {mix_ns/200/1000:.2f} µs/request = {200/(mix_ns/1e9):,.0f} requests/s | {mix_ns/200/cold_ns:.2f}x cold |")
PY
