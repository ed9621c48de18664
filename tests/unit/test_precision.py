"""Mixed precision and channels-last in the shared loops: autocast, loss scaling, BN refresh.

Run: pytest tests/unit/test_precision.py

GPUs are not needed: CPU autocast runs bf16 and fp16, and GradScaler has a CPU form, so the
code paths a GPU run takes are exercised here on the CPU.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from swap.bn import refresh_bn
from swap.rundir import load_state_dict, save_state_dict
from swap.spec import spec_from_dict
from swap.training import (
    Precision,
    evaluate,
    load_resumable_state,
    precision_for,
    resumable_state,
    sgd,
    to_memory_format,
    train_epoch,
)

CPU = torch.device("cpu")


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def batches(n: int = 4, size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 3, 6, 6, generator=g), torch.arange(size) % 4) for _ in range(n)]


def constant_lr(optimizer):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def record_forward(model: nn.Module) -> list[tuple[torch.dtype, bool]]:
    """(dtype of the linear head's output, whether the conv saw an NHWC input), per call."""
    seen: list = []
    model[0].register_forward_hook(
        lambda m, args, out: seen.append(
            ("conv", args[0].is_contiguous(memory_format=torch.channels_last))
        )
    )
    model[5].register_forward_hook(lambda m, args, out: seen.append(("head", out.dtype)))
    return seen


def test_bf16_autocast_trains_in_bf16_and_stays_close_to_float32():
    results = {}
    for name, precision in [("fp32", Precision()), ("bf16", Precision(torch.bfloat16))]:
        model = net()
        seen = record_forward(model)
        optimizer = sgd(model, 0.1, 0.9, 0.0)
        stats = train_epoch(model, batches(), optimizer, constant_lr(optimizer), CPU, precision)
        assert stats.count == 32 and torch.isfinite(torch.tensor(stats.loss))
        assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32
        expected = torch.bfloat16 if name == "bf16" else torch.float32
        assert {dtype for kind, dtype in seen if kind == "head"} == {expected}
        results[name] = (stats.loss, evaluate(model, batches(2), CPU, precision).loss)
    assert results["bf16"][0] == pytest.approx(results["fp32"][0], rel=0.05)
    assert results["bf16"][1] == pytest.approx(results["fp32"][1], rel=0.05)


def test_fp16_loss_scaling_skips_overflowing_steps_and_lowers_the_scale():
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60)  # fp16 gradients will overflow
    optimizer = sgd(model, 0.1, 0.9, 0.0)
    precision = Precision(torch.float16, scaler)
    train_epoch(model, batches(1), optimizer, constant_lr(optimizer), CPU, precision)
    assert scaler.get_scale() == 2.0**59  # halved once
    assert torch.equal(model[0].weight, before["0.weight"])  # the step was skipped

    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    precision = Precision(torch.float16, scaler)
    train_epoch(model, batches(3), optimizer, constant_lr(optimizer), CPU, precision)
    assert scaler.get_scale() == 256.0  # no overflow, no change within the growth interval
    assert not torch.equal(model[0].weight, before["0.weight"])  # these steps were taken


def test_channels_last_inputs_reach_the_convolutions():
    model = to_memory_format(net(), Precision(channels_last=True))
    seen = record_forward(model)
    optimizer = sgd(model, 0.1, 0.9, 0.0)
    precision = Precision(channels_last=True)
    train_epoch(model, batches(2), optimizer, constant_lr(optimizer), CPU, precision)
    evaluate(model, batches(1), CPU, precision)
    assert [nhwc for kind, nhwc in seen if kind == "conv"] == [True, True, True]


def test_bn_refresh_under_bf16_and_channels_last_matches_float32():
    data = [x for x, _ in batches(6, 16)]
    reference = net()
    refresh_bn(reference, data)
    model = to_memory_format(net(), Precision(channels_last=True))
    seen = refresh_bn(model, data, autocast_dtype=torch.bfloat16, channels_last=True)
    assert seen == 6
    bn, ref = model[1], reference[1]
    torch.testing.assert_close(bn.running_mean, ref.running_mean, rtol=0.02, atol=0.02)
    torch.testing.assert_close(bn.running_var, ref.running_var, rtol=0.02, atol=0.02)
    assert not torch.equal(bn.running_mean, ref.running_mean)  # it did run in bf16


def test_precision_follows_the_spec():
    def spec(**resources):
        return spec_from_dict(
            {"name": "x", "resources": resources, "model": {"channels_last": True}}
        )

    bf16 = precision_for(spec(amp="bf16"), CPU)
    assert bf16.autocast_dtype is torch.bfloat16 and bf16.scaler is None and bf16.channels_last
    none = precision_for(spec(), CPU)
    assert none.autocast_dtype is None and none.scaler is None
    fp16 = precision_for(spec(amp="fp16", use_gpu=True), CPU)  # a GPU spec, built on CPU here
    assert fp16.autocast_dtype is torch.float16 and isinstance(fp16.scaler, torch.amp.GradScaler)


def test_a_resumed_run_keeps_the_loss_scale_momentum_and_schedule(tmp_path):
    # Both phases checkpoint through resumable_state; fp16's scale is part of it, or a resumed
    # run would start over at 2**16 and skip steps an uninterrupted one takes.
    model = net()
    optimizer = sgd(model, 0.1, 0.9, 0.0)
    scheduler = constant_lr(optimizer)
    train_epoch(model, batches(2), optimizer, scheduler, CPU)  # two steps: momentum
    precision = Precision(torch.float16, torch.amp.GradScaler("cpu", init_scale=2.0**60))
    train_epoch(model, batches(1), optimizer, scheduler, CPU, precision)
    assert precision.scaler.get_scale() == 2.0**59  # halved by an overflowing step
    history = [{"epoch": 1}]
    saved = save_state_dict(resumable_state(optimizer, scheduler, precision, history),
                            tmp_path / "state.pt")  # fmt: skip

    resumed = Precision(torch.float16, torch.amp.GradScaler("cpu"))
    optimizer2 = sgd(model, 0.1, 0.9, 0.0)
    scheduler2 = constant_lr(optimizer2)
    loaded = load_state_dict(saved.location, saved.sha256)
    assert load_resumable_state(loaded, optimizer2, scheduler2, resumed) == history
    assert resumed.scaler.get_scale() == 2.0**59
    assert scheduler2.last_epoch == scheduler.last_epoch == 3
    momentum = optimizer.state_dict()["state"][0]["momentum_buffer"]
    torch.testing.assert_close(optimizer2.state_dict()["state"][0]["momentum_buffer"], momentum)
