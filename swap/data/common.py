"""What every data set source returns (`DatasetInfo`, `Splits`) and the views they share. Light:
the training processes unpickle these from Ray's object store without importing the sources.

Run: imported by swap.data.registry, the sources beside it, and the phases' workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from swap.catalog import DATASETS
from swap.data.augment import BatchTransform
from swap.spec import Data

Transform = Callable[[Any], torch.Tensor]


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
    """`train` is what the optimizer sees; `train_plain` the same examples without augmentation,
    for the BN refresh. `val` is held out of training; `test` is never used to choose anything.

    With `batch_transform` (the in-memory sets), every set yields raw pixels and the training
    process makes each batch ready on its device: normalized, and augmented for training (then
    `train_plain` is `train`). Without it (image folders, a user's sets) examples come ready.
    """

    info: DatasetInfo
    train: Dataset
    train_plain: Dataset
    val: Dataset
    test: Dataset
    batch_transform: BatchTransform | None = None
    # What swap.data.checks found (sizes, classes, chance accuracy), once prepare_data checked.
    summary: dict[str, Any] | None = None
    # A set streamed with Ray Data (swap.data.stream): its splits above are sizes only.
    stream: Any = None

    def training_transform(self, seed: int, device: torch.device):
        """What makes one epoch's training batches ready on `device`, its augmentation drawn
        from a generator seeded with `seed`; None when the examples come ready."""
        if self.batch_transform is None:
            return None
        return self.batch_transform.training(seed, device)


class Images(Dataset):
    """Images held in memory as one array (raw pixels, N x C x H x W) with their labels, fetched
    a batch at a time: `images[list_of_indices]` is one numpy gather, no per-image Python.

    numpy arrays, not tensors: Ray's object store hands them to every process of a node without
    copying, and `torch.from_numpy` of each fetched batch (a fresh array) costs nothing."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.images[index], self.labels[index]
        if not isinstance(index, list):  # one example: a view into a read-only array, copied
            images, labels = images.copy(), np.asarray(labels)
        return torch.from_numpy(images), torch.from_numpy(labels)


class Transformed(Dataset):
    """`dataset`'s examples with `transform` applied to the input: one file scan, many views."""

    def __init__(self, dataset: Dataset, transform: Transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        image, label = self.dataset[index]
        return self.transform(image), label


def normalization(
    data: Data, mean: Sequence[float], std: Sequence[float]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The spec's `data.mean`/`data.std` where given, else the data set's own values."""
    return tuple(data.mean or mean), tuple(data.std or std)


def in_memory_splits(
    data: Data,
    info: DatasetInfo,
    kept: tuple[np.ndarray, np.ndarray],
    held: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    transform: BatchTransform,
) -> Splits:
    """Splits of raw in-memory images, (images, labels) each, made ready on the device by
    `transform` (its augmentation dropped when `data.augment` is off)."""
    if not data.augment:
        transform = BatchTransform(transform.scale, transform.mean, transform.std)
    train = Images(*kept)
    return Splits(info, train, train, Images(*held), Images(*test), transform)
