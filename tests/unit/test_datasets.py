"""Data sets loaded from files in their real on-disk formats, through the functions a run uses.

Run: pytest tests/unit/test_datasets.py
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from swap.cli import main
from swap.data import files
from swap.data.folder import folder_transforms
from swap.data.registry import dataset_info, ensure_data, load_splits, prepare_data
from swap.errors import SpecError, SwapError
from swap.spec import Data

from .. import custom_code
from .. import fake_data as fd
from ..helpers import tiny_spec

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def ready(splits, image: torch.Tensor) -> torch.Tensor:
    """One raw example as the model sees it: made ready by the splits' batch transform."""
    return splits.batch_transform(image[None])[0]


def pixels(image: torch.Tensor, mean, std) -> np.ndarray:
    """Undo the normalization: the uint8 value of each channel of a flat-colour image."""
    m, s = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    raw = ((image * s + m) * 255).round()
    assert torch.equal(raw, raw[:, :1, :1].expand_as(raw))  # still one flat colour
    return raw[:, 0, 0].numpy().astype(int)


def first_pixels(dataset) -> list[tuple[int, ...]]:
    """Each raw flat-colour image's value per channel."""
    return [tuple(dataset[i][0][:, 0, 0].tolist()) for i in range(len(dataset))]


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    return fd.write_cifar10(tmp_path_factory.mktemp("cifar"), per_batch=8, test=20)


def test_cifar10_pickled_batches_load_with_published_normalization(cifar_root):
    splits = load_splits(Data(dataset="cifar10", root=str(cifar_root), val_fraction=0.1))
    assert splits.info.num_classes == 10 and splits.info.channels == 3
    assert (len(splits.train), len(splits.val), len(splits.test)) == (36, 4, 20)
    # The test set is test_batch, in file order, normalized with CIFAR-10's mean and std.
    for k in range(20):
        raw, label = splits.test[k]
        assert raw.shape == (3, 32, 32) and raw.dtype == torch.uint8
        image = ready(splits, raw)
        assert image.dtype == torch.float32
        assert tuple(pixels(image, CIFAR10_MEAN, CIFAR10_STD)) == tuple(
            fd.pixel(1000 + k, c) for c in range(3)
        )
        assert int(label) == (1000 + k) % 10
    expected = image[0, 0, 0].item()
    assert expected == pytest.approx((fd.pixel(1019) / 255 - 0.4914) / 0.2470, abs=1e-6)


def test_val_is_held_out_of_the_training_set_never_the_test_set(cifar_root):
    data = Data(dataset="cifar10", root=str(cifar_root), val_fraction=0.25)
    torch.manual_seed(1)
    splits = load_splits(data)
    kept, held = first_pixels(splits.train_plain), first_pixels(splits.val)
    written = [tuple(fd.pixel(k, c) for c in range(3)) for k in range(40)]
    assert len(held) == 10 and sorted(kept + held) == sorted(written)
    assert not set(held) & set(kept)
    # The same split for every job seed and every call (SPLIT_SEED is fixed, not the job's).
    torch.manual_seed(12345)
    assert first_pixels(load_splits(data).val) == held
    none = load_splits(Data(dataset="cifar10", root=str(cifar_root), val_fraction=0))
    assert len(none.val) == 0 and len(none.train) == 40


def test_cifar_augmentation_shifts_and_flips_and_can_be_turned_off(cifar_root):
    splits = load_splits(Data(dataset="cifar10", root=str(cifar_root)))
    assert (splits.batch_transform.pad, splits.batch_transform.flip) == (4, True)
    image = torch.zeros(60, 3, 32, 32, dtype=torch.uint8)
    image[:, :, :, 16:] = 255  # dark left half, bright right half
    outputs = splits.training_transform(seed=0, device=torch.device("cpu"))(image)
    plain = splits.batch_transform(image[:1])[0]
    flipped = [o[0, 16, 10] > o[0, 16, 22] for o in outputs]  # bright on the left
    assert 10 < sum(flipped) < 50
    shifted = [not torch.equal(o, plain) and not torch.equal(o, plain.flip(-1)) for o in outputs]
    assert sum(shifted) > 40  # a 4-pixel pad-and-crop moves almost every draw
    off = load_splits(Data(dataset="cifar10", root=str(cifar_root), augment=False))
    assert not off.batch_transform.augments and off.train is off.train_plain


def test_cifar100_reads_fine_labels_and_meta(tmp_path):
    fd.write_cifar100(tmp_path, train=40, test=20)
    splits = load_splits(Data(dataset="cifar100", root=str(tmp_path), val_fraction=0))
    assert splits.info.num_classes == 100
    labels = sorted(int(splits.train[i][1]) for i in range(40))
    assert labels == sorted(k % 100 for k in range(40))
    assert [int(splits.test[k][1]) for k in range(20)] == [(1000 + k) % 100 for k in range(20)]


