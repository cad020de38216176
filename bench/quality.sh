#!/usr/bin/env bash
# The accuracy-per-byte study (issue 11): `fedcsg simulate` on the full Fashion-MNIST, ResNet-20,
# 100 clients, 10 per round, 1 local epoch, 30 rounds, a 10 Mbit/s 25 ms link, for each mode
# and partition of the grid below and each seed; then `fedcsg frontier` writes the table
# (bench/results/quality/README.md) and the plot (bench/results/quality/frontier.png).
#
# Usage: bench/quality.sh [SEEDS] [LABEL-FILTER]   e.g. bench/quality.sh "0 1 2" dirichlet
# Resumable: a run whose summary exists is not run again, so the study can go on across
# sessions (delete a summary to re-run it). BIN (default target/release) holds the fedcsg binary.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
SEEDS=${1:-0 1 2}
FILTER=${2:-}
OUT=bench/results/quality
mkdir -p "$OUT"
[ -x "$BIN/fedcsg" ] || { echo "no $BIN/fedcsg: cargo build --release --bins first" >&2; exit 1; }

# label | partition | csg | extra flags (the settings chosen for the mode on the validation
# split, see bench/README.md "Accuracy per byte")
GRID=(
  "dirichlet-full|dirichlet:0.5|none|"
  "dirichlet-csg-12-72|dirichlet:0.5|12-72|"
  "dirichlet-csg-16-128|dirichlet:0.5|16-128|"
  "dirichlet-seeded-12-72|dirichlet:0.5|seeded:12-72|"
  "dirichlet-seeded-12-72-fanin|dirichlet:0.5|seeded:12-72/fanin|"
  "iid-full|iid|none|"
  "iid-csg-12-72|iid|12-72|"
)

COMMON=(--data fashion-mnist --model resnet20 --clients 100 --fraction 0.1 --rounds 30
        --local-epochs 1 --batch 32 --lr 0.05 --lr-schedule cosine:0.1 --federated-eval
        --link 10mbit/25ms)

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
echo "CPU: $cpu; $(nproc) cores"
for seed in $SEEDS; do
  for row in "${GRID[@]}"; do
    IFS='|' read -r label partition csg extra <<<"$row"
    [[ -z "$FILTER" || "$label" == *"$FILTER"* ]] || continue
    summary="$OUT/$label-seed$seed.json"
    if [ -f "$summary" ]; then
      echo "== $label seed $seed: done already ($summary)"
      continue
    fi
    echo "== $label seed $seed"
    # shellcheck disable=SC2086
    "$BIN/fedcsg" simulate "${COMMON[@]}" --partition "$partition" --csg "$csg" --seed "$seed" \
      --label "$label" $extra --summary-json "$summary.tmp" | tee "$OUT/$label-seed$seed.log"
    mv "$summary.tmp" "$summary"
  done
done
shopt -s nullglob
summaries=("$OUT"/*-seed*.json)
if [ ${#summaries[@]} -gt 0 ]; then
  "$BIN/fedcsg" frontier "${summaries[@]}" --table "$OUT/table.md" --plot "$OUT/frontier.png"
  cat "$OUT/table.md"
fi
