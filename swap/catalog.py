"""What swap knows of its built-in data sets before reading any file, without importing torch.

Run: python -m swap.catalog   (lists them)
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetFacts:
    """A built-in data set's published sizes and image shape."""

    name: str
    num_classes: int
    channels: int
    image_size: int  # side of the square images, pixels
    train_size: int  # examples in its training set (before swap holds out data.val_fraction)
    test_size: int


DATASET_FACTS: dict[str, DatasetFacts] = {
    facts.name: facts
    for facts in (
        # scikit-learn's 1,797 digits: swap keeps a fixed stratified 20% (360) as the test set.
        DatasetFacts("digits", 10, 1, 8, train_size=1437, test_size=360),
        DatasetFacts("cifar10", 10, 3, 32, train_size=50_000, test_size=10_000),
        DatasetFacts("cifar100", 100, 3, 32, train_size=50_000, test_size=10_000),
        DatasetFacts("mnist", 10, 1, 28, train_size=60_000, test_size=10_000),
        DatasetFacts("fashion_mnist", 10, 1, 28, train_size=60_000, test_size=10_000),
        DatasetFacts("svhn", 10, 3, 32, train_size=73_257, test_size=26_032),
    )
}


def held_out(examples: int, val_fraction: float) -> int:
    """How many of `examples` the validation split takes: scikit-learn's train_test_split, which
    swap holds out with, rounds the held-out count up."""
    return math.ceil(val_fraction * examples) if val_fraction > 0 else 0


def main() -> None:
    for f in DATASET_FACTS.values():
        print(
            f"{f.name:<14} {f.num_classes:>4} classes  {f.channels} x {f.image_size} x "
            f"{f.image_size}  train {f.train_size:>6,}  test {f.test_size:>6,}"
        )


if __name__ == "__main__":
    main()
