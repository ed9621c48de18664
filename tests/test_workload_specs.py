"""Bad data set, model and precision settings through the CLI: exit 2, one line per field.

Run: pytest tests/test_workload_specs.py
"""

from __future__ import annotations

from pathlib import Path

import pytest

from swap.cli import main
from swap.spec import load_spec

from . import fake_data as fd


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data.dataset=cifar11"], "data.dataset: unknown data set; choose one of digits, cifar10"),
        (["data.dataset=nope.module:make"], "data.dataset: cannot import 'nope.module': "
         "ModuleNotFoundError: No module named 'nope' (got 'nope.module:make')"),
        (["data.dataset=tests.custom_code:missing"],
         "data.dataset: 'tests.custom_code' has no attribute 'missing'"),
        (["data.dataset=tests.custom_code:NOT_CALLABLE"], "data.dataset: "
         "'tests.custom_code:NOT_CALLABLE' is not callable"),
        (["data.dataset=a:b:c"], "data.dataset: expected 'package.module:function'"),
        (["data.dataset=imagefolder"], "data.train_dir: required for data.dataset: imagefolder"),
        (["data.dataset=cifar10", "data.train_dir=x"],
         "data.train_dir: only for data.dataset: imagefolder (not cifar10)"),
        (["data.dataset=cifar10", "data.image_size=64"], "data.image_size: only for data.data"),
        (["data.dataset=imagefolder", "data.train_dir=a", "data.test_dir=b",
          "data.image_size=224", "data.resize=200"],
         "data.resize: must be at least the crop, data.image_size (224)"),
        (["data.download=true"], "data.download: only torchvision's data sets download"),
        (["data.dataset=cifar10", "data.mean=[0.5]"],
         "data.mean: expected 3 value(s), one per channel of cifar10"),
        (["data.dataset=tests.custom_code:tensor_sets", "data.std=[1, 1]"],
         "data.std: a custom data set normalizes its own examples"),
        (["data.loader_workers=-1"], "data.loader_workers: must be greater than or equal to 0"),
        (["model.arch=resnet21"], "model.arch: unknown architecture; choose one of small_cnn"),
        (["model.arch=nope:net"], "model.arch: cannot import 'nope'"),
        (["model.depth=28"], "model.depth: only for model.arch: wide_resnet (not small_cnn)"),
        (["model.arch=wide_resnet", "model.depth=27"], "model.depth: must be 6n + 4 with n >= 1"),
        (["data.dataset=mnist", "model.arch=resnet18"],
         "model: arch 'resnet18' (torchvision) takes 3-channel images; data set mnist has 1"),
        (["resources.amp=fp16"], "resources.amp: fp16 needs resources.use_gpu: true"),
        (["resources.amp=fp8"], "resources.amp: must be 'none', 'bf16' or 'fp16'"),
    ],
)  # fmt: skip
def test_bad_workload_fields_exit_2_naming_the_field(tmp_path, capsys, overrides, expected):
    path = write(tmp_path / "s.yaml", "name: x\n")
    code = main(["validate", str(path), *overrides])
    err = capsys.readouterr().err
    assert code == 2
    assert f"swap: error: {path}: {expected}" in err
    assert all(line.startswith("swap: error: ") for line in err.splitlines())


def test_valid_workload_fields(tmp_path):
    path = write(tmp_path / "s.yaml", "name: x\n")
    spec = load_spec(
        path,
        ["data.dataset=imagefolder", "data.train_dir=t", "data.test_dir=v", "data.resize=300",
         "model.arch=wide_resnet", "model.depth=16", "model.width=4", "model.channels_last=true",
         "resources.amp=bf16", "data.mean=[0.5, 0.5, 0.5]", "data.loader_workers=4"],
    )  # fmt: skip
    assert spec.data.resize == 300 and spec.data.image_size is None and spec.data.root is None
    assert (spec.model.depth, spec.model.width, spec.model.channels_last) == (16, 4, True)
    assert spec.resources.amp == "bf16" and spec.data.mean == [0.5, 0.5, 0.5]
    assert load_spec(path, ["data.dataset=svhn"]).data.root == "data"
    gpu = load_spec(path, ["resources.use_gpu=true", "resources.amp=fp16"])  # no GPU needed
    assert gpu.resources.amp == "fp16"


def test_run_with_missing_files_exits_2_before_any_run_directory(tmp_path, capsys):
    out = tmp_path / "runs"
    path = write(
        tmp_path / "s.yaml", f"name: x\ndata: {{dataset: cifar10}}\noutput: {{dir: {out}}}\n"
    )
    code = main(["run", str(path), f"data.root={tmp_path / 'nowhere'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [
        f"swap: error: data set cifar10: files not found under data.root {tmp_path / 'nowhere'} "
        "(missing cifar-10-batches-py/data_batch_1 and 6 more); set data.root to the folder "
        "that holds them, or set data.download: true to download them there"
    ]
    assert not out.exists()


def test_run_with_class_folders_that_differ_exits_2(tmp_path, capsys):
    fd.write_image_folder(tmp_path / "train", ["a", "b"], per_class=1)
    fd.write_image_folder(tmp_path / "test", ["a"], per_class=1)
    path = write(tmp_path / "s.yaml", f"name: x\noutput: {{dir: {tmp_path / 'runs'}}}\n")
    code = main(
        ["run", str(path), "data.dataset=imagefolder", f"data.train_dir={tmp_path / 'train'}",
         f"data.test_dir={tmp_path / 'test'}"]
    )  # fmt: skip
    assert code == 2
    assert "swap: error: data.test_dir: its class folders differ" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
