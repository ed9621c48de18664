"""torchvision's file-backed data sets (CIFAR-10/100, MNIST, Fashion-MNIST, SVHN), held in memory.

Run: python -c "from swap.data.files import FILE_DATASETS; print(sorted(FILE_DATASETS))"
"""

from __future__ import annotations

import gzip
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from filelock import FileLock

from swap.catalog import DATASETS
from swap.data.augment import BatchTransform
from swap.data.common import DatasetInfo, Splits, builtin_info, in_memory_splits, normalization
from swap.data.holdout import holdout
from swap.errors import SwapError
from swap.spec import Data

Reader = Callable[[Path, bool], tuple[np.ndarray, np.ndarray]]  # (root, train) -> images, labels


@dataclass(frozen=True)
class FileDataset:
    """Where a data set's files live under `data.root`, how to read them, and how torchvision
    downloads them. Each file is looked for in torchvision's layout and, flat, in data.root
    itself, gzipped or not (`find`): Debian's dataset-fashion-mnist package, for one, installs
    /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz and its three siblings."""

    name: str  # its swap.catalog entry holds its classes, shape, sizes and augmentation
    files: tuple[str, ...]  # every file a load reads, in torchvision's layout under data.root
    mean: tuple[float, ...]  # per-channel mean of the training images, in [0, 1] units
    std: tuple[float, ...]  # per-channel standard deviation, same units
    read: Reader
    download: Callable[[Path], None]

    @property
    def info(self) -> DatasetInfo:
        return builtin_info(self.name)


# torchvision's classes check every file's MD5 on every construction; swap reads the (simple,
# documented) formats itself, once per job, and uses torchvision only to download.


def find(root: Path, name: str) -> Path | None:
    """The file `name` (torchvision's layout under `root`) as it is there: at that path or flat
    in `root`, as it is or gzipped; None if it is nowhere."""
    flat = name.rpartition("/")[2]
    for candidate in (name, f"{name}.gz", flat, f"{flat}.gz"):
        if (root / candidate).is_file():
            return root / candidate
    return None


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _located(root: Path, name: str) -> Path:
    path = find(root, name)
    if path is None:
        raise FileNotFoundError(f"{name} is not under {root}")
    return path


def read_cifar(
    root: Path,
    train: bool,
    *,
    folder: str,
    batches: tuple[list[str], list[str]],
    label_key: str,
    meta: tuple[str, str],
    num_classes: int,
):
    """CIFAR's pickled batches: `data` is N x 3072 uint8 (RGB planes of 32x32), labels a list."""
    images, labels = [], []
    for name in batches[0] if train else batches[1]:
        entry = _unpickle(_located(root, f"{folder}/{name}"))
        images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry[label_key])  # "labels" (CIFAR-10) or "fine_labels" (CIFAR-100)
    names = _unpickle(_located(root, f"{folder}/{meta[0]}"))[meta[1]]
    if len(names) != num_classes:
        raise ValueError(f"{meta[0]} lists {len(names)} classes, not {num_classes}")
    return np.concatenate(images), np.asarray(labels, dtype=np.int64)


def _unpickle(path: Path) -> dict[str, Any]:
    # The data set's own format is pickle (torchvision reads it the same way): a root holds
    # files the user trusts, like any code they run.
    with _open(path) as f:
        return pickle.load(f, encoding="latin1")


def read_mnist(root: Path, train: bool, *, class_name: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-format IDX files: `<root>/<class_name>/raw/` (torchvision's layout) or flat."""
    prefix = "train" if train else "t10k"
    images = read_idx(_located(root, f"{class_name}/raw/{prefix}-images-idx3-ubyte"))
    labels = read_idx(_located(root, f"{class_name}/raw/{prefix}-labels-idx1-ubyte"))
    return images[:, None], labels.astype(np.int64)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (LeCun's MNIST format): magic 0x0000 08 D, then D
    big-endian int32 sizes, then the data."""
    with _open(path) as f:
        data = f.read()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path.name} is not an IDX file of unsigned bytes")
    dims = data[3]
    shape = tuple(int(n) for n in np.frombuffer(data, ">i4", count=dims, offset=4))
    values = np.frombuffer(data, np.uint8, offset=4 + 4 * dims)
    if values.size != int(np.prod(shape)):
        raise ValueError(f"{path.name} holds {values.size} bytes for a {shape} array")
    return values.reshape(shape)


def read_svhn(root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """SVHN's MATLAB files: X is 32 x 32 x 3 x N uint8, y is N x 1 with the digit 0 stored as 10."""

    mat = scipy.io.loadmat(_located(root, "train_32x32.mat" if train else "test_32x32.mat"))
    images = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)))  # as torchvision does
    labels = mat["y"].astype(np.int64).reshape(-1)
    labels[labels == 10] = 0
    return images, labels


def download_with(class_name: str, *calls: dict[str, Any]) -> Callable[[Path], None]:
    """Download by constructing torchvision's class with `download=True` (it verifies MD5s)."""

    def download(root: Path) -> None:
        from torchvision import datasets  # torchvision (and its 1.5 s import): only to download

        for kwargs in calls:
            getattr(datasets, class_name)(str(root), download=True, **kwargs)

    return download


