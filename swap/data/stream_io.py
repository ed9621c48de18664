"""What the driver learns of a streamed data set before any Ray work on it, and what reading one
can go wrong with, as one line naming the spec field: a missing bucket or prefix, credentials
refused, a column that is not there, labels outside the classes, an image that does not decode.

Run: python -c "from swap.data.stream_io import describe_stream; help(describe_stream)"

Nothing here holds the data: the driver reads the Parquet schema, the label column (one integer
a row: what the checks and the sizes need) and the first SAMPLE training rows (the image shape,
and the normalization when the spec gives none); image files are listed, not opened.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from swap import storage
from swap.data.augment import BatchTransform
from swap.data.common import DatasetInfo, Splits
from swap.data.stream import SAMPLE, Stream, failures_named, normalization_of
from swap.errors import SwapError, first_line
from swap.spec import Data


@contextlib.contextmanager
def reading_errors(field: str, uri: str) -> Iterator[None]:
    """Storage errors while listing or reading `uri` as one SwapError naming `field`."""
    try:
        yield
    except SwapError:
        raise
    except FileNotFoundError:
        raise SwapError(f"{field}: {uri}: no such bucket, prefix or folder") from None
    except (OSError, ValueError) as exc:  # pyarrow: ACCESS_DENIED, no such bucket, bad URI
        raise SwapError(f"{field}: {uri}: cannot be read ({first_line(exc)})") from None


def describe_stream(data: Data) -> Splits:
    """The Splits of a streamed set: its Stream, shape, classes, normalization and sizes, with
    its labels checked (integers within the classes) and a sample decoded, before Ray work on
    it; every problem a SwapError naming the field."""
    for field in ("train_dir", "test_dir"):
        must_exist(getattr(data, field), f"data.{field}")
    classes = None
    if data.dataset == "images":
        classes = image_classes(data.train_dir, "data.train_dir")
        tested = image_classes(data.test_dir, "data.test_dir")
        if tested != classes:
            only = sorted(set(classes) ^ set(tested))[0]
            raise SwapError(f"data.test_dir: its class folders differ from data.train_dir's "
                            f"({only!r} is in only one)")  # fmt: skip
    stream = Stream(
        format="parquet" if data.dataset == "parquet" else "images",
        train=storage.absolute(data.train_dir), test=storage.absolute(data.test_dir),
        image_column=data.image_column, label_column=data.label_column,
        classes=tuple(classes) if classes else None, val_fraction=data.val_fraction,
        image_size=data.image_size, decode_cpus=data.decode_cpus,
    )  # fmt: skip
    counts = label_counts(stream, data)
    with reading_errors("data.train_dir", stream.train), failures_named(), quiet("ray.data"):
        sample = stream.rows("train").take_batch(SAMPLE, batch_format="numpy")
    channels, height, width = sample["image"].shape[1:]
    if height != width:
        raise SwapError(f"data.train_dir: images are {height} x {width}; swap's models take "
                        "square images (data.image_size resizes image files)")  # fmt: skip
    mean, std = normalization_of(sample)
    if data.mean:
        mean, std = tuple(data.mean), tuple(data.std or std)
    pad = max(1, height // 8) if data.augmentation in ("crop", "crop_flip") else 0
    transform = BatchTransform(1 / 255, mean, std, pad=pad if data.augment else 0,
                               flip=data.augment and data.augmentation == "crop_flip")  # fmt: skip
    info = DatasetInfo(len(counts["classes"]), channels=int(channels), image_size=int(height))
    sizes = {split: int(counts[split].sum()) for split in ("train", "val", "test")}
    return Splits(
        info, Rows(sizes["train"]), Rows(sizes["train"]), Rows(sizes["val"]), Rows(sizes["test"]),
        batch_transform=transform, stream=stream,
        summary={
            "classes": info.num_classes,
            "examples": {"train": sizes["train"], "validation": sizes["val"],
                         "test": sizes["test"]},
            "chance_val_accuracy": (float(counts["val"].max() / sizes["val"])
                                    if sizes["val"] else None),
            "streamed_from": {"train": stream.train, "test": stream.test},
            "image_shape": [info.channels, info.image_size, info.image_size],
        },
    )  # fmt: skip


@contextlib.contextmanager
def quiet(logger: str) -> Iterator[None]:
    """A library's log records below CRITICAL kept off the console for a while: the error it
    would log with its traceback reaches the user as one line instead (a SwapError)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def must_exist(uri: str, field: str) -> None:
    """A SwapError naming `field` unless `uri` is a folder or prefix that holds something:
    asked of the storage itself, before Ray Data lists it."""
    import pyarrow.fs as pafs

    fs, path = storage.resolve(uri)
    with reading_errors(field, uri):
        found = fs.get_file_info(path).type
        if found == pafs.FileType.NotFound and storage.is_uri(uri):  # an object store prefix
            found = _any_object_under(fs, path)
    if found == pafs.FileType.NotFound:
        raise SwapError(f"{field}: {uri}: no such bucket, prefix or folder")


def _any_object_under(fs: Any, path: str) -> Any:
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    entries = fs.get_file_info(selector)
    return pafs.FileType.Directory if entries else pafs.FileType.NotFound


class Rows:
    """A streamed split where the code asks for a data set's size: its rows, none held."""

    def __init__(self, count: int):
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: Any) -> Any:
        raise TypeError("a streamed split is read with Ray Data, not by index")


