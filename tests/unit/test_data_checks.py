"""A user's data function that raises or returns bad data: `swap run` exits 2 with one line
naming the data set, the split and what is wrong, before a run directory or Ray.

Run: pytest tests/unit/test_data_checks.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from swap.cli import main
from swap.data.checks import SAMPLE, check_splits, contents_of
from swap.data.registry import load_splits
from swap.spec import Data

from ..helpers import tiny_spec

FUNCTION = "tests.custom_code:{}"


def run(tmp_path, capsys, function: str, *extra: str) -> tuple[int, list[str]]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(tiny_spec(tmp_path / "runs").to_yaml())
    dataset = f"data.dataset={FUNCTION.format(function)}"
    code = main(["run", str(spec), dataset, "data.augment=false", *extra])
    return code, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize(
    "function, line",
    [
        (
            "broken_data",
            "data.dataset: tests.custom_code:broken_data raised ValueError: no such "
            "bucket: s3://team/digits (swap run --verbose: its traceback)",
        ),
        (
            "labels_outside_the_classes",
            "data.dataset tests.custom_code:labels_outside_the_classes"
            ": train labels -1 and 12 are outside 0..9 (10 classes)",
        ),
        (
            "test_labels_outside_the_classes",
            "data.dataset tests.custom_code:test_labels_outside_"
            "the_classes: test labels 10 are outside 0..9 (10 classes)",
        ),
        (
            "nan_in_training_images",
            "data.dataset tests.custom_code:nan_in_training_images: train "
            "images 5, 9 hold NaN or infinite values (2 of 200 images)",
        ),
        (
            "nan_in_test_images",
            "data.dataset tests.custom_code:nan_in_test_images: test images "
            "20 hold NaN or infinite values (1 of 50 images)",
        ),
        (
            "test_images_of_another_shape",
            "data.dataset tests.custom_code:test_images_of_another_"
            "shape: its sets' images differ in shape: train (1, 8, 8), test (1, 6, 6)",
        ),
    ],  # fmt: skip
)
def test_bad_data_exits_2_with_one_line_before_a_run_directory(tmp_path, capsys, function, line):
    code, err = run(tmp_path, capsys, function)
    assert code == 2
    assert err == [f"swap: error: {line}"]
    assert not (tmp_path / "runs").exists()


def test_verbose_shows_the_users_traceback(tmp_path, capsys):
    code, err = run(tmp_path, capsys, "broken_data", "--verbose")
    assert code == 2
    assert err[0] == "Traceback (most recent call last):"
    assert any("custom_code.py" in line and "broken_data" in line for line in err)
    assert err[-1].startswith("swap: error: data.dataset: tests.custom_code:broken_data raised")


def test_builtin_sets_pass_and_report_their_sizes_and_chance():
    splits = load_splits(Data())
    summary = check_splits(splits, "digits", val_expected=True)
    assert summary["classes"] == 10
    assert summary["examples"] == {"train": 1293, "validation": 144, "test": 360}
    counts = np.bincount(splits.val.labels)
    assert summary["chance_val_accuracy"] == counts.max() / 144


class Opaque(Dataset):
    """A data set that exposes no arrays: checked on its first SAMPLE examples."""

    def __init__(self, bad_at: int):
        self.bad_at = bad_at

    def __len__(self) -> int:
        return SAMPLE + 500

    def __getitem__(self, index: int):
        return torch.zeros(1, 4, 4), (99 if index == self.bad_at else index % 3)


def test_a_data_set_without_arrays_is_checked_on_its_first_examples():
    assert 99 in contents_of(Opaque(bad_at=10)).labels
    assert 99 not in contents_of(Opaque(bad_at=SAMPLE + 1)).labels  # beyond the sample
    assert contents_of(Opaque(bad_at=10)).sampled


def test_finite_values_whose_sum_overflows_are_still_finite():
    images = torch.full((3, 1, 2, 2), 3e38)  # each sum overflows float32 to inf
    images[1, 0, 0, 0] = float("nan")
    images[2, 0, 1, 1] = -float("inf")
    assert contents_of(torch.utils.data.TensorDataset(images, torch.zeros(3, dtype=torch.long))
                       ).finite.tolist() == [True, False, False]  # fmt: skip
