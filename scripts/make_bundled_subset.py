#!/usr/bin/env python3
"""Make the bundled Fashion-MNIST subset that fedcsg embeds for `--data bundled`.

Source: the Debian package `dataset-fashion-mnist` (`apt-get install dataset-fashion-mnist`),
whose gzipped IDX files live under /usr/share/datasets/fashion-mnist/.

Output: common/ml/data/fashion-mnist-subset/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz, a
class-balanced real subset: 600 images per class from the training set (6,000) and 100 per class
from the test set (1,000). Samples are drawn with random.Random(SEED), SEED = 20240611, and kept in
their original order. The gzip streams are written with mtime=0, no file name and level 9, so
rerunning this script reproduces the committed files byte for byte (for a given zlib).

Plain Python 3 standard library only. Usage:
    python3 scripts/make_bundled_subset.py [SOURCE_DIR [OUTPUT_DIR]]
"""

import gzip
import os
import random
import struct
import sys

SEED = 20240611
NUM_CLASSES = 10
PER_CLASS = {"train": 600, "t10k": 100}
DEFAULT_SOURCE = "/usr/share/datasets/fashion-mnist"
DEFAULT_OUTPUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "common", "ml", "data", "fashion-mnist-subset"
)


def read_idx(path, expected_magic):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    if magic != expected_magic:
        sys.exit(f"{path}: bad magic {magic:#010x}, expected {expected_magic:#010x}")
    ndims = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndims, data[4 : 4 + 4 * ndims])
    return dims, data[4 + 4 * ndims :]


def write_gz(path, payload):
    # mtime=0 and an empty file name keep the gzip header free of anything that changes per run.
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as f:
            f.write(payload)


def make_split(split, source, output, rng):
    (n,), labels = read_idx(os.path.join(source, f"{split}-labels-idx1-ubyte.gz"), 0x00000801)
    (n_img, rows, cols), images = read_idx(
        os.path.join(source, f"{split}-images-idx3-ubyte.gz"), 0x00000803
    )
    if n != n_img or len(labels) != n or len(images) != n * rows * cols:
        sys.exit(f"{split}: inconsistent source files")
    by_class = [[] for _ in range(NUM_CLASSES)]
    for i, label in enumerate(labels):
        by_class[label].append(i)
    chosen = []
    for c in range(NUM_CLASSES):
        chosen.extend(rng.sample(by_class[c], PER_CLASS[split]))
    chosen.sort()
    size = rows * cols
    out_labels = bytes(labels[i] for i in chosen)
    out_images = b"".join(images[i * size : (i + 1) * size] for i in chosen)
    m = len(chosen)
    write_gz(
        os.path.join(output, f"{split}-labels-idx1-ubyte.gz"),
        struct.pack(">II", 0x00000801, m) + out_labels,
    )
    write_gz(
        os.path.join(output, f"{split}-images-idx3-ubyte.gz"),
        struct.pack(">IIII", 0x00000803, m, rows, cols) + out_images,
    )
    print(f"{split}: {m} images of {rows}x{cols}, {PER_CLASS[split]} per class")


def main():
    source = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_SOURCE
    output = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_OUTPUT
    os.makedirs(output, exist_ok=True)
    rng = random.Random(SEED)
    for split in ("train", "t10k"):
        make_split(split, source, output, rng)


if __name__ == "__main__":
    main()
