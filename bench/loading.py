"""Fetching a file data set's plain view (test, validation, BN refresh) a batch at a time against
example by example: seconds per pass over CIFAR-shaped uint8 images, converted and normalized.

Run: .venv/bin/python bench/loading.py [--images 5000] [--batch 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from measure import RESULTS, describe_machine, machine, write_results
from torch.utils.data import DataLoader

from swap.data.common import Images, normalize_to_float
from swap.data.loaders import eval_loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    host = machine()
    print(describe_machine(host))
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), generator=generator, dtype=torch.uint8)
    plain = normalize_to_float((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))  # CIFAR-10's
    dataset = Images(images, torch.arange(args.images) % 10, plain, batchable=True)
    arms = {
        "per_example": lambda: DataLoader(dataset, args.batch),  # what swap did before
        "batched": lambda: eval_loader(dataset, args.batch),  # what swap does
    }
    seconds: dict[str, list[float]] = {arm: [] for arm in arms}
    for _ in range(args.repeats):  # arms alternate
        for arm, make in arms.items():
            started = time.perf_counter()
            for _batch in make():
                pass
            seconds[arm].append(time.perf_counter() - started)
    medians = {arm: statistics.median(values) for arm, values in seconds.items()}
    print(f"{args.images} images 3x32x32, batch {args.batch}, 1 thread, {args.repeats} repeats")
    for arm, median in medians.items():
        print(f"{arm:<12} median {median:.3f} s per pass")
    ratio = medians["per_example"] / medians["batched"]
    print(f"per_example / batched: {ratio:.1f}x")
    write_results(args.out / "loading.json", host, seconds=seconds, medians=medians, ratio=ratio)


if __name__ == "__main__":
    main()
