"""Learning-rate schedules as pure functions of the step, and phase 1's stopping rule.

Run: python -c "from swap.schedules import warmup_linear_decay as f; print(f(0, 10, 100))"
"""

from __future__ import annotations

import math
from collections.abc import Callable

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


PHASE2_SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "cosine": cosine,
    "constant": constant,
}


def lambda_lr(optimizer: torch.optim.Optimizer, multiplier: Multiplier):
    """A per-step scheduler: the LR at step t is the base LR times `multiplier(t)`."""
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
