#!/usr/bin/env bash
# The speed table of bench/README.md ("Local training on AVX-512"): bench/compare.sh (interleaved
# candle/PyTorch pairs, median ratio) for full filters and CSG 12-72 against PyTorch in its
# default layout and with --channels-last, written to OUT/<csg>-<layout>.txt.
#
#   PYTHON=/opt/torch2/bin/python BIN=target/release bench/speed.sh [PAIRS]     (default 5)
#
# PyTorch's reference is the full-filter ResNet-20 (it has no CSG): the CSG rows compare what a
# CSG worker trains per second with what a full-filter PyTorch worker trains.
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${1:-5}
OUT=${OUT:-bench/results/speed}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
export PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
for csg in ${CSGS:-none 12-72}; do
  for layout in ${LAYOUTS:-default channels-last}; do
    args=""
    [ "$layout" = channels-last ] && args="--channels-last"
    file="$OUT/${csg//:/-}-$layout.txt"
    RUST_CMD="$BIN/fedcsg bench --model resnet20 --csg $csg --batch ${BATCH:-64} --steps ${STEPS:-20}" \
      TORCH_ARGS="$args" bench/compare.sh "$PAIRS" | tee "$file"
  done
done
