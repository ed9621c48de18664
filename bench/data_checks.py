"""What checking the data costs the driver (swap.data.checks), at CIFAR-10's size: 50,000
training and 10,000 test images of 3 x 32 x 32, 10 classes, 10% held out for validation.

Run: .venv/bin/python bench/data_checks.py [--repeats 7]

Two shapes of data set: swap's in-memory sets (uint8 pixels in numpy: labels only, integer
pixels are always finite) and a user's function returning float32 TensorDatasets (every value
checked for NaN and infinity). Prints n, mean, std and median seconds per check, and the same
against one pass that only reads every value (the least any full check costs).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from measure import RESULTS, describe_machine, machine, summary, write_results
from torch.utils.data import Subset, TensorDataset

from swap.data.checks import check_splits
from swap.data.common import DatasetInfo, Images, Splits

TRAIN, TEST, HELD = 50_000, 10_000, 5_000
INFO = DatasetInfo(num_classes=10, channels=3, image_size=32)


def in_memory() -> Splits:
    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, (TRAIN + TEST, 3, 32, 32), dtype=np.uint8)
    labels = generator.integers(0, 10, TRAIN + TEST)
    train = Images(images[HELD:TRAIN], labels[HELD:TRAIN])
    return Splits(INFO, train, train, Images(images[:HELD], labels[:HELD]),
                  Images(images[TRAIN:], labels[TRAIN:]))  # fmt: skip


def tensors() -> Splits:
    generator = torch.Generator().manual_seed(0)
    train = TensorDataset(torch.randn(TRAIN, 3, 32, 32, generator=generator),
                          torch.randint(0, 10, (TRAIN,), generator=generator))  # fmt: skip
    test = TensorDataset(torch.randn(TEST, 3, 32, 32, generator=generator),
                         torch.randint(0, 10, (TEST,), generator=generator))  # fmt: skip
    kept, held = Subset(train, range(HELD, TRAIN)), Subset(train, range(HELD))
    return Splits(INFO, kept, kept, held, test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    host = machine()
    print(describe_machine(host))
    measured = {}
    arms = [("in-memory uint8 (built-in sets)", in_memory(), None),
            ("float32 TensorDatasets (a user's)", tensors(), "tensors")]  # fmt: skip
    for name, splits, values in arms:
        seconds, floor = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            check_splits(splits, name, val_expected=True)
            seconds.append(time.perf_counter() - started)
            if values:  # one read of every value: sum the training and test tensors
                started = time.perf_counter()
                splits.val.dataset.tensors[0].sum() + splits.test.tensors[0].sum()
                floor.append(time.perf_counter() - started)
        s = summary(seconds)
        measured[name] = {"seconds": s, **({"one_read_seconds": summary(floor)} if floor else {})}
        line = (f"{name:<36} n={s['n']}  {s['mean']:.3f} ± {s['std']:.3f} s  "
                f"median {s['median']:.3f} s")  # fmt: skip
        if floor:
            line += f"  (one read of every value: median {summary(floor)['median']:.3f} s, ratio " \
                    f"{s['median'] / summary(floor)['median']:.1f}x)"  # fmt: skip
        print(line)
    write_results(RESULTS / "data_checks.json", host, sizes={"train": TRAIN, "test": TEST},
                  measured=measured)  # fmt: skip


if __name__ == "__main__":
    main()
