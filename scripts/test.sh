#!/usr/bin/env bash
# The test command (README, .ci/run): installs test dependencies, checks
# formatting, then builds and runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
cargo fmt --all --check
# The end-to-end tests (tests/tests/*.rs) run target/debug/voxtok, which
# `cargo test` alone does not build for another package's tests.
cargo build --locked -p voxtok
cargo test --workspace --locked