def image_classes(uri: str | None, field: str) -> list[str]:
    """The class folders directly under `uri`, sorted."""
    import pyarrow.fs as pafs

    fs, path = storage.resolve(uri)  # type: ignore[arg-type]
    with reading_errors(field, uri):  # type: ignore[arg-type]
        entries = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    classes = sorted(e.base_name for e in entries if e.type == pafs.FileType.Directory)
    if not classes:
        raise SwapError(f"{field}: {uri}: no class folders (one folder of images per class)")
    return classes


def label_counts(stream: Stream, data: Data) -> dict[str, Any]:
    """Examples per class in each split (train, val, test), from the label column (Parquet,
    counted in Ray Data's tasks: the driver gets the counts) or the file listing (images);
    labels that are not integers within the classes are a SwapError naming the field."""
    if stream.format == "images":
        listed = {split: image_labels(stream, split) for split in ("train", "test")}
        held = stream.held_out(listed["train"][1])
        labels = {"train": listed["train"][0][~held], "val": listed["train"][0][held],
                  "test": listed["test"][0]}  # fmt: skip
        counted = {split: np.bincount(v, minlength=len(stream.classes or ()))
                   for split, v in labels.items()}  # fmt: skip
        return {"classes": list(stream.classes or ()), **counted}
    found: dict[str, dict[Any, int]] = {"train": {}, "val": {}, "test": {}}
    for split, uri in (("train", stream.train), ("test", stream.test)):
        for label, in_val, count in parquet_labels(stream, split, uri):
            part = "val" if in_val else split
            found[part][label] = found[part].get(label, 0) + count
    top = data.num_classes or max((int(k) + 1 for v in found.values() for k in v), default=0)
    problems = []
    for split, counts in found.items():
        floats = [k for k in counts if not float(k).is_integer()]
        outside = sorted(int(k) for k in counts if float(k).is_integer() and not 0 <= k < top)
        if floats:
            shown = ", ".join(str(v) for v in sorted(floats)[:3])
            problems.append(f"data.label_column: {split} labels are not integers (class "
                            f"indices): {shown}")  # fmt: skip
        if outside:
            shown = " and ".join(str(v) for v in outside[:5])
            problems.append(f"data.label_column: {split} labels {shown} are outside 0..{top - 1} "
                            f"({top} classes)")  # fmt: skip
    for split, uri in (("train", stream.train), ("test", stream.test)):
        if not found[split]:
            problems.append(f"data.{split}_dir: {uri}: no rows")
    if problems:
        raise SwapError("\n".join(problems))
    counted = {split: np.bincount([int(k) for k in v], weights=list(v.values()), minlength=top)
               .astype(np.int64) if v else np.zeros(top, np.int64)
               for split, v in found.items()}  # fmt: skip
    return {"classes": [str(c) for c in range(top)], **counted}


def parquet_labels(stream: Stream, split: str, uri: str) -> list[tuple[Any, bool, int]]:
    """(label, held out, rows) for each label of a Parquet split, counted batch by batch in
    Ray Data's tasks from the label column and the row hashes (no image is read); the columns
    checked first."""
    import ray.data

    field = f"data.{split}_dir"
    with reading_errors(field, uri):
        table = ray.data.read_parquet(uri, include_row_hash=True, num_cpus=stream.decode_cpus)
        names = table.schema().names
    for column, spec_field in ((stream.label_column, "data.label_column"),
                               (stream.image_column, "data.image_column")):  # fmt: skip
        if column not in names:
            shown = ", ".join(n for n in names if n != "row_hash")
            raise SwapError(f"{spec_field}: no column {column!r} in {uri} (its columns: "
                            f"{shown})")  # fmt: skip
    counts = table.select_columns([stream.label_column, "row_hash"]).map_batches(
        _count_labels, fn_kwargs={"stream": stream, "column": stream.label_column,
                                  "split": split}, batch_format="numpy",
        num_cpus=stream.decode_cpus,
    )  # fmt: skip
    with reading_errors(field, uri):
        rows = counts.take_all()
    return [(row["label"], bool(row["held"]), int(row["count"])) for row in rows]


def _count_labels(batch: dict[str, np.ndarray], stream: Stream, column: str, split: str):
    labels = batch[column]
    held = (stream.held_out(batch["row_hash"].astype(np.uint64)) if split == "train"
            else np.zeros(len(labels), dtype=bool))  # fmt: skip
    pairs, counts = np.unique(np.stack([labels.astype(np.float64), held]), axis=1,
                              return_counts=True)  # fmt: skip
    return {"label": pairs[0], "held": pairs[1].astype(bool), "count": counts}


def image_labels(stream: Stream, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, keys) of the image files under a split's class folders, from their listing."""
    import zlib

    import pyarrow.fs as pafs

    uri = stream.test if split == "test" else stream.train
    fs, path = storage.resolve(uri)
    with reading_errors(f"data.{split}_dir", uri):
        entries = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = [e.path for e in entries if e.type == pafs.FileType.File
             and e.extension.lower() in IMAGE_EXTENSIONS]  # fmt: skip
    labels = [stream.classes.index(f.split("/")[-2]) for f in files  # type: ignore[union-attr]
              if f.split("/")[-2] in stream.classes]  # fmt: skip
    keys = [zlib.crc32("/".join(f.split("/")[-2:]).encode()) for f in files
            if f.split("/")[-2] in stream.classes]  # type: ignore[operator]  # fmt: skip
    return np.asarray(labels, dtype=np.int64), np.asarray(keys, dtype=np.uint64)


IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "tif", "tiff", "bmp", "gif")  # read_images' default