@pytest.mark.parametrize(
    ("dataset", "folder", "mean", "std"),
    [("mnist", "MNIST", 0.1307, 0.3081), ("fashion_mnist", "FashionMNIST", 0.2860, 0.3530)],
)
def test_mnist_like_idx_files_load_without_augmentation(tmp_path, dataset, folder, mean, std):
    fd.write_mnist(tmp_path, folder, train=30, test=12)
    splits = load_splits(Data(dataset=dataset, root=str(tmp_path), val_fraction=0.1))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (27, 3, 12)
    assert splits.info.channels == 1 and splits.info.image_size == 28
    raw, label = splits.test[5]
    assert raw.shape == (1, 28, 28)
    image = ready(splits, raw)
    assert tuple(pixels(image, [mean], [std])) == (fd.pixel(1005),) and int(label) == 1005 % 10
    assert not splits.batch_transform.augments  # MNIST-like sets get no augmentation


def test_fashion_mnist_reads_debians_flat_gzipped_files(tmp_path):
    # Debian's dataset-fashion-mnist: /usr/share/datasets/fashion-mnist/*-ubyte.gz, no folders.
    fd.write_mnist(tmp_path, train=30, test=12, flat_gz=True)
    data = Data(dataset="fashion_mnist", root=str(tmp_path), val_fraction=0)
    ensure_data(data)
    splits = load_splits(data)
    assert (len(splits.train), len(splits.test)) == (30, 12)
    assert first_pixels(splits.test)[3] == (fd.pixel(1003),)


def test_svhn_mat_files_map_label_10_to_0_and_keep_channel_order(tmp_path):
    fd.write_svhn(tmp_path, train=30, test=12)
    splits = load_splits(Data(dataset="svhn", root=str(tmp_path), val_fraction=0))
    mean, std = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
    raw, label = splits.test[0]
    assert int(label) == 0  # stored as 10
    assert tuple(pixels(ready(splits, raw), mean, std)) == tuple(
        fd.pixel(1000, c) for c in range(3)
    )
    assert (splits.batch_transform.pad, splits.batch_transform.flip) == (4, False)
    assert sorted(int(splits.train[i][1]) for i in range(30)) == sorted(k % 10 for k in range(30))


def test_image_folder_classes_sizes_and_normalization(tmp_path):
    classes = ["cat", "dog", "eel"]
    fd.write_image_folder(tmp_path / "train", classes, per_class=6, size=(40, 30))
    fd.write_image_folder(tmp_path / "test", classes, per_class=2, size=(50, 36))
    data = Data(
        dataset="imagefolder",
        train_dir=str(tmp_path / "train"),
        test_dir=str(tmp_path / "test"),
        image_size=24,
        resize=28,
    )
    assert dataset_info(data).num_classes == 3 and dataset_info(data).image_size == 24
    splits = load_splits(data)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (
        16,
        2,
        6,
    )  # ceil(18 x 0.1) held out
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    for k, (c, i) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]):
        image, label = splits.test[k]  # ImageFolder order: class by class, file by file
        assert image.shape == (3, 24, 24) and label == c
        assert tuple(pixels(image, *imagenet)) == tuple(
            fd.pixel(c * 100 + i, ch) for ch in range(3)
        )
    assert splits.train[0][0].shape == (3, 24, 24)  # random-resized crop to image_size
    plain, _ = folder_transforms(data.model_copy(update={"resize": None}))
    assert plain.transforms[0].size == [27]  # 8/7 of the crop, as 256 is of 224


def test_image_folder_errors_name_the_field(tmp_path):
    fd.write_image_folder(tmp_path / "train", ["a", "b"], per_class=1)
    fd.write_image_folder(tmp_path / "test", ["a", "c"], per_class=1)
    data = Data(
        dataset="imagefolder", train_dir=str(tmp_path / "train"), test_dir=str(tmp_path / "test")
    )
    with pytest.raises(SwapError, match=r"^data.test_dir: its class folders differ .*'b'"):
        ensure_data(data)
    missing = data.model_copy(update={"train_dir": str(tmp_path / "nope")})
    with pytest.raises(SwapError, match=rf"^data.train_dir: {tmp_path / 'nope'} is not a folder"):
        load_splits(missing)


def test_missing_files_name_the_data_set_root_and_both_fixes(tmp_path):
    data = Data(dataset="cifar10", root=str(tmp_path / "empty"))
    with pytest.raises(SwapError) as error:
        load_splits(data)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"data set cifar10: files not found under data.root {tmp_path}")
    assert "missing cifar-10-batches-py/data_batch_1 and 6 more" in message
    assert "set data.root to the folder that holds them" in message
    assert "data.download: true" in message


