"""Learning-rate schedules and phase 1's stopping rule, against values computed by hand.

Run: pytest tests/unit/test_schedules.py
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from swap.schedules import (
    CHECKPOINT_SHARE,
    checkpoint_due,
    constant,
    cosine,
    cosine_to_floor,
    lambda_lr,
    phase1_stop_reason,
    phase2_multiplier,
    snapshot_steps,
    warmup_linear_decay,
)


def test_warmup_then_linear_decay_by_hand():
    f = partial(warmup_linear_decay, warmup_steps=4, total_steps=12)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert [f(s) for s in (4, 8, 11, 12, 20)] == [1.0, 0.5, 0.125, 0.0, 0.0]


def test_no_warmup_starts_at_the_peak():
    assert warmup_linear_decay(0, 0, 10) == 1.0
    assert warmup_linear_decay(5, 0, 10) == 0.5


def test_cosine_matches_torch_cosine_annealing():
    total = 17
    ours = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    theirs = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    ours_sched = lambda_lr(ours, partial(cosine, total_steps=total))
    theirs_sched = torch.optim.lr_scheduler.CosineAnnealingLR(theirs, T_max=total)
    for _ in range(total):
        assert ours.param_groups[0]["lr"] == pytest.approx(theirs.param_groups[0]["lr"], abs=1e-9)
        ours.step(), theirs.step(), ours_sched.step(), theirs_sched.step()
    assert ours.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_cosine_and_constant_by_hand():
    assert cosine(0, 10) == 1.0 and cosine(5, 10) == pytest.approx(0.5) and cosine(10, 10) == 0.0
    assert constant(3, 10) == 1.0


def test_the_swa_schedule_anneals_to_its_floor_then_holds_it():
    """Cosine from 1 to floor 0.1 over 4 steps, then 0.1: by hand, and as SWALR's cosine
    anneal lands (on swa_lr after its anneal steps, then constant)."""
    f = phase2_multiplier("swa", total_steps=10, tail_start=4, floor=0.1)
    expected = [1.0, 0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2, 0.55,
                0.1 + 0.9 * (1 + math.cos(3 * math.pi / 4)) / 2] + [0.1] * 6  # fmt: skip
    assert [f(s) for s in range(10)] == pytest.approx(expected)
    assert cosine_to_floor(0, anneal_steps=0, floor=0.2) == 0.2  # no anneal: the tail at once
    assert phase2_multiplier("cosine", 10)(5) == cosine(5, 10)
    assert phase2_multiplier("constant", 10)(9) == 1.0


def test_snapshots_start_after_the_share_of_steps_and_keep_the_grid():
    # 5 epochs of 20 steps, once per epoch: from the start, or after 40% (step 40).
    assert snapshot_steps(0.0, 20, 100) == [20, 40, 60, 80, 100]
    assert snapshot_steps(0.4, 20, 100) == [60, 80, 100]  # step 40 is the last before it
    assert snapshot_steps(0.45, 7, 100) == [49, 56, 63, 70, 77, 84, 91, 98]
    assert snapshot_steps(0.99, 20, 100) == [100]
    assert snapshot_steps(0.999, 20, 100) == []  # rounds to all 100 steps: none after them


@pytest.mark.parametrize(
    ("epochs", "accuracy", "target", "expected"),
    [
        (3, 0.80, 0.9, None),
        (3, 0.90, 0.9, "stop_train_accuracy"),
        (10, 0.50, 0.9, "max_epochs"),
        (10, 0.95, 0.9, "stop_train_accuracy"),
        (9, 0.99, None, None),
        (10, 0.99, None, "max_epochs"),
    ],
)
def test_phase1_stop_reason(epochs, accuracy, target, expected):
    assert phase1_stop_reason(epochs, accuracy, 10, target) == expected


def test_phase1_checkpoints_after_the_last_epoch_every_n_or_by_their_cost():
    assert checkpoint_due(7, stopping=True, every=5, since_last=0.0, last_cost=9.0)
    assert [e for e in range(1, 11) if checkpoint_due(e, False, 3, 0.0, None)] == [3, 6, 9]
    assert checkpoint_due(1, False, None, 0.0, None)  # the first: measures what one costs
    assert not checkpoint_due(2, False, None, 0.49 / CHECKPOINT_SHARE, 0.5)
    assert checkpoint_due(2, False, None, 0.5 / CHECKPOINT_SHARE, 0.5)
    assert CHECKPOINT_SHARE == 0.02  # at most 2% of phase 1's time, as its field says
