"""scikit-learn's bundled 8x8 handwritten digits: no download, in memory, the quickstart's data.

Run: python -c "import swap.data as d, swap.spec as s; print(d.load_splits(s.Data()))"
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torchvision.transforms import v2

from swap.data.common import SPLIT_SEED, Images, Splits, Transform, builtin_info, holdout
from swap.spec import Data

INFO = builtin_info("digits")


def load_digits_splits(data: Data) -> Splits:
    """1,797 images; 20% kept as a fixed stratified test set, `data.val_fraction` of the rest
    held out for validation."""

    bunch = load_digits()
    images = torch.from_numpy((bunch.images / 16.0).astype(np.float32)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    index = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        index, test_size=0.2, random_state=SPLIT_SEED, stratify=bunch.target
    )
    train_idx, val_idx = holdout(train_idx, bunch.target[train_idx], data.val_fraction)
    # Normalize with the training split's own statistics (the test set never informs them),
    # unless the spec gives its own.
    mean = data.mean[0] if data.mean else images[train_idx].mean().item()
    std = data.std[0] if data.std else images[train_idx].std().item()

    def split(idx: np.ndarray, transform: Transform | None = None) -> Images:
        idx = torch.from_numpy(idx)
        if transform is None:
            return Images((images[idx] - mean) / std, labels[idx], None)
        return Images(images[idx], labels[idx], transform)

    train_transform = _shift_and_normalize(mean, std) if data.augment else None
    return Splits(
        info=INFO,
        train=split(train_idx, train_transform),
        train_plain=split(train_idx),
        val=split(val_idx),
        test=split(test_idx),
    )


def _shift_and_normalize(mean: float, std: float) -> Transform:
    """Translate by up to one pixel (the 8x8 analogue of CIFAR's 4-pixel pad-and-crop)."""

    return v2.Compose([v2.RandomCrop(8, padding=1), v2.Normalize([mean], [std])])
