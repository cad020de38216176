#!/usr/bin/env bash
# The test command of README.md: builds every binary and test once, with the one feature set the
# tests use (dev-dependencies included, so nothing is compiled twice; the end-to-end tests start
# the real fedcsg-coordinator and fedcsg-worker), then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --tests
cargo test --workspace -- --test-threads 2
