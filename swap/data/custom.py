"""A user's own data set: `data.dataset: "package.module:function"` returning (train, test).

Run: python -c "from swap.data.custom import load_custom_splits; help(load_custom_splits)"

The function is called with the keywords it names among `root` (data.root) and `augment`
(data.augment, then False for the un-augmented copy the BN refresh uses). It returns two
map-style datasets whose examples are (image tensor C x H x W, integer label), already
normalized: swap adds no transform of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from swap.data.common import DatasetInfo, Splits
from swap.data.holdout import holdout
from swap.errors import SwapError
from swap.spec import Data
from swap.user_code import call_with_accepted, import_function


def custom_datasets(data: Data, augment: bool) -> tuple[Dataset, Dataset]:
    """Call the user's function and check what it returned; SwapError names data.dataset."""
    try:
        function = import_function(data.dataset)
    except ValueError as exc:
        raise SwapError(f"data.dataset: {exc} (got {data.dataset!r})") from None
    with users_code(data):
        result = call_with_accepted(function, {}, root=data.root, augment=augment)
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise SwapError(
            f"data.dataset: {data.dataset} must return (train, test) datasets, "
            f"got {_describe(result)}"
        )
    for name, dataset in zip(("train", "test"), result, strict=True):
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise SwapError(
                f"data.dataset: {data.dataset} returned a {name} set that is not a map-style "
                f"dataset (no __getitem__/__len__): {_describe(dataset)}"
            )
        if len(dataset) == 0:
            raise SwapError(f"data.dataset: {data.dataset} returned an empty {name} set")
    with users_code(data):
        _check_example(data.dataset, result[0])
    return result[0], result[1]


@contextlib.contextmanager
def users_code(data: Data) -> Iterator[None]:
    """An exception from the user's function or data set, named as theirs in one line (its
    type and message); the CLI shows its traceback with --verbose."""
    try:
        yield
    except SwapError:
        raise
    except Exception as exc:
        first = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise SwapError(
            f"data.dataset: {data.dataset} raised {first} (swap run --verbose: its traceback)"
        ) from exc


def custom_info(data: Data, train: Dataset | None = None) -> DatasetInfo:
    """Channels and size from the first training example; classes from the data set's
    `classes` or `targets`, else from every label (one pass over the training set)."""
    if train is None:
        train, _ = custom_datasets(data, augment=False)
    image, _ = train[0]
    return DatasetInfo(num_classes(train), channels=image.shape[0], image_size=image.shape[-1])


def load_custom_splits(data: Data) -> Splits:
    train, test = custom_datasets(data, augment=data.augment)
    plain = train  # with data.augment on, the spec checked that the function takes `augment`
    if data.augment:
        plain, _ = custom_datasets(data, augment=False)
    with users_code(data):
        labels = _targets(train)
        kept, held = holdout(np.arange(len(train)), labels, data.val_fraction)
        info = custom_info(data, plain)
    return Splits(
        info=info,
        train=Subset(train, kept.tolist()),
        train_plain=Subset(plain, kept.tolist()),
        val=Subset(plain, held.tolist()),
        test=test,
    )


def num_classes(dataset: Dataset) -> int:
    classes = getattr(dataset, "classes", None)
    if classes is not None:
        return len(classes)
    labels = _targets(dataset)
    if labels is None:
        labels = np.asarray([int(dataset[i][1]) for i in range(len(dataset))])
    return int(labels.max()) + 1


def _targets(dataset: Dataset) -> np.ndarray | None:
    """Every label without loading any image, when the data set exposes them."""
    targets = getattr(dataset, "targets", None)
    if targets is None and isinstance(getattr(dataset, "tensors", None), tuple):
        targets = dataset.tensors[1]  # a TensorDataset(images, labels)
    if targets is None:
        return None
    return np.asarray(targets.tolist() if isinstance(targets, torch.Tensor) else targets)


def _check_example(reference: str, dataset: Dataset) -> None:
    example = dataset[0]
    ok = isinstance(example, (tuple, list)) and len(example) == 2
    if ok:
        image, label = example
        ok = isinstance(image, torch.Tensor) and image.dim() == 3
        ok = ok and (isinstance(label, (int, np.integer)) or _scalar_tensor(label))
    if not ok:
        raise SwapError(
            f"data.dataset: {reference}: a training example must be (C x H x W tensor, "
            f"integer label), got {_describe(example)}"
        )


def _scalar_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point()


def _describe(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        inner = ", ".join(_describe(v) for v in value[:3])
        return f"{type(value).__name__} of {len(value)} ({inner})"
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)}"
    return type(value).__name__
