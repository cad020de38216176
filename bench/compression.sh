#!/usr/bin/env bash
# The compression measurements of bench/README.md ("Compressed exchange"): `fedcsg local` on the
# full Fashion-MNIST, 4 workers, 10 rounds, 2,000 samples per worker per round, batch 32,
# lr 0.05, IID, for every (csg mode, upload encoding) pair, one run after the other. The
# configurations of one seed run in turn before the next seed starts, so every configuration is
# measured across the same stretch of machine time (DESIGN §5: interleave, do not batch).
#
#   bench/compression.sh                       # seed 0, the 9 configurations of the issue
#   SEEDS="1 2" UPLOADS="f32 int8" bench/compression.sh
#   CSG="seeded:12-72" UPLOADS=int8 DOWNLOADS="f16 int8" bench/compression.sh
#
# Each run writes OUT/<name>.json (the summary JSON), OUT/<name>.log (the round lines) and
# OUT/<name>.logs/ (process logs); bench/compression_table.py turns the JSONs into the table.
# Needs the release binaries (`cargo build --release --bins`) and the data set
# (`apt-get install dataset-fashion-mnist`).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/compression}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
SEEDS=${SEEDS:-0}
CSG=${CSG:-none 12-72 seeded:12-72}
UPLOADS=${UPLOADS:-f32 f16 int8}
DOWNLOADS=${DOWNLOADS:-f32}
ROUNDS=${ROUNDS:-10}
mkdir -p "$OUT"
for seed in $SEEDS; do
  for csg in $CSG; do
    for up in $UPLOADS; do
      for down in $DOWNLOADS; do
        name="csg-${csg//:/_}-up-$up-down-$down-seed-$seed"
        if [ -s "$OUT/$name.json" ]; then
          echo "$name: done before, skipped"
          continue
        fi
        echo "$(date -u +%H:%M:%S) $name"
        "$BIN/fedcsg" local --data fashion-mnist --workers 4 --rounds "$ROUNDS" \
          --max-samples 2000 --batch 32 --lr 0.05 --partition iid --seed "$seed" \
          --csg "$csg" --upload-encoding "$up" --download-encoding "$down" \
          --summary-json "$OUT/$name.json.part" --log-dir "$OUT/$name.logs" \
          > "$OUT/$name.log" 2>&1 && mv "$OUT/$name.json.part" "$OUT/$name.json" \
          || echo "$name FAILED: see $OUT/$name.log"
      done
    done
  done
done
