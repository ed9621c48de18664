"""Learning-rate schedules and phase 1's stopping rule, against values computed by hand.

Run: pytest tests/unit/test_schedules.py
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

from swap.schedules import (
    constant,
    cosine,
    lambda_lr,
    phase1_stop_reason,
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
