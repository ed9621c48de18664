"""SWAG's moments and draws against hand computations on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from swap.swag import SwagMoments, load_sample, memory_bytes


def tiny(weights: list[float]) -> nn.Module:
    model = nn.Linear(2, 1)  # three parameters: two weights, one bias
    with torch.no_grad():
        model.weight.copy_(torch.tensor([weights[:2]]))
        model.bias.copy_(torch.tensor(weights[2:]))
    return model


TRAJECTORY = [[1.0, 2.0, 3.0], [3.0, 2.0, 0.0], [2.0, 5.0, 3.0], [6.0, 3.0, 2.0]]


def test_moments_and_the_last_deviations_match_a_hand_computation():
    model = tiny(TRAJECTORY[0])
    moments = SwagMoments(model, rank=2)
    for weights in TRAJECTORY:
        moments.collect(tiny(weights))
    w = torch.tensor(TRAJECTORY)
    assert moments.count == 4
    torch.testing.assert_close(moments.mean, w.mean(0))
    torch.testing.assert_close(moments.sq_mean, (w * w).mean(0))
    torch.testing.assert_close(moments.variance(), w.var(0, unbiased=False))
    # The deviations of the last two snapshots from the mean as it stood after each.
    expected = [w[2] - w[:3].mean(0), w[3] - w.mean(0)]
    assert len(moments.deviations) == 2
    for got, want in zip(moments.deviations, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_a_draw_is_the_mean_plus_the_scaled_diagonal_and_low_rank_noise():
    moments = SwagMoments(tiny(TRAJECTORY[0]), rank=2)
    for weights in TRAJECTORY:
        moments.collect(tiny(weights))
    draw = moments.sample(torch.Generator().manual_seed(7), scale=0.5)
    replay = torch.Generator().manual_seed(7)
    z1, z2 = torch.randn(3, generator=replay), torch.randn(2, generator=replay)
    d = torch.stack(moments.deviations, dim=1)  # 3 parameters x 2 deviations
    want = moments.mean + math.sqrt(0.25) * moments.variance().sqrt() * z1
    want += math.sqrt(0.5 / 2) * d @ z2
    torch.testing.assert_close(draw, want)


def test_with_zero_covariance_a_draw_is_the_mean_exactly():
    moments = SwagMoments(tiny(TRAJECTORY[1]), rank=3)
    for _ in range(4):
        moments.collect(tiny(TRAJECTORY[1]))
    assert torch.equal(moments.variance(), torch.zeros(3))
    draw = moments.sample(torch.Generator().manual_seed(0))
    assert torch.equal(draw, torch.tensor(TRAJECTORY[1]))
    model = tiny([0.0, 0.0, 0.0])
    load_sample(model, draw)
    assert model.weight.tolist() == [TRAJECTORY[1][:2]] and model.bias.tolist() == [0.0]


def test_statistics_round_trip_and_resume_as_if_never_interrupted():
    straight = SwagMoments(tiny(TRAJECTORY[0]), rank=2)
    for weights in TRAJECTORY:
        straight.collect(tiny(weights))
    first = SwagMoments(tiny(TRAJECTORY[0]), rank=2)
    for weights in TRAJECTORY[:2]:
        first.collect(tiny(weights))
    resumed = SwagMoments.of(tiny(TRAJECTORY[0]), first.state_dict())
    for weights in TRAJECTORY[2:]:
        resumed.collect(tiny(weights))
    for got, want in zip(resumed.state_dict().values(), straight.state_dict().values(),
                         strict=True):  # fmt: skip
        assert torch.equal(torch.as_tensor(got), torch.as_tensor(want))
    empty = SwagMoments.of(tiny(TRAJECTORY[0]), SwagMoments(tiny(TRAJECTORY[0]), 2).state_dict())
    assert empty.count == 0 and empty.deviations == []


def test_statistics_of_another_architecture_are_refused():
    state = SwagMoments(tiny(TRAJECTORY[0]), rank=2).state_dict()
    with pytest.raises(ValueError, match="3 parameters, the model has 5"):
        SwagMoments.of(nn.Linear(4, 1), state)


def test_memory_is_rank_plus_two_float32_copies_of_the_parameters():
    assert memory_bytes(nn.Linear(2, 1), rank=20) == 22 * 4 * 3
