#!/usr/bin/env python3
"""Tables of the compression runs (bench/compression.sh): per configuration, bytes up and down
per worker per round, the ratio to a full-filter exchange in f32 (both directions summed),
accuracy after every round and seconds per round; with several seeds, mean and spread (min-max).

    python3 bench/compression_table.py /work/wt-enc-results
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
    runs = load(sys.argv[1] if len(sys.argv) > 1 else "/work/wt-enc-results")
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


if __name__ == "__main__":
    main()
