#!/usr/bin/env bash
# `fedcsg bench` for ResNet-20 in full, CSG 12-72 and seeded 12-72 modes on the fast and on the
# reference (candle's own ops) path, one table: train and eval images/s, forward and backward
# ms per step, peak RSS. Batch 64, 1x28x28, synthetic data.
#
#   bench/modes.sh            (builds the release `fedcsg` if needed)
# Environment: THREADS=2  BATCH=64  STEPS=20 (fast path)  REF_STEPS=5 (reference path, slow)
#              FEDCSG=path/to/fedcsg
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
BATCH=${BATCH:-64}
STEPS=${STEPS:-20}
REF_STEPS=${REF_STEPS:-5}
if [[ -z "${FEDCSG:-}" ]]; then
    cargo build --release -q -p fedcsg-server --bin fedcsg
    FEDCSG=target/release/fedcsg
fi
printf '| mode | path | train images/s | fwd ms | bwd ms | eval images/s | peak RSS MiB |\n'
printf '| --- | --- | ---: | ---: | ---: | ---: | ---: |\n'
for conv in fast reference; do
    steps=$STEPS
    [[ $conv == reference ]] && steps=$REF_STEPS
    for csg in none 12-72 seeded:12-72; do
        json=$(RAYON_NUM_THREADS=$THREADS "$FEDCSG" bench --model resnet20 --csg "$csg" --conv "$conv" \
            --batch "$BATCH" --steps "$steps" --warmup 2 | grep '^{')
        python3 - "$csg" "$conv" "$json" <<'PY'
import json, sys
csg, conv, j = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print(f"| {csg} | {conv} | {j['train_images_per_second']:.1f} | {j['forward_ms']:.1f} | "
      f"{j['backward_ms']:.1f} | {j['eval_images_per_second']:.1f} | {j['peak_rss_kib'] / 1024:.0f} |")
PY
    done
done
