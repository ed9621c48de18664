"""The paper recipes in configs/: each validates as shipped, and the CIFAR ones run end to end
on a local Ray with tiny overrides, on tiny CIFAR files written in the real format.

Run: pytest tests/test_recipes.py
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console

import swap
from swap.checkpoints import MODEL_FILE
from swap.data import load_splits
from swap.job import run_job
from swap.spec import load_spec

from . import fake_data as fd
from .conftest import REPO

# Tiny sizes for a 2-CPU machine; everything else is the recipe's own.
TINY = [
    "phase1.workers=2", "phase1.batch_size=16", "phase1.warmup_epochs=1", "phase1.max_epochs=2",
    "phase1.stop_train_accuracy=null", "phase2.workers=2", "phase2.batch_size=16",
    "phase2.epochs=1", "phase3.batch_size=32", "resources.use_gpu=false",
    "resources.cpus_per_worker=0.5",
]  # fmt: skip


def recipe(name: str):
    return load_spec(REPO / "configs" / name)


def test_cifar10_recipe_as_shipped():
    spec = recipe("cifar10_resnet20.yaml")
    assert (spec.data.dataset, spec.model.arch, spec.model.channels_last) == (
        "cifar10",
        "resnet20",
        True,
    )
    assert spec.phase1.workers == spec.phase2.workers == 8  # the paper's 8 GPUs
    assert spec.phase1.lr == pytest.approx(0.1 * spec.phase1.batch_size / 128)  # linear scaling
    assert spec.resources.use_gpu and spec.resources.amp == "bf16"


def test_cifar100_recipe_as_shipped():
    spec = recipe("cifar100_wrn28_10.yaml")
    assert (spec.data.dataset, spec.model.arch) == ("cifar100", "wide_resnet")
    assert (spec.model.depth, spec.model.width) == (28, 10)
    assert spec.phase1.lr == pytest.approx(0.1 * spec.phase1.batch_size / 128)
    assert spec.phase2.lr == 0.05 and spec.phase1.weight_decay == 5e-4  # SWA's, WRN paper's


def test_imagenet_recipe_validates_without_a_gpu(monkeypatch):
    def no_gpu_here(*args, **kwargs):
        raise AssertionError("validating a spec asked about GPUs")

    for name in ("is_available", "device_count", "get_device_name"):
        monkeypatch.setattr(torch.cuda, name, no_gpu_here)
    spec = recipe("imagenet_resnet50.yaml")
    assert spec.resources.use_gpu and spec.phase1.workers == 8 and spec.phase2.workers == 8
    assert (spec.data.dataset, spec.model.arch) == ("imagefolder", "resnet50")
    assert (spec.data.image_size, spec.data.resize) == (224, 256)
    assert spec.phase1.lr == pytest.approx(0.1 * spec.phase1.batch_size / 256)  # Goyal et al.
    assert spec.phase1.max_epochs + spec.phase2.epochs == 28  # the paper's epoch budget


def test_every_recipe_says_where_its_numbers_come_from():
    for name in ("cifar10_resnet20.yaml", "cifar100_wrn28_10.yaml", "imagenet_resnet50.yaml"):
        text = (REPO / "configs" / name).read_text()
        assert text.splitlines()[0] == f"# swap run configs/{name}"
        assert "The SWAP paper" in text and "Chosen here" in text, name


def run_recipe(name: str, root: Path, tmp: Path, *extra: str) -> tuple[dict, Path]:
    overrides = [*TINY, f"data.root={root}", f"output.dir={tmp / 'runs'}", *extra]
    spec = load_spec(REPO / "configs" / name, overrides)
    results = run_job(spec, Console(file=io.StringIO(), width=120))
    return results, Path(results["run_dir"])


def whole_images(accuracy: float, images: int) -> bool:
    """An accuracy over `images` examples is a count of them, divided."""
    return images > 0 and accuracy * images == pytest.approx(round(accuracy * images))


def check_run(results: dict, run_dir: Path, train_examples: int, classes: int) -> None:
    """What every finished run must hold, computed from the fabricated data's sizes."""
    assert results["status"] == "finished"
    p1 = results["phase1"]
    assert p1["epochs"] == 2 and p1["stop_reason"] == "max_epochs"
    # Full batches only (global batch 16 in phase 1, 16 per worker in phase 2): the partial
    # last one, which could leave BatchNorm one image, is dropped.
    full = train_examples // 16 * 16
    assert [h["samples"] for h in p1["history"]] == [full] * 2
    workers = results["phase2"]["workers"]
    assert [w["status"] for w in workers] == ["finished", "finished"]
    assert all(w["history"][0]["samples"] == full for w in workers)
    p3 = results["phase3"]
    assert p3["bn_batches"] == math.ceil(train_examples / 32)
    splits = load_splits(swap.load_spec(run_dir / "spec.yaml").data)
    for accuracy in (
        p1["test_accuracy"],
        p3["test_accuracy"],
        *[w["test_accuracy"] for w in workers],
    ):
        assert 0 <= accuracy <= 1
        assert whole_images(accuracy, len(splits.test))
    assert whole_images(p3["val_accuracy"], len(splits.val))

    final = torch.load(run_dir / "final" / MODEL_FILE, weights_only=True)
    forks = [torch.load(w["checkpoint"], weights_only=True) for w in workers]
    for key, value in final.items():
        if value.is_floating_point() and "running" not in key:
            mean = (forks[0][key].double() + forks[1][key].double()) / 2
            torch.testing.assert_close(value, mean.to(value.dtype), rtol=0, atol=1e-6, msg=key)
    model = swap.load_model(run_dir)
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, classes)


def test_cifar10_resnet20_end_to_end(local_ray, tmp_path):
    root = fd.write_cifar10(tmp_path / "data", per_batch=12, test=20)  # 60 training images
    results, run_dir = run_recipe("cifar10_resnet20.yaml", root, tmp_path)
    saved = swap.load_spec(run_dir / "spec.yaml")
    assert saved.data.root == str(root) and saved.resources.amp == "bf16"  # autocast on CPU
    assert saved.model.arch == "resnet20" and saved.model.channels_last
    check_run(results, run_dir, train_examples=54, classes=10)  # 6 held out for validation


def test_cifar100_wrn_end_to_end_with_loader_processes(local_ray, tmp_path):
    root = fd.write_cifar100(tmp_path / "data", train=50, test=20)
    extra = ["model.depth=10", "model.width=1", "resources.amp=none", "data.loader_workers=1"]
    results, run_dir = run_recipe("cifar100_wrn28_10.yaml", root, tmp_path, *extra)
    saved = swap.load_spec(run_dir / "spec.yaml")
    assert (saved.model.depth, saved.model.width, saved.data.loader_workers) == (10, 1, 1)
    check_run(results, run_dir, train_examples=45, classes=100)
