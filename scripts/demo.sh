#!/usr/bin/env bash
# The demo of README.md: builds every binary and test (exactly the build `scripts/test.sh` makes,
# so running both compiles once) and runs a local federation on the bundled data: a coordinator
# and 4 worker processes, 5 rounds of CSG ResNet-20 (12-72), a line per round and a summary JSON.
# Flags given replace the default
# `--max-samples 300` and go to `fedcsg local` (e.g. `--max-samples 0 --csg none`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --tests
target="${CARGO_TARGET_DIR:-target}"
[ $# -gt 0 ] || set -- --max-samples 300
exec "$target/debug/fedcsg" local --workers 4 --rounds 5 --summary-json summary.json "$@"
