#!/usr/bin/env bash
# The strategy measurements of bench/README.md ("Aggregation strategies"): `fedcsg local` on the
# full Fashion-MNIST, 4 workers, 10 rounds, 2,000 samples per worker per round, batch 32, lr 0.05,
# CSG 12-72, Dirichlet(0.5) partitions, for each strategy with its default parameters, one run
# after the other (DESIGN §5: interleave seeds, do not batch).
#
#   bench/strategies.sh                                   # seed 0, the five strategies
#   SEEDS="1 2" bench/strategies.sh
#   STRATEGIES="fedadam" EXTRA="--server-lr 0.03" NAME_SUFFIX=-lr0.03 bench/strategies.sh
#
# Each run writes OUT/<name>.json (the summary JSON, with each round's aggregation_seconds) and
# OUT/<name>.log (the round lines); bench/strategies_table.py turns the JSONs into the table.
# Needs the release binaries (`cargo build --release --bins`) and the data set
# (`apt-get install dataset-fashion-mnist`).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/strategies}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
SEEDS=${SEEDS:-0}
STRATEGIES=${STRATEGIES:-fedavg fedavgm fedadam fedyogi fedprox}
EXTRA=${EXTRA:-}
NAME_SUFFIX=${NAME_SUFFIX:-}
ROUNDS=${ROUNDS:-10}
mkdir -p "$OUT"
for seed in $SEEDS; do
  for strategy in $STRATEGIES; do
    name="$strategy$NAME_SUFFIX-seed-$seed"
    if [ -s "$OUT/$name.json" ]; then
      echo "$name: done before, skipped"
      continue
    fi
    extra=$EXTRA
    [ "$strategy" = fedprox ] && [ -z "$extra" ] && extra="--proximal-mu 0.01"
    echo "$(date -u +%H:%M:%S) $name"
    # shellcheck disable=SC2086
    "$BIN/fedcsg" local --data fashion-mnist --workers 4 --rounds "$ROUNDS" \
      --max-samples 2000 --batch 32 --lr 0.05 --partition dirichlet:0.5 --seed "$seed" \
      --csg 12-72 --strategy "$strategy" $extra \
      --summary-json "$OUT/$name.json.part" --log-dir "$OUT/$name.logs" \
      > "$OUT/$name.log" 2>&1 && mv "$OUT/$name.json.part" "$OUT/$name.json" \
      || echo "$name FAILED: see $OUT/$name.log"
  done
done
