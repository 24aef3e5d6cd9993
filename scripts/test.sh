#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, integration tests against a throwaway PostgreSQL cluster
# (started by the test harness from the machine's server binaries), and end-to-end tests over real HTTP.
# Installs what the tests need first (see scripts/prereqs.sh). Set CARGO_TARGET_DIR to reuse a build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh
export RUST_BACKTRACE=1
cargo test --workspace --locked --no-fail-fast
