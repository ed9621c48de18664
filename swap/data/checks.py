"""The data, checked once in the driver before any run directory or Ray work: every split is
non-empty, its labels are integers in 0..classes-1, its images finite and of one shape.

Run: python -c "from swap.data.checks import check_splits; help(check_splits)"

Vectorized over what a data set holds in arrays (swap's in-memory sets, a TensorDataset, a
`targets` attribute, an image folder's list of labels): one pass of numpy or torch per split,
no example decoded (bench/data_checks.py times it at CIFAR-10's size). A data set that exposes
neither arrays nor `targets` is checked on its first SAMPLE examples only: a label or value
beyond them is found when training meets it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from swap.data.common import Images, Splits, Transformed
from swap.errors import SwapError

SAMPLE = 1024  # examples looked at in a data set that exposes no arrays


@dataclass
class Contents:
    """What a split holds, as far as it can be seen without decoding its examples: labels (all
    of them, or of the first SAMPLE), whether each example's values are finite (None: not
    known before decoding), the shape of one example, and each example's position in the data
    set it was taken from (a Subset's indices)."""

    labels: np.ndarray
    finite: np.ndarray | None
    shape: tuple[int, ...] | None
    sampled: bool = False
    positions: np.ndarray | None = None

    def where(self) -> np.ndarray:
        return self.positions if self.positions is not None else np.arange(len(self.labels))


def check_splits(splits: Splits, dataset: str, val_expected: bool) -> dict[str, Any]:
    """Raise a SwapError with one line per problem found in data set `dataset`'s `splits`, or
    return what results.json records of the data: sizes, classes, and the validation split's
    chance accuracy (the share of its most common class: what a constant guess scores).

    Problems are named by the data set's own sets, train and test: the validation split is
    held out of the training set, and a bad example's index is its place there."""
    classes = splits.info.num_classes
    sets = {"train": [splits.train_plain, splits.val], "test": [splits.test]}
    problems, found, shapes, seen = [], {}, {}, {}
    for name, views in sets.items():
        try:
            parts = [contents_of(view, seen) for view in views if len(view)]  # type: ignore[arg-type]
        except Exception as exc:  # the user's __getitem__, a label that is not a number
            problems.append(
                f"data.dataset {dataset}: cannot read the {name} set ({type(exc).__name__}: {exc})"
            )
            continue
        if not parts:
            problems.append(f"data.dataset {dataset}: the {name} set is empty")
            continue
        found[name] = parts[0]
        shapes[name] = next((p.shape for p in parts if p.shape is not None), None)
        labels = np.concatenate([p.labels for p in parts])
        where = np.concatenate([p.where() for p in parts])
        problems += [f"data.dataset {dataset}: {name} {p}" for p in label_problems(labels, classes)]
        if all(p.finite is not None for p in parts):
            finite = np.concatenate([p.finite for p in parts])
            if not finite.all():
                bad = np.sort(where[~finite])
                problems.append(
                    f"data.dataset {dataset}: {name} images {_few(bad)} hold NaN or infinite "
                    f"values ({len(bad)} of {len(finite)} images)"
                )
    if len({shape for shape in shapes.values() if shape is not None}) > 1:
        described = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        problems.append(f"data.dataset {dataset}: its sets' images differ in shape: {described}")
    if val_expected and "train" in found and not len(splits.val):  # type: ignore[arg-type]
        problems.append(f"data.dataset {dataset}: data.val_fraction holds out no example")
    if problems:
        raise SwapError("\n".join(problems))
    val = contents_of(splits.val, seen) if len(splits.val) else None  # type: ignore[arg-type]
    return {
        "classes": classes,
        "examples": {
            "train": len(splits.train),  # type: ignore[arg-type]
            "validation": len(splits.val),  # type: ignore[arg-type]
            "test": len(splits.test),  # type: ignore[arg-type]
        },
        "chance_val_accuracy": chance(val.labels) if val is not None else None,
    }


def label_problems(labels: np.ndarray, classes: int) -> list[str]:
    if labels.dtype.kind not in "iu":
        return [f"labels are {labels.dtype} values, expected integers (class indices)"]
    outside = np.unique(labels[(labels < 0) | (labels >= classes)])
    if not len(outside):
        return []
    values = " and ".join(str(v) for v in outside[:5]) + (" ..." if len(outside) > 5 else "")
    return [f"labels {values} are outside 0..{classes - 1} ({classes} classes)"]


def chance(labels: np.ndarray) -> float:
    """The accuracy of always guessing the most common class of `labels`."""
    return float(np.bincount(labels.astype(np.int64)).max() / len(labels))


def contents_of(dataset: Dataset, seen: dict[int, Contents] | None = None) -> Contents:
    """A split's Contents, vectorized where the data set holds arrays. `seen`: the Contents of
    data sets already looked at (by id), so that splits of one data set read it once."""
    seen = {} if seen is None else seen
    if id(dataset) not in seen:
        seen[id(dataset)] = _contents(dataset, seen)
    return seen[id(dataset)]


def _contents(dataset: Dataset, seen: dict[int, Contents]) -> Contents:
    if isinstance(dataset, Subset):
        inner = contents_of(dataset.dataset, seen)
        if inner.sampled:
            return sampled(dataset)
        index = np.asarray(dataset.indices, dtype=np.int64)
        finite = inner.finite[index] if inner.finite is not None else None
        return Contents(inner.labels[index], finite, inner.shape, positions=inner.where()[index])
    if isinstance(dataset, Images):
        return Contents(np.asarray(dataset.labels), _finite(dataset.images), _shape(dataset.images))
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        images, labels = dataset.tensors
        return Contents(_array(labels), _finite(images), _shape(images))
    if isinstance(dataset, Transformed):  # decoded lazily (image files): labels only
        inner = contents_of(dataset.dataset, seen)
        return Contents(inner.labels, None, None, inner.sampled, inner.positions)
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):  # type: ignore[arg-type]
        return Contents(_array(targets), None, None)
    return sampled(dataset)


