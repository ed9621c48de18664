"""Data sets streamed with Ray Data from where they are kept (s3://, gs://, a local or shared
path): Parquet shards or image files in class folders. No process holds the whole set.

Run: python -c "from swap.data.stream import Stream; help(Stream)"

The driver only describes a streamed set (`describe`: its classes, image shape, normalization
and sizes, from metadata, one label column and a sample); every training process builds its own
Ray Data pipeline from the small, picklable `Stream`: read, hold out, decode (in Ray Data's own
tasks, on any node's CPUs), and hand batches of raw pixels to the training process, which
normalizes and augments them on its device as it does for the in-memory sets
(swap.data.augment). Phase 1's ranks take their shards of one pipeline through Ray Train's
dataset integration; each phase-2 worker and the coordinator read their own.

Holding out: a training row is in the validation split when its stable key hashes below
`data.val_fraction` of the range. The key is Ray Data's row hash for Parquet (its file's path and
its place in that file) and the class folder and file name for image files: the same rows every
time the same files are read, whatever the number of nodes or the order of reading.
"""

from __future__ import annotations

import contextlib
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from swap.errors import SwapError, ray_failure_in, root_cause

Split = Literal["train", "val", "test"]
HASH_RANGE = 10_000  # validation: the rows whose key is below val_fraction of it
SAMPLE = 512  # training rows the driver looks at for the image shape and the normalization
SHUFFLE_BUFFER = 2_048  # rows each reader mixes: the local shuffle of every epoch
# Read-and-decode tasks that ask for no CPU run beside the training workers, which hold every
# CPU of a CPU node: at most this many at once per pipeline, so they do not crowd training.
ZERO_CPU_CONCURRENCY = 2


@dataclass(frozen=True)
class Stream:
    """How any process reads a streamed data set's splits with Ray Data: no rows, only where
    they are and how to read them."""

    format: Literal["parquet", "images"]
    train: str  # a folder or prefix of Parquet shards, or of class folders of images
    test: str
    image_column: str  # parquet: encoded images (PNG, JPEG) or arrays of pixels
    label_column: str  # parquet: integer class indices
    classes: tuple[str, ...] | None  # images: the class folders, sorted; a label is an index
    val_fraction: float
    image_size: int | None  # images: resized to this square side; None: as stored
    decode_cpus: float = 0.0  # Ray CPUs per read-and-decode task (data.decode_cpus)

    def rows(self, split: Split, *, order_seed: int | None = None, shard: tuple[int, int] = (0, 1)):
        """The rows of `split` as a Ray Data Dataset of {"image": uint8 C x H x W, "label":
        int64}, decoded in Ray Data's tasks. `order_seed`: a seeded order of the files (each
        epoch of a worker draws its own); `shard` (k, n): only the rows whose key is k modulo
        n, for a phase-1 rank's share of the held-out sets."""
        import ray.data

        configure(ray.data.DataContext.get_current())
        uri = self.test if split == "test" else self.train
        tasks: dict[str, Any] = {"num_cpus": self.decode_cpus}
        if not self.decode_cpus:
            tasks["compute"] = ray.data.TaskPoolStrategy(size=ZERO_CPU_CONCURRENCY)
        # Storage errors stay OSErrors here (phase 2 retries them); the driver names them by
        # spec field when it first reads (swap.data.stream_io).
        if self.format == "parquet":
            data = ray.data.read_parquet(
                uri, include_row_hash=True, include_paths=True,
                shuffle=file_shuffle(order_seed), **tasks,
            )  # fmt: skip
        else:
            size = (self.image_size, self.image_size) if self.image_size else None
            data = ray.data.read_images(
                uri, include_paths=True, size=size, shuffle=file_shuffle(order_seed),
                num_cpus=self.decode_cpus,  # read_images takes no `compute`
                concurrency=None if self.decode_cpus else ZERO_CPU_CONCURRENCY,
            )  # fmt: skip
        keep = {"train": "kept", "val": "held", "test": "all"}[split]
        return data.map_batches(
            decode, fn_kwargs={"stream": self, "keep": keep, "shard": shard},
            batch_format="numpy", **tasks,
        )  # fmt: skip

    def held_out(self, keys: np.ndarray) -> np.ndarray:
        """Which rows of these keys are in the validation split."""
        return (keys % HASH_RANGE) < round(self.val_fraction * HASH_RANGE)


def configure(context: Any) -> None:
    """Ray Data as swap runs it, in every process that builds a pipeline: a failure in decode is
    raised as itself (a SwapError for an image that does not decode), not in a wrapper that
    loses it; no progress bars or start-up lines over swap's own output."""
    context.raise_original_map_exception = True
    context.enable_progress_bars = False
    context.print_on_execution_start = False


def file_shuffle(seed: int | None):
    """Ray Data's seeded order of the files to read (None: as listed)."""
    if seed is None:
        return None
    from ray.data import FileShuffleConfig

    return FileShuffleConfig(seed=seed % 2**32)


