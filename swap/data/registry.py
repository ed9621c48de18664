"""Data sets by name: their shape, their files, and their train/val/test splits.

Run: python -c "import swap.data.registry as r, swap.spec as s; print(r.load_splits(s.Data()).info)"
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from swap import storage
from swap.catalog import STREAMED_DATASETS
from swap.data import custom, digits, files
from swap.data.checks import check_splits
from swap.data.common import DatasetInfo, Splits
from swap.spec import Data, Spec, check_batch_sizes
from swap.user_code import is_reference


@dataclass(frozen=True)
class DataSource:
    """How swap gets one kind of data set: its shape (cheap: no images are read), a check that
    its files are there (downloading them if allowed), and its splits."""

    info: Callable[[Data], DatasetInfo]
    ensure: Callable[[Data], None]
    load: Callable[[Data], Splits]


def _nothing_to_check(data: Data) -> None:
    return None


def _image_folders():
    """swap.data.folder, imported when first used: it needs torchvision (1.5 s to import), which
    no other data set's driver or training processes load."""
    from swap.data import folder

    return folder


def _file_source(dataset: files.FileDataset) -> DataSource:
    return DataSource(
        info=lambda data: dataset.info,
        ensure=partial(files.ensure_files, dataset),
        load=partial(files.load_file_splits, dataset),
    )


def _streamed(data: Data) -> Splits:
    """A data set streamed with Ray Data (swap.data.stream), described from its metadata, its
    labels and a sample; that needs Ray, joined or started here (swap.ray_session)."""
    from swap.data.stream_io import describe_stream
    from swap.ray_session import connect_ray

    connect_ray()
    return describe_stream(data)


DATASETS: dict[str, DataSource] = {
    "digits": DataSource(lambda data: digits.INFO, _nothing_to_check, digits.load_digits_splits),
    **{name: _file_source(dataset) for name, dataset in files.FILE_DATASETS.items()},
    "imagefolder": DataSource(
        lambda data: _image_folders().folder_info(data),
        lambda data: _image_folders().ensure_folders(data),
        lambda data: _image_folders().load_folder_splits(data),
    ),
    **{
        name: DataSource(lambda data: _streamed(data).info, _nothing_to_check, _streamed)
        for name in STREAMED_DATASETS
    },
}
# "package.module:function": the spec's validation has checked that it imports.
CUSTOM = DataSource(custom.custom_info, _nothing_to_check, custom.load_custom_splits)


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


def prepare_data(spec: Spec) -> tuple[Spec, Splits]:
    """The spec the workers get and the data they train on, built once, here, for the whole job.

    Data paths are made absolute where the job was started (workers may run in another
    directory); the files are checked, or downloaded once; the splits are loaded (a user's
    function called), the data checked (swap.data.checks: labels, finite values, shapes, empty
    splits) and the batch sizes checked against the training examples really there (a
    SpecError), all before Ray starts. The driver shares the splits through Ray's object
    store: no worker reads the files or calls the function again.
    """
    paths = {
        field: storage.absolute(value)  # a URI (a streamed set's) as it is
        for field in ("root", "train_dir", "test_dir")
        if (value := getattr(spec.data, field)) is not None
    }
    data = spec.data.model_copy(update=paths)
    ensure_data(data)
    prepared = spec.model_copy(update={"data": data})
    splits = load_splits(data)
    if splits.stream is not None:  # checked as it was described, without reading its images
        check_batch_sizes(prepared, len(splits.train) + len(splits.val), f"data set {data.dataset}")
        return prepared, splits
    summary = check_splits(splits, data.dataset, val_expected=data.val_fraction > 0)
    check_batch_sizes(prepared, len(splits.train) + len(splits.val), f"data set {data.dataset}")
    return prepared, dataclasses.replace(splits, summary=summary)
