#!/usr/bin/env python3
"""Tables of the compression runs (bench/compression.sh): per configuration, bytes up and down
per worker per round, the ratio to a full-filter exchange in f32 (both directions summed),
accuracy after every round and seconds per round; with several seeds, mean and spread (min-max).

    python3 bench/compression_table.py bench/results/compression

The last table pairs each lossy upload encoding with f32 uploads of the same csg mode, download
encoding and seed (same partitions, same initial model), over every seed with both runs, counting
seeds whose round-10 accuracy is only in seed-*-round-10.tsv (runs whose JSONs were not kept).
"""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def load(directory):
    runs = defaultdict(list)
    for path in sorted(Path(directory).glob("*.json")):
        s = json.loads(path.read_text())
        # Summaries from before the seed was recorded: bench/compression.sh names it.
        s.setdefault("seed", int(path.stem.rsplit("-seed-", 1)[1]))
        if s.get("state") != "JOB_STATE_SUCCEEDED":
            continue
        key = (s["csg"], s["upload_encoding"], s["download_encoding"])
        runs[key].append(s)
    return runs


def per_worker(summary, field):
    rounds = summary["rounds"]
    values = [w[field] for r in rounds for w in r["workers"]]
    return statistics.mean(values)


def spread(values, fmt):
    if len(values) == 1:
        return fmt.format(values[0])
    return (fmt + " ({}-{})").format(
        statistics.mean(values), fmt.format(min(values)), fmt.format(max(values))
    )


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "bench/results/compression"
    runs = load(directory)
    order = {"none": 0, "12-72": 1, "seeded:12-72": 2}
    enc = {"f32": 0, "f16": 1, "bf16": 2, "int8": 3}
    keys = sorted(runs, key=lambda k: (order.get(k[0], 9), enc[k[2]], enc[k[1]]))
    print("| csg | up | down | seeds | B up / worker / round | B down / worker / round "
          "| vs full f32 (up+down) | acc r1 | acc r5 | acc r10 | s / round |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for key in keys:
        ss = runs[key]
        up = [per_worker(s, "bytes_up") for s in ss]
        down = [per_worker(s, "bytes_down") for s in ss]
        full = [per_worker(s, "full_filter_f32_bytes") for s in ss]
        ratio = [(u + d) / (2 * f) if f else float("nan") for u, d, f in zip(up, down, full)]
        acc = lambda i: [100 * s["rounds"][i]["test_accuracy"] for s in ss if len(s["rounds"]) > i]
        secs = [statistics.mean(r["seconds"] for r in s["rounds"]) for s in ss]
        seeds = len(ss)
        print(f"| {key[0]} | {key[1]} | {key[2]} | {seeds} | {spread(up, '{:.0f}')} "
              f"| {spread(down, '{:.0f}')} | {spread(ratio, '{:.4f}')} "
              f"| {spread(acc(0), '{:.2f}')} | {spread(acc(4), '{:.2f}')} "
              f"| {spread(acc(9), '{:.2f}')} | {spread(secs, '{:.1f}')} |")
    print()
    print("Accuracy (%) after each round:")
    print()
    print("| csg | up | down | " + " | ".join(f"r{i}" for i in range(1, 11)) + " |")
    print("|---|---|---|" + "---:|" * 10)
    for key in keys:
        ss = runs[key]
        cells = []
        for i in range(10):
            a = [100 * s["rounds"][i]["test_accuracy"] for s in ss if len(s["rounds"]) > i]
            cells.append(f"{statistics.mean(a):.2f}" if a else "")
        print(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    paired_table(directory, runs)


def final_accuracies(directory, runs):
    """(csg, up, down) -> {seed: accuracy after round 10, %}."""
    finals = defaultdict(dict)
    for key, ss in runs.items():
        for s in ss:
            if len(s["rounds"]) >= 10 and "seed" in s:
                finals[key][s["seed"]] = 100 * s["rounds"][9]["test_accuracy"]
    for path in sorted(Path(directory).glob("seed-*-round-10.tsv")):
        for line in path.read_text().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            csg, up, down, seed, acc = line.split("\t")
            finals[(csg, up, down)].setdefault(int(seed), float(acc))
    return finals


def paired_table(directory, runs):
    finals = final_accuracies(directory, runs)
    print()
    print("Accuracy (%) after round 10 over seeds, and the paired difference from f32 uploads "
          "(same csg, download and seed):")
    print()
    print("| csg | up | down | seeds | r10 mean | r10 min-max | minus f32: mean | per seed |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    order = {"none": 0, "12-72": 1, "seeded:12-72": 2}
    enc = {"f32": 0, "f16": 1, "bf16": 2, "int8": 3}
    for key in sorted(finals, key=lambda k: (order.get(k[0], 9), enc[k[2]], enc[k[1]])):
        by_seed = finals[key]
        accs = list(by_seed.values())
        base = finals.get((key[0], "f32", key[2]), {})
        diffs = {seed: a - base[seed] for seed, a in sorted(by_seed.items()) if seed in base}
        if key[1] == "f32" or not diffs:
            diff_mean, per_seed = "", ""
        else:
            diff_mean = f"{statistics.mean(diffs.values()):+.2f}"
            per_seed = ", ".join(f"s{seed} {d:+.2f}" for seed, d in diffs.items())
        print(f"| {key[0]} | {key[1]} | {key[2]} | {len(accs)} | {statistics.mean(accs):.2f} "
              f"| {min(accs):.2f}-{max(accs):.2f} | {diff_mean} | {per_seed} |")


if __name__ == "__main__":
    main()
