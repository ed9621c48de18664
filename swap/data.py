"""Data sets by name: train/val/test splits as in-memory datasets, and their loaders.

Run: python -c "from swap.data import load_splits; print(load_splits('digits'))"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

Transform = Callable[[torch.Tensor], torch.Tensor]

# The held-out splits never depend on a job's seed, so runs with different seeds are compared
# on the same test and validation examples.
SPLIT_SEED = 0


@dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    channels: int
    image_size: int


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
    """Images held as one tensor in memory, with an optional per-example transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Transform | None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


def load_digits_splits(augment: bool, val_fraction: float) -> Splits:
    """scikit-learn's 8x8 handwritten digits (1,797 images), 20% kept as a fixed test set."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.from_numpy((bunch.images / 16.0).astype(np.float32)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    index = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        index, test_size=0.2, random_state=SPLIT_SEED, stratify=bunch.target
    )
    val_idx = np.array([], dtype=np.int64)
    if val_fraction > 0:
        train_idx, val_idx = train_test_split(
            train_idx,
            test_size=val_fraction,
            random_state=SPLIT_SEED,
            stratify=bunch.target[train_idx],
        )
    # Normalize with the training split's own statistics; the test set never informs them.
    mean, std = images[train_idx].mean().item(), images[train_idx].std().item()

    def split(idx: np.ndarray, transform: Transform | None = None) -> Images:
        idx = torch.from_numpy(idx)
        if transform is None:
            return Images((images[idx] - mean) / std, labels[idx], None)
        return Images(images[idx], labels[idx], transform)

    train_transform = _shift_and_normalize(mean, std) if augment else None
    return Splits(
        info=DATASETS["digits"],
        train=split(train_idx, train_transform),
        train_plain=split(train_idx),
        val=split(val_idx),
        test=split(test_idx),
    )


def _shift_and_normalize(mean: float, std: float) -> Transform:
    """Translate by up to one pixel (the 8x8 analogue of CIFAR's 4-pixel pad-and-crop)."""
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomCrop(8, padding=1), v2.Normalize([mean], [std])])


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(num_classes=10, channels=1, image_size=8),
}
_LOADERS = {"digits": load_digits_splits}


def load_splits(dataset: str, augment: bool = True, val_fraction: float = 0.1) -> Splits:
    return _LOADERS[dataset](augment=augment, val_fraction=val_fraction)


def loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    sampler: Sampler | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """A loader over `dataset`: in order, shuffled by its own seeded generator, or by `sampler`.

    A private generator (not the global RNG) makes each worker's data order a function of its
    seed alone.
    """
    generator = None
    if shuffle_seed is not None:
        generator = torch.Generator().manual_seed(shuffle_seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle_seed is not None,
        sampler=sampler,
        generator=generator,
        pin_memory=pin_memory,
    )
