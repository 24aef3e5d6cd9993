#!/usr/bin/env bash
# Checks an audit export (`tenantctl audit export --tenant T > T.jsonl`) with `jq` and `sha256sum`
# only, without tenantctl or the database: events numbered 1, 2, 3...; each names the previous
# event's hash (64 zeros for the first); each event's hash is the SHA-256 of the event without its
# `hash`, keys sorted, no whitespace (`jq -cS 'del(.hash)'`). Prints the head hash (compare it with
# the one noted at the last check: the chain alone cannot show events removed from its end).
# Usage: bash scripts/verify-audit-export.sh T.jsonl   (or on stdin). Exits 1 at the first broken link.
set -euo pipefail
command -v jq >/dev/null || { echo "jq is needed (apt-get install jq)" >&2; exit 2; }
prev=0000000000000000000000000000000000000000000000000000000000000000
n=0
while IFS= read -r line; do
  n=$((n + 1))
  seq=$(jq -r .seq <<<"$line")
  if [ "$seq" != "$n" ]; then
    echo "broken at line $n: it is event $seq, expected event $n" >&2; exit 1
  fi
  if [ "$(jq -r .prev_hash <<<"$line")" != "$prev" ]; then
    echo "broken at event $seq: it does not name the previous event's hash" >&2; exit 1
  fi
  hash=$(jq -cS 'del(.hash)' <<<"$line" | tr -d '\n' | sha256sum | cut -d' ' -f1)
  if [ "$hash" != "$(jq -r .hash <<<"$line")" ]; then
    echo "broken at event $seq: its fields do not give its hash" >&2; exit 1
  fi
  prev=$hash
done < "${1:-/dev/stdin}"
echo "ok: $n event(s), head $prev"
