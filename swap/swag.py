"""SWAG (Maddox et al. 2019): a Gaussian over one worker's weights, from its trajectory.

Run: python -c "from swap.swag import SwagMoments; help(SwagMoments)"

A phase-2 worker with `phase2.swag_rank: K` collects, once per epoch or every
`phase2.swag_every` steps after the first `phase2.swag_start` of its steps, the running mean and
mean of squares of its parameters and the last K deviations from the mean. Phase 3 draws models
from N(mean, scale * (diag + D D^T / (K - 1))), scale 0.5 as the paper evaluates SWAG, and
averages their predictions (MultiSWAG over every worker, Wilson & Izmailov 2020).

Written by hand: no maintained library on PyPI provides SWAG's moments for an arbitrary module
without wrapping its training loop, and the arithmetic is a few lines. Parameters only:
BatchNorm statistics are not sampled, phase 3 refreshes them on every sample.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

SCALE = 0.5  # of the covariance, as the paper evaluates SWAG


class SwagMoments:
    """The first two moments of a model's parameters (flattened, float32, on their device) and
    its last `rank` deviations from the running mean: (rank + 2) models' worth of memory."""

    def __init__(self, model: nn.Module, rank: int) -> None:
        flat = _flat(model)
        self.rank, self.count = rank, 0
        self.mean = torch.zeros_like(flat)
        self.sq_mean = torch.zeros_like(flat)
        self.deviations: list[Tensor] = []  # oldest first, at most `rank`

    def collect(self, model: nn.Module) -> None:
        """Add the model's current parameters."""
        weights = _flat(model)
        self.count += 1
        self.mean += (weights - self.mean) / self.count
        self.sq_mean += (weights * weights - self.sq_mean) / self.count
        self.deviations.append(weights - self.mean)
        del self.deviations[: -self.rank or None]

    def variance(self) -> Tensor:
        return (self.sq_mean - self.mean * self.mean).clamp_(min=0)

    def sample(self, generator: torch.Generator, scale: float = SCALE) -> Tensor:
        """One draw of the flattened parameters, mean + sqrt(scale) (diag^1/2 z1 + D z2 /
        sqrt(k - 1)), D the k kept deviations (the low-rank term needs k >= 2): a Gaussian of
        covariance scale (diag + D D^T / (k - 1)). With scale 0.5 it is the paper's
        mean + diag^1/2 z1 / sqrt 2 + D z2 / sqrt(2 (k - 1)) (Maddox et al. 2019, eq. 1 and
        the authors' code)."""
        noise = self.variance().sqrt() * _normal(self.mean.numel(), generator, self.mean)
        k = len(self.deviations)
        if k >= 2:
            z = _normal(k, generator, self.mean)
            noise += torch.stack(self.deviations, dim=1) @ z / math.sqrt(k - 1)
        return self.mean + math.sqrt(scale) * noise

    def state_dict(self) -> dict[str, Any]:
        """On the CPU, for torch.save (weights_only loads it back)."""
        deviations = torch.stack(self.deviations) if self.deviations else self.mean.new_zeros(0)
        return {
            "rank": self.rank,
            "count": self.count,
            "mean": self.mean.cpu(),
            "sq_mean": self.sq_mean.cpu(),
            "deviations": deviations.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.mean.device
        if state["mean"].shape != self.mean.shape:
            raise ValueError(
                f"SWAG statistics of {state['mean'].numel()} parameters, the model has "
                f"{self.mean.numel()}"
            )
        self.rank, self.count = state["rank"], state["count"]
        self.mean = state["mean"].to(device)
        self.sq_mean = state["sq_mean"].to(device)
        self.deviations = [d.to(device) for d in state["deviations"]]

    @classmethod
    def of(cls, model: nn.Module, state: dict[str, Any]) -> SwagMoments:
        moments = cls(model, state["rank"])
        moments.load_state_dict(state)
        return moments


def load_sample(model: nn.Module, flat: Tensor) -> None:
    """Put a flattened draw into the model's parameters, in place: each keeps its memory format
    (channels_last convolutions stay NHWC) and dtype."""
    offset = 0
    with torch.no_grad():
        for parameter in model.parameters():
            size = parameter.numel()
            parameter.copy_(flat[offset : offset + size].view(parameter.shape))
            offset += size
    if offset != flat.numel():
        raise ValueError(f"a draw of {flat.numel()} parameters, the model has {offset}")


def memory_bytes(model: nn.Module, rank: int) -> int:
    """What a worker's SWAG statistics take: (rank + 2) float32 copies of its parameters."""
    return (rank + 2) * 4 * sum(p.numel() for p in model.parameters())


def check_memory(model: nn.Module, rank: int, device: torch.device) -> None:
    """Refuse statistics that cannot fit in what is free on `device` now (host memory on a
    CPU, the GPU's on CUDA), before a worker trains for them."""
    need = memory_bytes(model, rank)
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else host_available()
    if need > free:
        raise MemoryError(
            f"phase2.swag_rank {rank}: SWAG needs (rank + 2) x the model = {need / 2**20:.0f} MiB "
            f"per worker, {free / 2**20:.0f} MiB is free on {device}"
        )


def host_available(meminfo: Path = Path("/proc/meminfo")) -> int:
    """Bytes of host memory a new allocation can get without swapping: the kernel's
    MemAvailable (free memory plus the page cache it can reclaim), not just what is free. Where
    there is no /proc/meminfo (not Linux), the free pages."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _flat(model: nn.Module) -> Tensor:
    """The parameters as one float32 vector. `reshape`, not `view`: a channels_last weight is
    not contiguous, and parameters_to_vector's view(-1) fails on it."""
    return torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])


def _normal(size: int, generator: torch.Generator, like: Tensor) -> Tensor:
    """Standard normal draws from `generator` (a CPU one: the same draws on every device)."""
    return torch.randn(size, generator=generator, dtype=torch.float32).to(like.device)