def sampled(dataset: Dataset) -> Contents:
    """Contents of the first SAMPLE examples of a data set that exposes no arrays."""
    count = min(SAMPLE, len(dataset))  # type: ignore[arg-type]
    examples = [dataset[i] for i in range(count)]
    images = [torch.as_tensor(image) for image, _ in examples]
    labels = np.asarray([_label(label) for _, label in examples])
    finite = np.asarray([bool(torch.isfinite(image).all()) for image in images])
    return Contents(labels, finite, tuple(images[0].shape) if images else None, sampled=True)


def _label(label: Any) -> Any:
    return label.item() if isinstance(label, (torch.Tensor, np.ndarray)) else label


def _array(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _finite(images: Any) -> np.ndarray | None:
    """Per example, whether all its values are finite: integer pixels always are."""
    if isinstance(images, np.ndarray):
        if images.dtype.kind in "iub":
            return np.ones(len(images), dtype=bool)
        return _finite(torch.from_numpy(images))
    if isinstance(images, torch.Tensor):
        if not images.is_floating_point():
            return np.ones(len(images), dtype=bool)
        # A NaN or infinity makes its example's sum non-finite: one reading pass, no mask of
        # the data's size. A sum that overflowed from finite values is looked at again.
        flat = images.reshape(len(images), -1)
        finite = torch.isfinite(flat.sum(dim=1))
        suspects = torch.nonzero(~finite).flatten()
        if len(suspects):
            finite[suspects] = torch.isfinite(flat[suspects]).all(dim=1)
        return finite.cpu().numpy()
    return None


def _shape(images: Any) -> tuple[int, ...] | None:
    return tuple(images.shape[1:]) if len(images) else None


def _few(indices: np.ndarray) -> str:
    shown = ", ".join(str(i) for i in indices[:3])
    return f"{shown}, ..." if len(indices) > 3 else shown
