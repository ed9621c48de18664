"""Phase 1's process group: its backend, and every collective swap itself calls on it.

Run: imported by swap.phases.phase1_worker (the DDP ranks); torch.distributed only, no Ray.

NCCL, the GPU backend, has no CPU implementation: a collective on a CPU tensor in an NCCL-only
group raises "No backend type associated with device type cpu" on every rank. So every tensor
here is put on the training device first, and on GPUs the group gets a backend for each device
type ("cpu:gloo,cuda:nccl"), so that a CPU collective (Ray Train's or a library's) still works.
DDP's own gradient all-reduce runs on the parameters' device. tests/unit/test_ddp.py checks that no
collective is called from anywhere else in swap.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from swap.training import EpochStats

GPU_BACKEND = "cpu:gloo,cuda:nccl"  # a backend per device type; DDP on CUDA uses NCCL
CPU_BACKEND = "gloo"
NO_STEP = 2**31  # "no non-finite step" in a min-reduction over the ranks


def backend(use_gpu: bool) -> str:
    return GPU_BACKEND if use_gpu else CPU_BACKEND


def sum_over_ranks(stats: EpochStats, device: torch.device) -> EpochStats:
    """A pass's sums (loss, correct, count) added over every rank; as-is without a group."""
    if not dist.is_initialized():
        return stats
    sums = stats.as_tensor(device)
    dist.all_reduce(sums)
    return EpochStats.from_tensor(sums)


def first_bad_step(step: int | None, device: torch.device) -> int | None:
    """The smallest of the ranks' first non-finite steps (None where a rank had none)."""
    value = torch.tensor([NO_STEP if step is None else step], dtype=torch.int64, device=device)
    if dist.is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
    smallest = int(value.item())
    return None if smallest == NO_STEP else smallest


def rank0_decides(decision: bool, device: torch.device) -> bool:
    """Rank 0's `decision`, on every rank (a decision from one rank's clock, which the others'
    would not all share)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return decision
    value = torch.tensor([int(decision)], dtype=torch.int64, device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def broadcast_buffers(module: nn.Module) -> None:
    """Every rank takes rank 0's buffers (BatchNorm statistics). The buffers live where the
    module does, on the training device."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
