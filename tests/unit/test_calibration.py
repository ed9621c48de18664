"""Accuracy, NLL, ECE and Brier score against a hand computation.

Run: pytest tests/unit/test_calibration.py
"""

from __future__ import annotations

import math

import pytest
import torch

from swap.calibration import BINS, quality

# Four examples, two classes: (probabilities, label) -> confidence, bin (floor(15 c)), correct
HAND = [
    ([1.0, 0.0], 0),  # 1.0  -> bin 14 (the last, closed), right
    ([0.6, 0.4], 1),  # 0.6  -> bin 9, wrong
    ([0.3, 0.7], 1),  # 0.7  -> bin 10, right
    ([0.55, 0.45], 1),  # 0.55 -> bin 8, wrong
]


def test_quality_matches_a_hand_computation():
    probabilities = torch.tensor([p for p, _ in HAND], dtype=torch.float64)
    targets = torch.tensor([y for _, y in HAND])
    got = quality(probabilities.log(), targets)
    assert got["count"] == 4 and got["accuracy"] == 0.5
    # One example per bin: |accuracy - confidence| = 0, 0.6, 0.3, 0.55, each weighted 1/4.
    assert got["ece"] == pytest.approx((0 + 0.6 + 0.3 + 0.55) / 4)
    assert got["nll"] == pytest.approx(-(math.log(1) + math.log(0.4) + math.log(0.7)
                                         + math.log(0.45)) / 4)  # fmt: skip
    # Sum over classes of (p - one-hot)^2: 0, 0.72, 0.18, 0.605.
    assert got["brier"] == pytest.approx((0 + 0.72 + 0.18 + 0.605) / 4)
    counts = [b["count"] for b in got["bins"]]
    assert len(counts) == BINS and sum(counts) == 4
    assert [i for i, c in enumerate(counts) if c] == [8, 9, 10, 14]
    assert got["bins"][14] == {"count": 1, "confidence": 1.0, "accuracy": 1.0}
    assert got["bins"][0] == {"count": 0, "confidence": None, "accuracy": None}


def test_a_confidence_of_exactly_one_is_counted_in_the_last_bin():
    logits = torch.tensor([[0.0, 40.0, 0.0]] * 3, dtype=torch.float64)
    assert logits.softmax(1).max().item() == 1.0  # 1 - 8.5e-18 rounds to 1 in float64
    got = quality(logits.log_softmax(1), torch.tensor([1, 1, 0]))  # one confident mistake
    assert got["bins"][BINS - 1]["count"] == 3
    assert got["ece"] == pytest.approx(1 / 3)  # accuracy 2/3 at confidence 1


def test_an_overconfident_mistake_counts_in_full_in_the_nll():
    """-log p(label) from the log-softmax: 40 + log(1 + 2 e^-40) for the mistake, not a value
    capped by a clamped probability (27.6 at 1e-12)."""
    logits = torch.tensor([[0.0, 40.0, 0.0], [0.0, 100.0, 0.0]], dtype=torch.float64)
    got = quality(logits.log_softmax(1), torch.tensor([1, 0]))
    right = math.log1p(2 * math.exp(-40))
    wrong = 100 + math.log1p(2 * math.exp(-100))
    assert got["nll"] == pytest.approx((right + wrong) / 2, rel=1e-12)


def test_a_perfect_and_a_uniform_predictor():
    perfect = quality(torch.eye(4, dtype=torch.float64).log(), torch.arange(4))
    assert (perfect["accuracy"], perfect["ece"], perfect["brier"], perfect["nll"]) == (1, 0, 0, 0)
    uniform = quality(torch.full((6, 3), 1 / 3).log(), torch.tensor([0, 1, 2, 0, 1, 2]))
    assert uniform["nll"] == pytest.approx(math.log(3))
    assert uniform["brier"] == pytest.approx((2 / 3) ** 2 + 2 * (1 / 3) ** 2)
