#!/usr/bin/env bash
# The main job on the local target: installs what is missing, builds tenantctl, starts the local
# PostgreSQL cluster, onboards every manifest in tenants/, serves the API on http://127.0.0.1:8787 and
# prints a ready-to-paste curl command per tenant. Ctrl-C stops the server and the cluster.
# Extra arguments go to `tenantctl up` (e.g. --listen 127.0.0.1:9000).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh
exec cargo run --quiet --locked -p cli --bin tenantctl -- up --tenants tenants "$@"