def test_download_fetches_once_then_loads(tmp_path, monkeypatch):
    calls = []

    def fake_download(root):  # what torchvision's download leaves behind
        calls.append(root)
        fd.write_cifar10(root, per_batch=2, test=4)

    fake = dataclasses.replace(files.FILE_DATASETS["cifar10"], download=fake_download)
    data = Data(dataset="cifar10", root=str(tmp_path / "new"), download=True)
    files.ensure_files(fake, data)
    files.ensure_files(fake, data)  # the files are there now: no second download
    assert calls == [tmp_path / "new"]
    assert len(files.load_file_splits(fake, data).test) == 4

    def offline(root):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    broken = dataclasses.replace(fake, download=offline)
    other = Data(dataset="cifar10", root=str(tmp_path / "other"), download=True)
    with pytest.raises(SwapError, match="downloading into data.root .* failed .*name resolution"):
        files.ensure_files(broken, other)


def test_a_damaged_file_is_a_swap_error_naming_the_data_set(tmp_path):
    fd.write_cifar10(tmp_path, per_batch=2, test=4)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(SwapError, match="^data set cifar10: cannot read its test files"):
        load_splits(Data(dataset="cifar10", root=str(tmp_path)))


def test_custom_function_gets_root_and_augment_and_its_shape_is_inferred(tmp_path):
    custom_code.CALLS.clear()
    data = Data(dataset="tests.custom_code:tensor_sets", root=str(tmp_path), val_fraction=0.25)
    info = dataset_info(data)
    assert (info.num_classes, info.channels, info.image_size) == (3, 2, 6)
    splits = load_splits(data)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 6, 8)
    assert custom_code.CALLS[-2:] == [
        {"root": str(tmp_path), "augment": True},
        {"root": str(tmp_path), "augment": False},
    ]
    index = splits.train.indices[0]
    torch.testing.assert_close(splits.train[0][0], splits.train_plain[0][0] + 100)
    assert int(splits.train[0][1]) == index % 3
    # Declared un-augmented, a function without `augment` is called once, for every view.
    plain = load_splits(Data(dataset="tests.custom_code:no_keywords", augment=False))
    assert len(plain.test) == 2 and plain.train.dataset is plain.train_plain.dataset


def test_a_custom_function_without_augment_must_say_its_examples_are_plain(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\ndata: {dataset: 'tests.custom_code:no_keywords'}\n")
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err.startswith(
        f"swap: error: {path}: data.augment: tests.custom_code:no_keywords takes no `augment` "
        "argument, so swap cannot get the examples without augmentation"
    )
    assert main(["validate", str(path), "data.augment=false"]) == 0


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("returns_one_set", "must return \\(train, test\\) datasets, got TensorDataset"),
        ("returns_flat_examples", "a training example must be \\(C x H x W tensor"),
    ],
)
def test_custom_function_returning_the_wrong_thing(function, message):
    data = Data(dataset=f"tests.custom_code:{function}", augment=False)
    with pytest.raises(SwapError, match=f"^data.dataset: tests.custom_code:{function}.*{message}"):
        load_splits(data)


def test_prepare_data_makes_paths_absolute_where_the_job_starts(tmp_path, monkeypatch):
    fd.write_cifar10(tmp_path / "here", per_batch=30, test=2)  # 135 training, 15 held out
    monkeypatch.chdir(tmp_path)
    spec = tiny_spec(tmp_path, data={"dataset": "cifar10", "root": "here"})
    assert spec.data.root == "here"
    prepared, splits = prepare_data(spec)
    assert len(splits.train) == 135
    assert prepared.data.root == str(tmp_path / "here")
    assert prepared.phase1 == spec.phase1
    # The files hold fewer images than CIFAR-10 publishes: a batch is checked against them.
    too_big = tiny_spec(
        tmp_path, data={"dataset": "cifar10", "root": "here"}, phase2={"batch_size": 136}
    )
    with pytest.raises(SpecError) as raised:
        prepare_data(too_big)
    assert raised.value.problems == [
        "data set cifar10: phase2.batch_size: 136 examples per step is more than the 135 "
        "training examples (cifar10: 150 less 15 held out by data.val_fraction), so an epoch "
        "would have no full batch; use at most 135"
    ]
    default = tiny_spec(tmp_path, data={"dataset": "mnist"})
    assert default.data.root == "data"  # null means ./data for torchvision's sets
    with pytest.raises(SwapError, match=f"under data.root {tmp_path / 'data'} "):
        prepare_data(default)
