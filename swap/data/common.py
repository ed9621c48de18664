"""What every data set source returns (`DatasetInfo`, `Splits`), and the pieces they share.

Run: imported by swap.data.registry and the sources beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset
from torchvision.transforms import v2

from swap.catalog import DATASETS
from swap.spec import Data

Transform = Callable[[Any], torch.Tensor]

# The held-out splits never depend on a job's seed, so runs with different seeds are compared
# on the same test and validation examples.
SPLIT_SEED = 0


@dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    channels: int
    image_size: int  # side of the (square) model input, pixels


def builtin_info(name: str) -> DatasetInfo:
    """A built-in data set's shape, from its swap.catalog entry."""
    facts = DATASETS[name]
    return DatasetInfo(facts.num_classes, facts.channels, facts.image_size)


@dataclass(frozen=True)
class Splits:
    """`train` is what the optimizer sees (augmented); `train_plain` is the same examples without
    augmentation, for the BN refresh. `val` is held out of training; `test` is never used to
    choose anything."""

    info: DatasetInfo
    train: Dataset
    train_plain: Dataset
    val: Dataset
    test: Dataset


class Images(Dataset):
    """Images held as one tensor in memory, with an optional transform.

    `batchable`: the transform gives each image of a batch what it gives the image alone (no
    random draws, only per-element and per-channel operations), so a list of indices can be
    fetched and transformed as one batch. No transform is batchable.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Transform | None,
        batchable: bool = False,
    ):
        self.images, self.labels, self.transform = images, labels, transform
        self.batchable = batchable or transform is None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """One example; or, if `batchable`, a whole batch for a list of indices."""
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


class Transformed(Dataset):
    """`dataset`'s examples with `transform` applied to the input: one file scan, many views."""

    def __init__(self, dataset: Dataset, transform: Transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        image, label = self.dataset[index]
        return self.transform(image), label


def holdout(
    index: np.ndarray, labels: np.ndarray | None, fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Split `index` into (kept, held out) with `fraction` held out, by a fixed seed.

    Stratified by `labels` when given and possible (every class needs two examples and the
    held-out part one slot per class); otherwise a plain seeded shuffle.
    """
    if fraction <= 0:
        return index, index[:0]

    if labels is not None:
        try:
            kept, held = train_test_split(
                index, test_size=fraction, random_state=SPLIT_SEED, stratify=labels
            )
            return kept, held
        except ValueError:  # too few examples per class to stratify
            pass
    kept, held = train_test_split(index, test_size=fraction, random_state=SPLIT_SEED)
    return kept, held


def normalization(
    data: Data, mean: Sequence[float], std: Sequence[float]
) -> tuple[list[float], list[float]]:
    """The spec's `data.mean`/`data.std` where given, else the data set's own values."""
    return list(data.mean or mean), list(data.std or std)


def normalize_to_float(channels_mean: Sequence[float], channels_std: Sequence[float]) -> Transform:
    """uint8 or PIL image -> float32 in [0, 1] -> normalized per channel."""

    return v2.Compose(
        [
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(channels_mean), list(channels_std)),
            v2.ToPureTensor(),
        ]
    )
