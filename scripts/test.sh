#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, integration tests against a throwaway PostgreSQL cluster
# (started by the test harness from the machine's server binaries), and end-to-end tests over real HTTP.
# Installs what the tests need first (scripts/test-prereqs.sh), checks the supply chain
# (scripts/supply-chain.sh, security case 68), then runs every test with the locked dependencies.
# Set CARGO_TARGET_DIR to reuse a build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/test-prereqs.sh
bash scripts/supply-chain.sh
export RUST_BACKTRACE=1
cargo test --workspace --locked --no-fail-fast
