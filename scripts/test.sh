#!/usr/bin/env bash
# The test command of README.md: builds every binary once (the end-to-end tests start the real
# fedcsg-coordinator and fedcsg-worker), then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
cargo test --workspace -- --test-threads 2
