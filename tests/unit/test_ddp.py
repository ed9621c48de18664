"""Phase 1's collectives: on the training device, in a group with a backend for every device.

Run: pytest tests/unit/test_ddp.py

No GPU here, so NCCL cannot run. What can be checked on a CPU: that swap builds every collective
tensor on the device it is given (a meta device stands in for CUDA), that swap's GPU group has a
CPU backend too, and that no collective is called from outside swap/ddp.py. The values over two
real ranks: tests/integration/test_ddp_group.py.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.distributed as dist
from torch import nn

from swap.phases import ddp
from swap.training import EpochStats

from ..helpers import REPO


class Called(Exception):
    pass


@pytest.fixture
def recorded(monkeypatch):
    """Collectives replaced by a recorder that stops at the first call (no group needed)."""
    calls: list[torch.device] = []

    def record(tensor, *args, **kwargs):
        calls.append(tensor.device)
        raise Called

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    for name in ("all_reduce", "broadcast"):
        monkeypatch.setattr(dist, name, record)
    return calls


@pytest.mark.parametrize(
    "collective",
    [
        lambda device: ddp.sum_over_ranks(EpochStats(1.5, 3, 4), device),
        lambda device: ddp.first_bad_step(7, device),
        lambda device: ddp.broadcast_buffers(nn.BatchNorm1d(3).to(device)),
    ],
    ids=["epoch statistics", "divergence step", "BatchNorm buffers"],
)
def test_every_collective_tensor_is_on_the_training_device(recorded, collective):
    device = torch.device("meta")  # not the CPU: a CPU-built tensor would show up here
    with pytest.raises(Called):
        collective(device)
    assert recorded == [device]


@pytest.fixture
def group(tmp_path):
    def start(backend: str) -> None:
        store = dist.FileStore(str(tmp_path / f"store-{backend.replace(':', '-')}"), 1)
        dist.init_process_group(backend, store=store, rank=0, world_size=1)

    yield start
    if dist.is_initialized():
        dist.destroy_process_group()


def test_the_gpu_group_has_a_backend_for_cpu_tensors_too(group):
    mapping = dict(item.split(":") for item in ddp.backend(use_gpu=True).split(","))
    assert mapping == {"cpu": "gloo", "cuda": "nccl"}
    assert ddp.backend(use_gpu=False) == "gloo"
    group("cpu:gloo,cuda:gloo")  # the GPU group's shape, with gloo standing in for NCCL
    stats = ddp.sum_over_ranks(EpochStats(2.5, 3, 4), torch.device("cpu"))
    assert (stats.loss_sum, stats.correct, stats.count) == (2.5, 3, 4)


COLLECTIVE = re.compile(
    r"\b(dist|distributed)\.(all_reduce|all_gather\w*|broadcast\w*|reduce\w*|gather|scatter"
    r"\w*|barrier|send|recv|all_to_all\w*)\("
)


def test_no_collective_is_called_outside_swap_ddp():
    calls = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in sorted((REPO / "swap").rglob("*.py"))
        if path.name != "ddp.py"
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if COLLECTIVE.search(line)
    ]
    assert calls == []
