"""Phase 1's collectives over two real gloo ranks (two processes): sums, the minimum, rank 0's
BatchNorm buffers. One rank could not tell a sum from an identity.

Run: pytest tests/integration/test_ddp_group.py
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from swap.phases import ddp
from swap.training import EpochStats

CPU = torch.device("cpu")
STATS = [EpochStats(0.25, 7, 9), EpochStats(1.5, 2, 11)]  # rank 0's and rank 1's
BAD_STEPS = [None, 12]


def _rank(rank: int, folder: str) -> None:
    store = dist.FileStore(f"{folder}/store", 2)
    dist.init_process_group(ddp.backend(use_gpu=False), store=store, rank=rank, world_size=2)
    try:
        stats = ddp.sum_over_ranks(STATS[rank], CPU)
        norm = nn.BatchNorm1d(3)
        norm.running_mean.fill_(float(rank + 1))  # rank 0: 1.0, rank 1: 2.0
        ddp.broadcast_buffers(norm)
        seen = {
            "sums": [stats.loss_sum, stats.correct, stats.count],
            "first_bad_step": ddp.first_bad_step(BAD_STEPS[rank], CPU),
            "no_bad_step": ddp.first_bad_step(None, CPU),
            "running_mean": norm.running_mean.tolist(),
        }
    finally:
        dist.destroy_process_group()
    Path(folder, f"rank{rank}.json").write_text(json.dumps(seen))


def test_collectives_over_two_gloo_ranks(tmp_path):
    mp.spawn(_rank, args=(str(tmp_path),), nprocs=2, join=True)
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert seen["sums"] == [1.75, 9, 20], rank
        assert seen["first_bad_step"] == 12 and seen["no_bad_step"] is None
        assert seen["running_mean"] == [1.0, 1.0, 1.0]  # rank 0's, on both
