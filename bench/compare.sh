#!/usr/bin/env bash
# Interleaves the candle ResNet-20 training bench and the PyTorch reference (A B A B ...) and
# prints each pair's train images/s and the median candle/PyTorch ratio. Interleaving spreads the
# noise of a shared machine over both sides.
#
#   bench/compare.sh [ROUNDS]            (default 5)
# Environment:
#   THREADS=2        threads for both sides (RAYON_NUM_THREADS, torch --threads)
#   CANDLE_NUM_THREADS=1  candle's elementwise pool; 1 (no spinning workers) is fastest, see
#                    common/ml/src/ops/parallel.rs
#   BATCH=64 STEPS=20
#   RUST_CMD=...     the candle bench; default: `fedcsg bench` when built, else the
#                    resnet_step example (both print "train images/s N")
#   PYTHON=python3   an interpreter that can import torch (see bench/README.md)
#   TORCH_ARGS=...   extra flags for pytorch_reference.py, e.g. --channels-last
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-5}
THREADS=${THREADS:-2}
BATCH=${BATCH:-64}
STEPS=${STEPS:-20}
PYTHON=${PYTHON:-python3}

if [[ -z "${RUST_CMD:-}" ]]; then
    if [[ -x target/release/fedcsg ]] && target/release/fedcsg bench --help >/dev/null 2>&1; then
        RUST_CMD="target/release/fedcsg bench --model resnet20 --csg none --batch $BATCH --steps $STEPS"
    elif [[ -x target/debug/fedcsg ]] && target/debug/fedcsg bench --help >/dev/null 2>&1; then
        # The dev profile optimises candle and fedcsg-ml fully: same kernels as release.
        RUST_CMD="target/debug/fedcsg bench --model resnet20 --csg none --batch $BATCH --steps $STEPS"
    else
        cargo build --release -q -p fedcsg-ml --example resnet_step
        RUST_CMD="target/release/examples/resnet_step --batch $BATCH --steps $STEPS"
    fi
fi
"$PYTHON" -c "import torch" || { echo "compare.sh: $PYTHON cannot import torch (see bench/README.md)" >&2; exit 1; }
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores; avx512f: $(grep -qw avx512f /proc/cpuinfo && echo yes || echo no)"
echo "candle: $RUST_CMD (FEDCSG_ISA=${FEDCSG_ISA:-unset: the widest the CPU has})"
"$PYTHON" -c "import torch; print(f'pytorch: {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}, args: ${TORCH_ARGS:-none}')"

# The number after "train images/s" (or the JSON field train_images_per_s) in a command's output.
train_rate() {
    grep -oE '(train images/s|"train_images_per_s(econd)?")[^0-9]*[0-9.]+' | head -1 | grep -oE '[0-9.]+$'
}

ratios=()
for ((i = 1; i <= ROUNDS; i++)); do
    rust=$(RAYON_NUM_THREADS=$THREADS CANDLE_NUM_THREADS=${CANDLE_NUM_THREADS:-1} $RUST_CMD | train_rate)
    torch=$("$PYTHON" bench/pytorch_reference.py --batch "$BATCH" --steps "$STEPS" --threads "$THREADS" ${TORCH_ARGS:-} | train_rate)
    ratio=$("$PYTHON" -c "print(f'{$rust / $torch:.3f}')")
    ratios+=("$ratio")
    echo "round $i: candle $rust images/s, pytorch $torch images/s, ratio $ratio"
done
"$PYTHON" -c "import statistics, sys; print(f'median candle/pytorch train ratio over {len(sys.argv)-1} rounds: {statistics.median(map(float, sys.argv[1:])):.3f}')" "${ratios[@]}"
