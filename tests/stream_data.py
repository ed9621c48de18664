"""Data sets written where a streamed job reads them: scikit-learn's digits as Parquet shards of
PNG images, and as PNG files in class folders, in a local folder or a bucket.

Run: imported by the tests of streamed data sets (tests/integration/test_streamed.py).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from swap.data.digits import load_digits_splits
from swap.spec import Data


def digits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The digits as swap splits them (no validation split): uint8 1 x 8 x 8 images, labels."""
    splits = load_digits_splits(Data(augment=False, val_fraction=0))
    return {
        "train": (splits.train.images, splits.train.labels),
        "test": (splits.test.images, splits.test.labels),
    }


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((image[0] * 15).astype(np.uint8)).save(buffer, format="PNG")  # 0..16 -> 0..240
    return buffer.getvalue()


def write_parquet(root: Path, shards: int = 3, **replace) -> dict[str, Path]:
    """The digits as `shards` Parquet files per split under root/train, root/test, with an
    `image` column of PNG bytes and a `label` column. `replace`: {"train:label": array, ...}
    overrides a column, for bad data."""
    folders = {}
    for split, (images, labels) in digits().items():
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        columns = {"image": [png(i) for i in images], "label": labels.astype(np.int64)}
        for key, value in replace.items():
            if key.startswith(f"{split}:"):
                columns[key.split(":")[1]] = value
        table = pa.table(columns)
        for k, part in enumerate(np.array_split(np.arange(len(labels)), shards)):
            pq.write_table(table.take(part), folder / f"part-{k}.parquet")
        folders[split] = folder
    return folders


def write_images(root: Path, limit: int | None = None) -> dict[str, Path]:
    """The digits as PNG files, root/<split>/<class>/<n>.png (the first `limit` of each split:
    a test server answers some 150 requests a second)."""
    folders = {}
    for split, (images, labels) in digits().items():
        pairs = list(zip(images, labels, strict=True))[:limit]
        for n, (image, label) in enumerate(pairs):
            folder = root / split / f"digit-{label}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{n}.png").write_bytes(png(image))
        folders[split] = root / split
    return folders
