"""Every shipped job spec loads, validates, opens with the command that runs it, and the paper
recipes hold the numbers they say they hold.

Run: pytest tests/unit/test_configs.py
"""

from __future__ import annotations

import pytest

from swap.spec import load_spec

from ..helpers import REPO

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert any(path.name == "quickstart.yaml" for path in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates_and_says_how_to_run_it(path):
    spec = load_spec(path)
    assert spec.name
    first_line = path.read_text().splitlines()[0]
    assert first_line == f"# swap run configs/{path.name}"


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


def test_imagenet_recipe_as_shipped():
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


def test_fashion_mnist_recipe_as_shipped():
    spec = recipe("fashion_mnist_mlp.yaml")
    assert (spec.data.dataset, spec.model.arch) == ("fashion_mnist", "mlp")
    assert spec.data.root == "/usr/share/datasets/fashion-mnist"  # Debian's package puts it there
    assert not spec.resources.use_gpu and spec.phase2.workers == 2  # one per core
    assert spec.phase1.batch_size == 32 * spec.phase2.batch_size  # the large/small trade
    assert spec.phase2.lr == 0.05 and spec.phase2.schedule == "cosine"
    text = (REPO / "configs" / "fashion_mnist_mlp.yaml").read_text()
    assert "bench/time_to_accuracy.py" in text and "docs/BENCHMARKS.md" in text


def test_the_cpu_configs_run_phase1_as_one_rank_using_both_cores():
    """The layout docs/BENCHMARKS.md section 9 measured fastest to the end of phase 1 on 2
    cores; every process's torch threads follow its Ray CPUs."""
    for name in ("quickstart.yaml", "fashion_mnist_mlp.yaml"):
        spec = recipe(name)
        assert not spec.resources.use_gpu
        assert (spec.phase1.workers, spec.resources.phase1_cpus) == (1, 2), name
        assert spec.resources.cpus_per_worker == 1, name  # phase 2: a worker per core
