#!/usr/bin/env bash
# The test command (README, .ci/run): installs test dependencies, checks
# formatting, then builds and runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
cargo fmt --all --check
cargo test --workspace --locked
