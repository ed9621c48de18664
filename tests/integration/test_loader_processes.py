"""Loader processes (`data.loader_workers`): what they fetch and draw is what the training process
would fetch and draw, whatever epoch they start at, so a resumed worker ends exactly.

Run: pytest tests/integration/test_loader_processes.py
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

from swap.data.loaders import EpochBatches, LoaderSettings, train_loader
from swap.data.registry import load_splits
from swap.phases.phase2_worker import phase2_worker
from swap.rundir import load_state_dict
from swap.seeds import phase2_order
from swap.spec import Data

from .. import fake_data as fd
from ..helpers import Interrupt, StopAfter, phase1_weights, tiny_spec


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    return fd.write_cifar10(tmp_path_factory.mktemp("cifar"), per_batch=8, test=20)


def test_loader_processes_draw_what_the_training_process_would_and_a_resumed_epoch_too(
    cifar_root,
):

    # Augmented: a random crop and flip per example, drawn in the loader processes.
    train = load_splits(Data(dataset="cifar10", root=str(cifar_root))).train

    def epochs(workers: int, first: int, last: int) -> list[list[tuple[torch.Tensor, ...]]]:
        order = EpochBatches(train, 8, partial(phase2_order, 0, 0))
        batches = train_loader(train, order, LoaderSettings(workers=workers))
        assert batches.persistent_workers == (workers > 0) and len(batches) == 4  # 36 // 8
        passes = []
        for epoch in range(first, last + 1):
            order.set_epoch(epoch)
            passes.append(list(batches))
        return passes

    in_process, two_processes = epochs(0, 1, 3), epochs(2, 1, 3)
    resumed = epochs(2, 3, 3)  # a new loader (new processes) starting at epoch 3
    for a, b in zip([*in_process, in_process[2]], [*two_processes, *resumed], strict=True):
        for (x, y), (x2, y2) in zip(a, b, strict=True):
            assert torch.equal(x, x2) and torch.equal(y, y2)
    labels = [torch.cat([y for _, y in epoch]) for epoch in in_process]
    assert not torch.equal(labels[0], labels[1])  # a new order each epoch
    first = [x for x, _ in in_process[0]]
    again = [x for x, _ in epochs(0, 1, 1)[0]]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))  # reproducible


def test_a_worker_resumes_exactly_with_random_augmentation_in_loader_processes(tmp_path):
    # The noise is drawn per example in a persistent loader process: its draws must not depend
    # on how many epochs that process has served (a resumed run's processes are new).
    spec = tiny_spec(
        tmp_path,
        data={"dataset": "tests.custom_code:noisy_digits", "loader_workers": 1},
        phase2={"epochs": 3, "batch_size": 128},
    )
    weights, digest = phase1_weights(spec, tmp_path / "p1")
    splits = load_splits(spec.data)
    whole = phase2_worker(spec, 0, splits, weights, str(tmp_path / "a"), phase1_sha256=digest)
    with pytest.raises(Interrupt):
        phase2_worker(spec, 0, splits, weights, str(tmp_path / "b"), StopAfter(1), digest)
    resumed = phase2_worker(spec, 0, splits, weights, str(tmp_path / "b"), phase1_sha256=digest)
    assert resumed["resumed_from_epoch"] == 1
    a, b = load_state_dict(whole["checkpoint"]), load_state_dict(resumed["checkpoint"])
    for key in a:
        assert torch.equal(a[key], b[key]), key
