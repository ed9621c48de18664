"""Learning-rate schedules as pure functions of the step, and phase 1's stopping rule.

Run: python -c "from swap.schedules import warmup_linear_decay as f; print(f(0, 10, 100))"
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

Multiplier = Callable[[int], float]


def warmup_linear_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    """Phase 1: rise linearly to 1 over `warmup_steps`, then fall linearly to 0 at `total_steps`.

    The warm-up starts at 1/warmup_steps, not 0, so the first step already moves the weights.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def cosine(step: int, total_steps: int) -> float:
    """Half a cosine from 1 to 0 over `total_steps` (CosineAnnealingLR with eta_min=0)."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def constant(step: int, total_steps: int) -> float:
    return 1.0


def cosine_to_floor(step: int, anneal_steps: int, floor: float) -> float:
    """Half a cosine from 1 down to `floor` over `anneal_steps`, then `floor` for good: the SWA
    schedule (torch.optim.swa_utils.SWALR's cosine anneal to its swa_lr), whose constant tail is
    where SWAG collects its snapshots."""
    if step >= anneal_steps:
        return floor
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * step / anneal_steps))


def phase2_multiplier(
    schedule: str, total_steps: int, tail_start: int = 0, floor: float = 1.0
) -> Multiplier:
    """A phase-2 worker's LR multiplier over its `total_steps`: `cosine` to 0, `constant`, or
    `swa`: cosine to `floor` (phase2.swa_lr / phase2.lr) by step `tail_start` (where SWAG
    starts collecting), constant after."""
    if schedule == "cosine":
        return partial(cosine, total_steps=total_steps)
    if schedule == "constant":
        return partial(constant, total_steps=total_steps)
    if schedule == "swa":
        return partial(cosine_to_floor, anneal_steps=tail_start, floor=floor)
    raise ValueError(f"unknown phase-2 schedule {schedule!r}")


def first_snapshot_step(start: float, total_steps: int) -> int:
    """The steps a phase-2 worker takes before SWAG collects: the first `start` (a fraction,
    phase2.swag_start) of its `total_steps`, rounded to a whole step."""
    return round(start * total_steps)


def snapshot_steps(start: float, every: int, total_steps: int) -> list[int]:
    """The steps (1-based counts of steps taken) after which SWAG takes a snapshot: every
    `every`-th step of the worker's run that comes after its first `start` of them."""
    first = first_snapshot_step(start, total_steps)
    return [step for step in range(every, total_steps + 1, every) if step > first]


def lambda_lr(optimizer: torch.optim.Optimizer, multiplier: Multiplier):
    """A per-step scheduler: the LR at step t is the base LR times `multiplier(t)`."""
    import torch  # here: the spec's checks use this module's arithmetic without torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


def phase1_stop_reason(
    epochs_done: int, train_accuracy: float, max_epochs: int, stop_train_accuracy: float | None
) -> str | None:
    """Why phase 1 stops after `epochs_done` epochs, or None to go on.

    The SWAP paper switches to phase 2 at a "stopping accuracy" on the training set rather than
    at a fixed epoch; `max_epochs` bounds the run when that accuracy is never reached.
    """
    if stop_train_accuracy is not None and train_accuracy >= stop_train_accuracy:
        return "stop_train_accuracy"
    if epochs_done >= max_epochs:
        return "max_epochs"
    return None


CHECKPOINT_SHARE = 0.02  # automatic phase-1 checkpoints: at most this share of the time


def checkpoint_due(
    epoch: int, stopping: bool, every: int | None, since_last: float, last_cost: float | None
) -> bool:
    """Whether phase 1 checkpoints after `epoch`: always after its last epoch (phase 2 starts
    from it); every `every` epochs when given; else (automatic) after the first epoch, then once
    the seconds since the last checkpoint reach its cost (`last_cost`, seconds) divided by
    CHECKPOINT_SHARE, so checkpoints take at most that share of phase 1 while a restart loses
    at most that much time."""
    if stopping:
        return True
    if every is not None:
        return epoch % every == 0
    return last_cost is None or since_last * CHECKPOINT_SHARE >= last_cost