def decode(
    batch: dict[str, np.ndarray], stream: Stream, keep: str, shard: tuple[int, int]
) -> dict[str, np.ndarray]:
    """One batch of read rows to {"image": N x C x H x W uint8, "label": N int64}: the split's
    rows only (`keep`: kept, held or all), images decoded."""
    keys = row_keys(batch, stream)
    mask = np.ones(len(keys), dtype=bool)
    if keep != "all":
        held = stream.held_out(keys)
        mask = held if keep == "held" else ~held
    k, n = shard
    if n > 1:
        mask &= (keys // HASH_RANGE) % n == k
    if not mask.any():  # none of this batch: no rows, in the shape the others have
        shape = decode(_first(batch), stream, "all", (0, 1))["image"].shape[1:] if len(mask) else ()
        return {"image": np.zeros((0, *shape), np.uint8), "label": np.zeros(0, np.int64)}
    if stream.format == "parquet":
        images = pixels(batch[stream.image_column][mask], batch["path"][mask])
        labels = np.asarray(batch[stream.label_column][mask])
    else:
        images = np.asarray(list(batch["image"][mask]) if batch["image"].dtype == object
                            else batch["image"][mask])  # fmt: skip
        images = channels_first(images)
        labels = np.asarray([class_of(path, stream.classes) for path in batch["path"][mask]])
    return {"image": images, "label": labels.astype(np.int64)}


def _first(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: values[:1] for key, values in batch.items()}


def row_keys(batch: dict[str, np.ndarray], stream: Stream) -> np.ndarray:
    """Each row's stable key: Ray Data's row hash (Parquet), or a hash of the class folder and
    file name (images), independent of where the set is mounted."""
    if stream.format == "parquet":
        return batch["row_hash"].astype(np.uint64)
    return np.asarray(
        [zlib.crc32("/".join(str(p).split("/")[-2:]).encode()) for p in batch["path"]],
        dtype=np.uint64,
    )


def class_of(path: str, classes: tuple[str, ...] | None) -> int:
    folder = str(path).split("/")[-2]
    try:
        return classes.index(folder)  # type: ignore[union-attr]
    except ValueError:
        raise SwapError(f"data.test_dir: {path}: its class folder {folder!r} is not one of the "
                        "training set's") from None  # fmt: skip


def pixels(column: np.ndarray, paths: np.ndarray) -> np.ndarray:
    """A Parquet image column as N x C x H x W uint8: encoded images (PNG, JPEG: any format
    Pillow reads) decoded, arrays of pixels taken as they are (H x W, or C x H x W)."""
    if len(column) and isinstance(column[0], (bytes, bytearray)):
        from PIL import Image, UnidentifiedImageError

        decoded = []
        for value, path in zip(column, paths, strict=True):
            try:
                decoded.append(np.asarray(Image.open(io.BytesIO(value))))
            except (UnidentifiedImageError, OSError) as exc:
                raise SwapError(
                    f"data.image_column: an image in {path} cannot be decoded "
                    f"({type(exc).__name__})"
                ) from None
        return channels_first(np.stack(decoded))
    array = np.stack([np.asarray(v) for v in column]) if column.dtype == object else column
    return array[:, None] if array.ndim == 3 else array


def channels_first(images: np.ndarray) -> np.ndarray:
    """Decoded images, N x H x W (grey) or N x H x W x C, as N x C x H x W uint8."""
    if images.ndim == 3:
        return images[:, None].astype(np.uint8, copy=False)
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(np.uint8, copy=False)


class StreamEpochs:
    """A streamed split's training batches, one epoch at a time (`set_epoch`), for a training
    loop that expects (inputs, labels) pairs and a known number of steps: `steps` full batches
    of `batch_size` a epoch, shuffled in a buffer of SHUFFLE_BUFFER rows seeded by
    `order_seed(epoch)`. `source(epoch)` gives the epoch's Ray Data iterable: a phase-1 rank's
    shard (the same pipeline every epoch) or a phase-2 worker's own Dataset (its files in a new
    order every epoch)."""

    def __init__(self, source, batch_size: int, steps: int, order_seed, pin_memory: bool):
        self.source, self.batch_size, self.steps = source, batch_size, steps
        self.order_seed, self.pin_memory, self.epoch = order_seed, pin_memory, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seed = self.order_seed(self.epoch) % 2**32
        with failures_named():
            batches = self.source(self.epoch).iter_torch_batches(
                batch_size=self.batch_size, drop_last=True,
                local_shuffle_buffer_size=SHUFFLE_BUFFER, local_shuffle_seed=seed, device="cpu",
                pin_memory=self.pin_memory,
            )  # fmt: skip
            # Every rank of phase 1 must take the same number of steps (each is a collective):
            # exactly `steps`, though a stream split unevenly may hold a batch more.
            for _, batch in zip(range(self.steps), batches, strict=False):
                yield batch["image"], batch["label"]


def evaluation_batches(stream: Stream, split: Split, batch_size: int, shard=(0, 1)):
    """Every row of a held-out split (or, for the BN refresh, of the training split) once, in
    batches of `batch_size` (the last one smaller), as (inputs, labels)."""
    with failures_named():
        rows = stream.rows(split, shard=shard)
        for batch in rows.iter_torch_batches(batch_size=batch_size, device="cpu"):
            yield batch["image"], batch["label"]


@contextlib.contextmanager
def failures_named() -> Iterator[None]:
    """A failure inside Ray Data's tasks as what it is, not Ray's wrapper of it: a SwapError
    (an image that does not decode: not retried), or an OSError (storage: the bucket gone, the
    network down; or Ray's: a node of the pipeline lost), which phase 2 retries like any
    storage failure."""
    try:
        yield
    except Exception as exc:  # Ray's task errors subclass the error they carry: unwrap them too
        cause = root_cause(exc)
        said = str(cause).splitlines()[0] if str(cause) else ""  # Ray Data appends its advice
        if isinstance(cause, SwapError):
            raise SwapError(said) from None
        if isinstance(cause, OSError) or ray_failure_in(exc):  # a rerun can fix both
            raise OSError(f"reading the data failed: {type(cause).__name__}: {said}") from None
        raise


def normalization_of(sample: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of a decoded sample's pixels, in [0, 1] units."""
    images = sample["image"].astype(np.float64) / 255
    mean = images.mean(axis=(0, 2, 3))
    std = images.std(axis=(0, 2, 3), ddof=1)
    return tuple(float(m) for m in mean), tuple(float(max(s, 1e-3)) for s in std)
