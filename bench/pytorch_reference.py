#!/usr/bin/env python3
"""PyTorch CPU reference for `fedcsg bench --model resnet20 --csg none`: times the same
full-filter CIFAR-style ResNet-20 (3x3 convs, batch norm, option-A shortcuts, 16/32/64 channels)
on 1x28x28 inputs with 10 classes, one SGD step (momentum 0.9, weight decay 5e-4) per batch of
random data, and prints training and evaluation images/s after warm-up: a readable line and a
JSON line. See bench/README.md for installing a CPU-only torch."""

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        # Option A (He et al. 2016): subsample and zero-pad channels, no parameters.
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            pad = (c_out - c_in) // 2
            self.shortcut = lambda x: F.pad(x[:, :, ::stride, ::stride], (0, 0, 0, 0, pad, pad))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nn.Module):
    def __init__(self, depth=20, in_channels=1, num_classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, c_in = [], 16
        for stage, c_out in enumerate([16, 32, 64]):
            for i in range(n):
                blocks.append(BasicBlock(c_in, c_out, 2 if stage > 0 and i == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.blocks(y)
        return self.fc(y.mean((2, 3)))


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for model and inputs")
    p.add_argument("--depth", type=int, default=20)
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = ResNet(args.depth).to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(args.batch, 1, 28, 28).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (args.batch,))

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    model.train()
    for _ in range(args.warmup):
        train_step()
    t = time.perf_counter()
    for _ in range(args.steps):
        train_step()
    train_s = time.perf_counter() - t

    model.eval()
    with torch.no_grad():
        for _ in range(args.warmup):
            model(x)
        t = time.perf_counter()
        for _ in range(args.steps):
            model(x)
        eval_s = time.perf_counter() - t

    result = {
        "framework": "pytorch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "channels_last": args.channels_last,
        "model": f"resnet{args.depth}",
        "batch": args.batch,
        "steps": args.steps,
        "train_images_per_s": args.batch * args.steps / train_s,
        "eval_images_per_s": args.batch * args.steps / eval_s,
        "train_ms_per_step": 1e3 * train_s / args.steps,
    }
    print(
        f"pytorch {result['torch']} resnet{args.depth} batch {args.batch} threads {result['threads']}"
        f"{' channels-last' if args.channels_last else ''}: train {result['train_images_per_s']:.1f} images/s"
        f" ({result['train_ms_per_step']:.1f} ms/step), eval {result['eval_images_per_s']:.1f} images/s"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
