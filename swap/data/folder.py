"""Image folders (torchvision's ImageFolder: one sub-folder per class), e.g. ImageNet.

Run: python -c "from swap.data.folder import folder_info; help(folder_info)"
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import find_classes
from torchvision.transforms import v2

from swap.catalog import IMAGEFOLDER_RESIZE_RATIO, IMAGEFOLDER_SIZE
from swap.data.common import DatasetInfo, Splits, Transform, Transformed, normalization
from swap.data.holdout import holdout
from swap.errors import SwapError
from swap.spec import Data

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def folder_classes(data: Data, field: str) -> list[str]:
    """The class names (sub-folder names) under `data.<field>`; a SwapError names the field."""

    folder = Path(getattr(data, field))
    if not folder.is_dir():
        raise SwapError(f"data.{field}: {folder} is not a folder")
    try:
        classes, _ = find_classes(str(folder))
    except FileNotFoundError:
        raise SwapError(f"data.{field}: {folder} has no class sub-folders") from None
    return classes


def ensure_folders(data: Data) -> None:
    """Both folders exist and hold the same classes (a label means the same in both)."""
    train, test = folder_classes(data, "train_dir"), folder_classes(data, "test_dir")
    if train != test:
        only = sorted(set(train) ^ set(test))[0]  # the lists are sorted: the sets differ
        raise SwapError(
            f"data.test_dir: its class folders differ from data.train_dir's "
            f"({len(test)} vs {len(train)} classes; {only!r} is in only one)"
        )


def folder_info(data: Data) -> DatasetInfo:
    size = data.image_size or IMAGEFOLDER_SIZE
    return DatasetInfo(len(folder_classes(data, "train_dir")), channels=3, image_size=size)


def load_folder_splits(data: Data) -> Splits:
    """One scan of each folder; the training examples are decoded lazily, per example, in the
    loader's workers, under a random-resized crop and flip (or the test-time resize and crop)."""

    ensure_folders(data)
    try:
        train = ImageFolder(str(data.train_dir))
        test = ImageFolder(str(data.test_dir))
    except (FileNotFoundError, OSError) as exc:  # e.g. a class folder with no image files
        raise SwapError(f"data.train_dir/test_dir: cannot use the folders: {exc}") from None
    kept, held = holdout(np.arange(len(train)), np.asarray(train.targets), data.val_fraction)
    plain, augmented = folder_transforms(data)
    kept_train = Subset(train, kept.tolist())
    return Splits(
        info=folder_info(data),
        train=Transformed(kept_train, augmented if data.augment else plain),
        train_plain=Transformed(kept_train, plain),
        val=Transformed(Subset(train, held.tolist()), plain),
        test=Transformed(test, plain),
    )


def folder_transforms(data: Data) -> tuple[Transform, Transform]:
    """(test-time, training) transforms of a PIL image: the standard ImageNet ones.

    Test time: resize the shorter side to `data.resize` (null: 8/7 of the crop), crop the
    centre `data.image_size` square. Training: a random crop of 8-100% of the area at 3/4-4/3
    aspect, resized to `data.image_size`, and a horizontal flip.
    """

    size = data.image_size or IMAGEFOLDER_SIZE
    resize = data.resize or round(size * IMAGEFOLDER_RESIZE_RATIO)
    mean, std = normalization(data, IMAGENET_MEAN, IMAGENET_STD)
    to_tensor = normalize_to_float(mean, std)
    plain = v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(size), to_tensor])
    augmented = v2.Compose(
        [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(), to_tensor]
    )
    return plain, augmented


def normalize_to_float(channels_mean: Sequence[float], channels_std: Sequence[float]) -> Transform:
    """PIL image -> float32 in [0, 1] -> normalized per channel."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(channels_mean), list(channels_std)),
            v2.ToPureTensor(),
        ]
    )