def _cifar(
    name: str,
    folder: str,
    train: list[str],
    test: list[str],
    meta: tuple[str, str],
    label_key: str,
    classes: int,
    **stats: tuple[float, ...],
) -> FileDataset:
    read = partial(
        read_cifar,
        folder=folder,
        batches=(train, test),
        label_key=label_key,
        meta=meta,
        num_classes=classes,
    )
    return FileDataset(
        name=name,
        files=tuple(f"{folder}/{f}" for f in [*train, *test, meta[0]]),
        read=read,
        download=download_with(name.upper(), {"train": True}),  # CIFAR10, CIFAR100
        **stats,
    )


def _mnist_like(name: str, class_name: str, mean: float, std: float) -> FileDataset:
    stems = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    return FileDataset(
        name=name,
        files=tuple(f"{class_name}/raw/{stem}" for stem in stems),
        mean=(mean,),
        std=(std,),
        read=partial(read_mnist, class_name=class_name),
        download=download_with(class_name, {"train": True}),  # fetches both splits
    )


# Means and standard deviations are each training set's per-channel statistics, as commonly
# published (CIFAR: over Krizhevsky's 50,000 training images; MNIST: 0.1307 and 0.3081).
FILE_DATASETS: dict[str, FileDataset] = {
    "cifar10": _cifar(
        name="cifar10",
        folder="cifar-10-batches-py",
        train=[f"data_batch_{i}" for i in range(1, 6)],
        test=["test_batch"],
        meta=("batches.meta", "label_names"),
        label_key="labels",
        classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": _cifar(
        name="cifar100",
        folder="cifar-100-python",
        train=["train"],
        test=["test"],
        meta=("meta", "fine_label_names"),
        label_key="fine_labels",
        classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
    "mnist": _mnist_like("mnist", "MNIST", 0.1307, 0.3081),
    "fashion_mnist": _mnist_like("fashion_mnist", "FashionMNIST", 0.2860, 0.3530),
    "svhn": FileDataset(
        name="svhn",
        files=("train_32x32.mat", "test_32x32.mat"),
        mean=(0.4377, 0.4438, 0.4728),
        std=(0.1980, 0.2010, 0.1970),
        read=read_svhn,
        download=download_with("SVHN", {"split": "train"}, {"split": "test"}),
    ),
}


def ensure_files(dataset: FileDataset, data: Data) -> None:
    """Return if every file is under `data.root`; download them if `data.download`; else raise
    the one error that says where swap looked and the two ways to fix it."""
    root = Path(data.root)
    if not _missing(dataset, root):
        return
    if not data.download:
        missing = _missing(dataset, root)
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise SwapError(
            f"data set {dataset.name}: files not found under data.root {root} (missing "
            f"{missing[0]}{more}); set data.root to the folder that holds them, or set "
            f"data.download: true to download them there"
        )

    try:
        root.mkdir(parents=True, exist_ok=True)
        # Ranks and workers on one node share the root: one downloads, the others wait.
        with FileLock(str(root / f".swap-{dataset.name}.lock")):
            if _missing(dataset, root):
                print(f"swap: downloading {dataset.name} into {root}", file=sys.stderr)
                dataset.download(root)
    except Exception as exc:  # network, disk and checksum errors all end here
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SwapError(
            f"data set {dataset.name}: downloading into data.root {root} failed ({reason}); "
            f"put the files there yourself and set data.download: false"
        ) from None
    if _missing(dataset, root):
        raise SwapError(
            f"data set {dataset.name}: still missing {_missing(dataset, root)[0]} "
            f"under data.root {root} after the download"
        )


def _missing(dataset: FileDataset, root: Path) -> list[str]:
    return [name for name in dataset.files if find(root, name) is None]


def load_file_splits(dataset: FileDataset, data: Data) -> Splits:
    """Both splits as uint8 arrays in memory; conversion, augmentation and normalization happen
    a batch at a time on the training device (swap.data.augment)."""
    ensure_files(dataset, data)
    train_images, train_labels = _read(dataset, Path(data.root), train=True)
    test_images, test_labels = _read(dataset, Path(data.root), train=False)
    kept, held = holdout(np.arange(len(train_labels)), train_labels, data.val_fraction)
    mean, std = normalization(data, dataset.mean, dataset.std)
    kind = DATASETS[dataset.name].augmentation  # 4-pixel pad-and-crop, with flips for CIFAR
    transform = BatchTransform(1 / 255, mean, std, pad=4 if kind != "none" else 0,
                               flip=kind == "crop_flip")  # fmt: skip
    return in_memory_splits(
        data,
        dataset.info,
        (train_images[kept], train_labels[kept]),
        (train_images[held], train_labels[held]),
        (test_images, test_labels),
        transform,
    )


def _read(dataset: FileDataset, root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    split = "training" if train else "test"
    try:
        images, labels = dataset.read(root, train)
    except SwapError:
        raise
    except Exception as exc:  # unpickling, format and shape errors of a damaged or foreign file
        raise SwapError(
            f"data set {dataset.name}: cannot read its {split} files under data.root {root} "
            f"({type(exc).__name__}: {exc})"
        ) from None
    info = dataset.info
    expected = (info.channels, info.image_size, info.image_size)
    if images.shape[1:] != expected or len(images) != len(labels):
        raise SwapError(
            f"data set {dataset.name}: {split} images under {root} have shape "
            f"{images.shape[1:]} and {len(labels)} labels; expected {expected}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise SwapError(
            f"data set {dataset.name}: {split} labels under {root} are outside "
            f"0..{info.num_classes - 1}"
        )
    return images, labels
