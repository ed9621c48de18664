"""Tiny data sets written in each real on-disk format, for loading tests and end-to-end runs.

Run: imported by tests/unit/test_datasets.py and tests/integration/test_recipes.py.

Image k of a split is one flat colour: every pixel of channel c holds `pixel(k, c)`, and its
label is `k % classes`, so a test can compute what loading must produce.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def pixel(k: int, channel: int = 0) -> int:
    return (37 * k + 80 * channel + 11) % 256


def images_chw(n: int, channels: int, size: int, offset: int = 0) -> np.ndarray:
    """n flat-colour images, N x C x H x W uint8; image k is `pixel(offset + k, c)`."""
    values = np.array([[pixel(offset + k, c) for c in range(channels)] for k in range(n)])
    return np.broadcast_to(values[:, :, None, None], (n, channels, size, size)).astype(np.uint8)


def labels(n: int, classes: int, offset: int = 0) -> list[int]:
    return [(offset + k) % classes for k in range(n)]


def _pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the real files are Python 2 pickles


def write_cifar10(root: Path, per_batch: int = 8, test: int = 20) -> Path:
    """`cifar-10-batches-py/`: five training batches, `test_batch`, `batches.meta`."""
    folder = root / "cifar-10-batches-py"
    for b in range(5):
        offset = b * per_batch
        _pickle(
            folder / f"data_batch_{b + 1}",
            {
                "batch_label": f"training batch {b + 1} of 5",
                "labels": labels(per_batch, 10, offset),
                "data": images_chw(per_batch, 3, 32, offset).reshape(per_batch, 3072),
                "filenames": [f"img_{offset + k}.png" for k in range(per_batch)],
            },
        )
    _pickle(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": labels(test, 10, 1000),
            "data": images_chw(test, 3, 32, 1000).reshape(test, 3072),
            "filenames": [f"test_{k}.png" for k in range(test)],
        },
    )
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    _pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch})
    return root


def write_cifar100(root: Path, train: int = 40, test: int = 20) -> Path:
    """`cifar-100-python/`: `train`, `test` and `meta`, with fine and coarse labels."""
    folder = root / "cifar-100-python"
    for name, n, offset in (("train", train, 0), ("test", test, 1000)):
        fine = labels(n, 100, offset)
        _pickle(
            folder / name,
            {
                "filenames": [f"{name}_{k}.png" for k in range(n)],
                "batch_label": f"{name}ing batch 1 of 1",
                "fine_labels": fine,
                "coarse_labels": [f // 5 for f in fine],
                "data": images_chw(n, 3, 32, offset).reshape(n, 3072),
            },
        )
    meta = {
        "fine_label_names": [f"class_{i}" for i in range(100)],
        "coarse_label_names": [f"super_{i}" for i in range(20)],
    }
    _pickle(folder / "meta", meta)
    return root


def write_idx(path: Path, array: np.ndarray, gzipped: bool = False) -> None:
    """An IDX file (MNIST's format): magic 0x0000 0x08 (uint8) ndim, big-endian sizes, data;
    gzipped (name + ".gz") as the original distribution and Debian's package ship them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gzipped:
        Path(f"{path}.gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_mnist(
    root: Path, folder: str = "MNIST", train: int = 30, test: int = 12, flat_gz: bool = False
) -> Path:
    """The four IDX files: uncompressed in `<folder>/raw/` (torchvision's layout), or with
    `flat_gz` gzipped in `root` itself (Debian's dataset-fashion-mnist layout)."""
    raw = root if flat_gz else root / folder / "raw"
    for prefix, n, offset in (("train", train, 0), ("t10k", test, 1000)):
        images = images_chw(n, 1, 28, offset)[:, 0]
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, gzipped=flat_gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.array(labels(n, 10, offset)), flat_gz)
    return root


def write_svhn(root: Path, train: int = 30, test: int = 12) -> Path:
    """`train_32x32.mat` / `test_32x32.mat`: X is 32 x 32 x 3 x N, y is N x 1 with 0 as 10."""
    import scipy.io

    root.mkdir(parents=True, exist_ok=True)
    for name, n, offset in (("train", train, 0), ("test", test, 1000)):
        x = np.transpose(images_chw(n, 3, 32, offset), (2, 3, 1, 0))  # N,C,H,W -> H,W,C,N
        y = np.array(labels(n, 10, offset)).reshape(n, 1)
        y[y == 0] = 10
        scipy.io.savemat(root / f"{name}_32x32.mat", {"X": x, "y": y.astype(np.uint8)})
    return root


def write_image_folder(root: Path, classes: list[str], per_class: int, size=(40, 30)) -> Path:
    """`root/<class>/<i>.png`: RGB PNGs, flat colours as above (image k = class index * 100 + i)."""
    from PIL import Image

    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            k = c * 100 + i
            colour = tuple(pixel(k, ch) for ch in range(3))
            Image.new("RGB", size, colour).save(root / name / f"{i}.png")
    return root
