#!/usr/bin/env python3
"""Tables of the strategy runs (bench/strategies.sh): per run, test accuracy after every round,
seconds per round and the coordinator's aggregation time per round (folding updates plus the
strategy's step); with several seeds of one strategy, mean and spread (min-max) of the final
accuracy.

    python3 bench/strategies_table.py bench/results/strategies
"""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def main():
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/strategies")
    runs = defaultdict(list)
    for path in sorted(directory.glob("*.json")):
        s = json.loads(path.read_text())
        name = path.stem.rsplit("-seed-", 1)[0]
        runs[name].append(s)
    print("| run | seeds | acc r10 (mean, min-max) | s / round | aggregation ms / round (mean, max) |")
    print("|---|---:|---:|---:|---:|")
    for name, ss in runs.items():
        finals = [100 * s["rounds"][-1]["test_accuracy"] for s in ss if s["rounds"]]
        secs = [r["seconds"] for s in ss for r in s["rounds"]]
        agg = [1000 * r.get("aggregation_seconds", 0.0) for s in ss for r in s["rounds"]]
        acc = f"{statistics.mean(finals):.2f}"
        if len(finals) > 1:
            acc += f" ({min(finals):.2f}-{max(finals):.2f})"
        print(f"| {name} | {len(ss)} | {acc} | {statistics.mean(secs):.1f} "
              f"| {statistics.mean(agg):.2f}, {max(agg):.2f} |")
    print()
    print("Accuracy (%) after each round:")
    print()
    width = max(len(s["rounds"]) for ss in runs.values() for s in ss)
    print("| run | seed | " + " | ".join(f"r{i + 1}" for i in range(width)) + " |")
    print("|---|---:|" + "---:|" * width)
    for name, ss in runs.items():
        for s in ss:
            accs = [f"{100 * r['test_accuracy']:.2f}" for r in s["rounds"]]
            seed = s.get("seed", "")
            print(f"| {name} | {seed} | " + " | ".join(accs) + " |")


if __name__ == "__main__":
    main()
