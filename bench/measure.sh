#!/usr/bin/env bash
# Reproduces the figures of the closing notes on the full Fashion-MNIST (Debian package
# dataset-fashion-mnist): centralised ResNet-20 training in three filter modes (20,000 images,
# 2 epochs, batch 64, SGD 0.05 momentum 0.9 wd 5e-4, 30 warm-up steps then cosine), then
# `fedcsg local` with 4 workers and 5 rounds, CSG 12-72 and full filters, same seed.
# Usage: bench/measure.sh [OUT_DIR] [BIN_DIR]   (binaries from `cargo build --workspace --bins`)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/measure}
bin=${2:-target/debug}
mkdir -p "$out"
for mode in ${TRAIN_MODES:-none 12-72 seeded:12-72}; do
  tag=${mode//:/-}
  /usr/bin/time -v "$bin/fedcsg" train --model resnet20 --csg "$mode" --data fashion-mnist --epochs 2 \
    --limit 20000 --batch 64 --lr 0.05 --momentum 0.9 --weight-decay 5e-4 --schedule warmup-cosine \
    --warmup 30 --seed 0 --json "$out/train-$tag.json" > "$out/train-$tag.log" 2> "$out/train-$tag.time"
  tail -3 "$out/train-$tag.log"
done
for mode in ${LOCAL_MODES:-12-72 none}; do
  tag=${mode//:/-}
  "$bin/fedcsg" local --workers 4 --rounds 5 --model resnet20 --csg "$mode" --data fashion-mnist \
    --max-samples "${MAX_SAMPLES:-1000}" --batch 32 --lr 0.05 --seed 0 --log-dir "$out/local-$tag-logs" \
    --summary-json "$out/local-$tag.json" > "$out/local-$tag.log" 2>&1
  tail -8 "$out/local-$tag.log"
done
