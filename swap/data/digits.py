"""scikit-learn's bundled 8x8 handwritten digits: no download, in memory, the quickstart's data.

Run: python -c "import swap.data.registry as r, swap.spec as s; print(r.load_splits(s.Data()))"
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from swap.data.augment import BatchTransform
from swap.data.common import Splits, builtin_info, in_memory_splits
from swap.data.holdout import SPLIT_SEED, holdout
from swap.spec import Data

INFO = builtin_info("digits")
LEVELS = 16  # the digits' pixels are counts 0..16 of a 4x4 block's set pixels


def load_digits_splits(data: Data) -> Splits:
    """1,797 images; 20% kept as a fixed stratified test set, `data.val_fraction` of the rest
    held out for validation. Augmentation: a shift of up to one pixel (the 8x8 analogue of
    CIFAR's 4-pixel pad-and-crop)."""
    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[:, None]  # N x 1 x 8 x 8
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.2, random_state=SPLIT_SEED, stratify=labels
    )
    train_idx, val_idx = holdout(train_idx, labels[train_idx], data.val_fraction)
    # Normalized with the training split's own statistics (the test set never informs them),
    # unless the spec gives its own.
    pixels = images[train_idx].astype(np.float32) / LEVELS
    mean = data.mean[0] if data.mean else float(pixels.mean())
    std = data.std[0] if data.std else float(pixels.std(ddof=1))
    transform = BatchTransform(1 / LEVELS, (mean,), (std,), pad=1)

    def split(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return images[idx], labels[idx]

    return in_memory_splits(
        data, INFO, split(train_idx), split(val_idx), split(test_idx), transform
    )
