"""A streamed data set's rows, decoded batch by batch as Ray Data's tasks do it, without Ray: the
validation split held out by a stable key, Parquet's encoded images and pixel arrays, image
files' classes, and failures named as what they are.

Run: pytest tests/unit/test_stream.py
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import ray.exceptions
import torch

from swap.data import feeds
from swap.data.stream import (
    HASH_RANGE,
    Stream,
    channels_first,
    decode,
    failures_named,
    normalization_of,
    pixels,
    row_keys,
)
from swap.errors import SwapError

from ..stream_data import digits, png


def stream(format: str = "parquet", val_fraction: float = 0.2, classes=None) -> Stream:
    return Stream(format, "s3://b/train", "s3://b/test", "image", "label", classes,
                  val_fraction, None)  # fmt: skip


def parquet_batch(n: int = 300) -> dict[str, np.ndarray]:
    images, labels = digits()["train"]
    return {
        "image": np.array([png(i) for i in images[:n]], dtype=object),
        "label": labels[:n],
        "path": np.array(["b/train/part-0.parquet"] * n, dtype=object),
        "row_hash": np.arange(n, dtype=np.uint64) * 7919 + 12345,
    }


def test_the_splits_partition_the_training_rows_by_their_key():
    batch, s = parquet_batch(), stream(val_fraction=0.2)
    kept = decode(batch, s, "kept", (0, 1))
    held = decode(batch, s, "held", (0, 1))
    assert len(kept["label"]) + len(held["label"]) == 300
    expected = (batch["row_hash"] % HASH_RANGE) < 2000
    assert len(held["label"]) == expected.sum() and np.array_equal(
        held["label"], batch["label"][expected]
    )
    assert decode(batch, stream(val_fraction=0.0), "held", (0, 1))["label"].size == 0
    shards = [decode(batch, s, "all", (k, 3))["label"].size for k in range(3)]
    assert sum(shards) == 300 and min(shards) > 50  # every row in one shard, about a third each


def test_parquet_images_decode_to_the_pixels_written():
    batch = parquet_batch(20)
    rows = decode(batch, stream(val_fraction=0), "all", (0, 1))
    images, _ = digits()["train"]
    assert rows["image"].shape == (20, 1, 8, 8) and rows["image"].dtype == np.uint8
    assert np.array_equal(rows["image"], (images[:20] * 15).astype(np.uint8))  # PNG: lossless
    assert rows["label"].dtype == np.int64


def test_pixel_arrays_are_taken_as_they_are():
    grey = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    assert pixels(grey, np.array(["p", "p"])).shape == (2, 1, 4, 4)
    colour = np.zeros((2, 3, 4, 4), np.uint8)
    assert pixels(np.array(list(colour) + [None], dtype=object)[:2], np.array(["p", "p"])).shape \
        == (2, 3, 4, 4)  # fmt: skip
    assert channels_first(np.zeros((2, 5, 5, 3), np.uint8)).shape == (2, 3, 5, 5)


def test_an_image_that_does_not_decode_is_named_with_its_file():
    batch = parquet_batch(3)
    batch["image"][1] = b"\x89PNG not really"
    with pytest.raises(SwapError, match=r"data.image_column: an image in b/train/part-0.parquet "
                       r"cannot be decoded \(UnidentifiedImageError\)"):  # fmt: skip
        decode(batch, stream(val_fraction=0), "all", (0, 1))


def test_image_files_take_their_class_from_the_folder_and_their_key_from_its_name():
    classes = ("cat", "dog")
    s = stream("images", val_fraction=0, classes=classes)
    paths = np.array(["bkt/x/train/dog/1.png", "elsewhere/train/cat/2.png"], dtype=object)
    batch = {"image": np.zeros((2, 4, 4, 3), np.uint8), "path": paths}
    rows = decode(batch, s, "all", (0, 1))
    assert rows["label"].tolist() == [1, 0] and rows["image"].shape == (2, 3, 4, 4)
    # Where the set is mounted does not change which rows are held out.
    assert row_keys(batch, s).tolist() == [zlib.crc32(b"dog/1.png"), zlib.crc32(b"cat/2.png")]
    batch["path"][0] = "bkt/test/bird/3.png"
    with pytest.raises(SwapError, match="its class folder 'bird' is not one of the training"):
        decode(batch, s, "all", (0, 1))


def test_normalization_is_the_samples_per_channel_mean_and_std():
    images = np.stack([np.full((3, 2, 2), v, np.uint8) for v in (0, 255)])
    mean, std = normalization_of({"image": images})
    assert mean == pytest.approx((0.5,) * 3)
    assert std == pytest.approx((math.sqrt(0.25 * 8 / 7),) * 3)  # 8 pixels, ddof 1


def test_failures_in_ray_datas_tasks_are_named_as_what_they_are():
    def raising(cause):
        with failures_named():
            raise ray.exceptions.RayTaskError("read", "traceback", cause)

    with pytest.raises(SwapError, match="^an image is bad$"):
        raising(SwapError("an image is bad"))
    with pytest.raises(OSError, match="reading the data failed: FileNotFoundError: b/train"):
        raising(FileNotFoundError("b/train"))  # retried by phase 2 like any storage failure
    with pytest.raises(ray.exceptions.RayTaskError):
        raising(ValueError("a bug"))
    lost = "reading the data failed: ActorDiedError: The actor"
    with pytest.raises(OSError, match=lost), failures_named():  # a node lost: retried too
        raise ray.exceptions.ActorDiedError()


def test_a_small_held_out_split_is_read_once_and_a_large_one_every_time(monkeypatch):
    reads = []

    def batches(stream, split, batch_size, shard):
        reads.append(split)
        for _ in range(3):
            yield torch.zeros(batch_size, 1, 8, 8, dtype=torch.uint8), torch.zeros(batch_size)

    monkeypatch.setattr(feeds, "evaluation_batches", batches)
    small = feeds.StreamedSplit(stream(), "test", 10, (0, 1))
    assert [len(list(small)) for _ in range(3)] == [3, 3, 3] and reads == ["test"]
    monkeypatch.setattr(feeds, "KEEP_BYTES", 1000)  # 3 batches of 640 + 80 bytes: too many
    large = feeds.StreamedSplit(stream(), "val", 10, (0, 1))
    assert [len(list(large)) for _ in range(2)] == [3, 3] and reads == ["test", "val", "val"]
