"""The CIFAR recipes in configs/ run end to end on a local Ray with tiny overrides, on tiny CIFAR
files written in the real format (tests/unit/test_configs.py checks them as shipped).

Run: pytest tests/integration/test_recipes.py
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console

import swap
from swap.data.registry import load_splits
from swap.driver import run_job
from swap.rundir import MODEL_FILE
from swap.spec import load_spec

from .. import fake_data as fd
from ..helpers import REPO

# Tiny sizes for a 2-CPU machine; everything else is the recipe's own.
TINY = [
    "phase1.workers=2", "phase1.batch_size=16", "phase1.warmup_epochs=1", "phase1.max_epochs=2",
    "phase1.stop_train_accuracy=null", "phase2.workers=2", "phase2.batch_size=16",
    "phase2.epochs=1", "phase3.batch_size=32", "resources.use_gpu=false",
    "resources.cpus_per_worker=0.5", "resources.phase1_cpus_per_worker=0.5",
]  # fmt: skip


def run_recipe(name: str, root: Path, tmp: Path, *extra: str) -> tuple[dict, Path]:
    overrides = [*TINY, f"data.root={root}", f"output.dir={tmp / 'runs'}", *extra]
    spec = load_spec(REPO / "configs" / name, overrides)
    results = run_job(spec, Console(file=io.StringIO(), width=120))
    return results, Path(results["run_dir"])


def whole_images(accuracy: float, images: int) -> bool:
    """An accuracy over `images` examples is a count of them, divided."""
    return images > 0 and accuracy * images == pytest.approx(round(accuracy * images))


def check_run(
    results: dict, run_dir: Path, train_examples: int, classes: int, shape=(3, 32, 32)
) -> None:
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
    assert model(torch.randn(3, *shape)).shape == (3, classes)


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


def test_fashion_mnist_mlp_end_to_end_from_debians_layout(local_ray, tmp_path):
    root = fd.write_mnist(tmp_path / "data", train=60, test=20, flat_gz=True)
    results, run_dir = run_recipe("fashion_mnist_mlp.yaml", root, tmp_path)
    assert swap.load_spec(run_dir / "spec.yaml").model.arch == "mlp"
    check_run(results, run_dir, train_examples=54, classes=10, shape=(1, 28, 28))
