"""SWAG's moments and draws against hand computations on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from swap.swag import SwagMoments, check_memory, host_available, load_sample, memory_bytes


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


def collected(rank: int = 2) -> SwagMoments:
    moments = SwagMoments(tiny(TRAJECTORY[0]), rank=rank)
    for weights in TRAJECTORY:
        moments.collect(tiny(weights))
    return moments


def test_a_draw_is_the_papers_formula():
    """Maddox et al. 2019: theta_SWA + diag^1/2 z1 / sqrt 2 + D z2 / sqrt(2 (K - 1))."""
    moments = collected()
    draw = moments.sample(torch.Generator().manual_seed(7))  # the default scale, 0.5
    replay = torch.Generator().manual_seed(7)
    z1, z2 = torch.randn(3, generator=replay), torch.randn(2, generator=replay)
    d = torch.stack(moments.deviations, dim=1)  # 3 parameters x K = 2 deviations
    want = moments.mean + moments.variance().sqrt() * z1 / math.sqrt(2) + d @ z2 / math.sqrt(2)
    torch.testing.assert_close(draw, want)


def test_many_draws_have_the_papers_covariance():
    """20,000 draws: their covariance is 0.5 (diag + D D^T / (K - 1)), the closed form, within
    the sampling error (about 1% of a variance at this n)."""
    moments = collected()
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([moments.sample(generator) for _ in range(20_000)]).double()
    d = torch.stack(moments.deviations, dim=1).double()
    closed_form = 0.5 * (torch.diag(moments.variance().double()) + d @ d.T / (2 - 1))
    empirical = torch.cov(draws.T)
    torch.testing.assert_close(draws.mean(0), moments.mean.double(), atol=0.03, rtol=0)
    torch.testing.assert_close(empirical, closed_form, atol=0.05 * closed_form.diag().max().item(),
                               rtol=0)  # fmt: skip
    ratio = empirical.diag() / closed_form.diag()
    assert ((ratio > 0.95) & (ratio < 1.05)).all(), ratio  # not the half it once was


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


def test_free_memory_counts_the_page_cache_the_kernel_can_reclaim(tmp_path, monkeypatch):
    """MemAvailable, not MemFree: a host whose memory is mostly page cache has room."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 16000000 kB\nMemFree: 100 kB\nMemAvailable: 12000000 kB\n")
    assert host_available(meminfo) == 12_000_000 * 1024
    monkeypatch.setattr("swap.swag.host_available", lambda: 12_000_000 * 1024)
    monkeypatch.setattr("os.sysconf", lambda name: 25 if name == "SC_AVPHYS_PAGES" else 4096)
    check_memory(nn.Linear(1000, 1000), rank=20, device=torch.device("cpu"))  # 88 MiB fits
    with pytest.raises(MemoryError, match=r"= 251773 MiB per worker, 11719 MiB is free on cpu"):
        check_memory(nn.Linear(100_000, 30_000, device="meta"), rank=20, device=torch.device("cpu"))
    assert host_available(tmp_path / "no-such-file") == 25 * 4096  # elsewhere: the free pages


def test_a_draw_goes_into_a_channels_last_model_in_its_own_memory_format():
    model = nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    moments = SwagMoments(model, rank=2)
    for shift in (0.0, 1.0, 3.0):
        with torch.no_grad():
            model.weight.add_(shift)
        moments.collect(model)
    draw = moments.sample(torch.Generator().manual_seed(0))
    load_sample(model, draw)
    assert model.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(torch.cat([model.weight.reshape(-1), model.bias]), draw)
