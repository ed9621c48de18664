"""Data sets by name: their shape, their files, their train/val/test splits, and the loaders.

Run: python -c "import swap.data as d, swap.spec as s; print(d.load_splits(s.Data()).info)"
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    Subset,
)

from swap.datasets import custom, digits, files, folder
from swap.datasets.common import SPLIT_SEED, DatasetInfo, Images, Splits
from swap.user_code import import_function, is_reference

if TYPE_CHECKING:
    from swap.spec import Data, Spec

__all__ = [
    "DATASETS",
    "SPLIT_SEED",
    "DatasetInfo",
    "Images",
    "LoaderSettings",
    "Splits",
    "builtin_channels",
    "check_dataset_name",
    "dataset_info",
    "ensure_data",
    "load_splits",
    "loader",
    "loader_settings",
    "prepare_data",
]


@dataclass(frozen=True)
class DataSource:
    """How swap gets one kind of data set: its shape (cheap: no images are read), a check that
    its files are there (downloading them if allowed), and its splits."""

    info: Callable[[Data], DatasetInfo]
    ensure: Callable[[Data], None]
    load: Callable[[Data], Splits]
    channels: int | None = None  # of its images, known before any is read; None: ask the data


def _nothing_to_check(data: Data) -> None:
    return None


def _file_source(dataset: files.FileDataset) -> DataSource:
    return DataSource(
        info=lambda data: dataset.info,
        ensure=partial(files.ensure_files, dataset),
        load=partial(files.load_file_splits, dataset),
        channels=dataset.info.channels,
    )


DATASETS: dict[str, DataSource] = {
    "digits": DataSource(
        lambda data: digits.INFO, _nothing_to_check, digits.load_digits_splits, channels=1
    ),
    **{name: _file_source(dataset) for name, dataset in files.FILE_DATASETS.items()},
    "imagefolder": DataSource(
        folder.folder_info, folder.ensure_folders, folder.load_folder_splits, channels=3
    ),
}
# "package.module:function": the import is checked when the spec is validated.
CUSTOM = DataSource(custom.custom_info, _nothing_to_check, custom.load_custom_splits)


def check_dataset_name(name: str) -> None:
    """For spec validation: a built-in name, or a "package.module:function" that imports."""
    if is_reference(name):
        import_function(name)  # ValueError says why not
    elif name not in DATASETS:
        raise ValueError(
            f"unknown data set; choose one of {', '.join(DATASETS)}, "
            f"or 'package.module:function' returning (train, test) datasets"
        )


def builtin_channels(name: str) -> int | None:
    """Channels of a built-in data set's images; None for a custom one (known from its data)."""
    return None if is_reference(name) else DATASETS[name].channels


def source(data: Data) -> DataSource:
    return CUSTOM if is_reference(data.dataset) else DATASETS[data.dataset]


def dataset_info(data: Data) -> DatasetInfo:
    """Classes, channels and image size: fixed for built-in sets, read from the class folders
    for imagefolder, and from the data for a custom set (which calls its function)."""
    return source(data).info(data)


def ensure_data(data: Data) -> None:
    """Raise a SwapError naming the data set, where swap looked and how to fix it, unless its
    files are in place (after downloading them, with `data.download`)."""
    source(data).ensure(data)


def load_splits(data: Data) -> Splits:
    return source(data).load(data)


def prepare_data(spec: Spec) -> Spec:
    """The spec the workers get: data paths made absolute here, where the job was started
    (workers may run in another directory), after checking the files are there, or
    downloading them once, before any worker needs them."""
    paths = {
        field: os.path.abspath(os.path.expanduser(value))
        for field in ("root", "train_dir", "test_dir")
        if (value := getattr(spec.data, field)) is not None
    }
    data = spec.data.model_copy(update=paths)
    ensure_data(data)
    return spec.model_copy(update={"data": data})


@dataclass(frozen=True)
class LoaderSettings:
    workers: int = 0  # loader processes per training process; 0 loads in the process itself
    pin_memory: bool = False  # page-locked host batches, for faster copies to a GPU


def loader_settings(spec: Spec) -> LoaderSettings:
    return LoaderSettings(workers=spec.data.loader_workers, pin_memory=spec.resources.use_gpu)


def loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    sampler: Sampler | None = None,
    settings: LoaderSettings = LoaderSettings(),
) -> DataLoader:
    """A loader over `dataset`: in order, shuffled by its own seeded generator, or by `sampler`.

    A private generator (not the global RNG) makes each worker's data order, and its loader
    processes' augmentation draws, a function of its seed alone. Loader processes persist
    across epochs: they start once per loader, not once per pass. Batchable images held in
    memory are fetched a batch at a time, by one tensor index, instead of example by example
    and then collated.
    """
    generator = None
    if shuffle_seed is not None:
        generator = torch.Generator().manual_seed(shuffle_seed)
    if sampler is None:
        sampler = (
            SequentialSampler(dataset)
            if generator is None
            else RandomSampler(dataset, generator=generator)
        )
    per_batch = fetches_batches(dataset)
    return DataLoader(
        dataset,
        batch_size=None if per_batch else batch_size,
        sampler=BatchSampler(sampler, batch_size, drop_last=False) if per_batch else sampler,
        generator=generator,
        num_workers=settings.workers,
        persistent_workers=settings.workers > 0,
        pin_memory=settings.pin_memory,
    )


def fetches_batches(dataset: Dataset) -> bool:
    """Whether `dataset[list_of_indices]` returns a whole batch: batchable in-memory images
    (no transform, or one that treats a batch as its images one by one), or a Subset of them."""
    if isinstance(dataset, Subset):
        return fetches_batches(dataset.dataset)
    return type(dataset) is Images and dataset.batchable  # a subclass may index its way
