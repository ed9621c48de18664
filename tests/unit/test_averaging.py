"""Averaging state dicts: by hand, against torch.optim.swa_utils.AveragedModel, and its edges.

Run: pytest tests/unit/test_averaging.py
"""

from __future__ import annotations

import math
import weakref

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from swap.averaging import SLICE, average_state_dicts


def test_mean_of_hand_made_tensors():
    states = [
        {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(5)},
        {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(7)},
        {"w": torch.tensor([8.0, 1.0]), "n": torch.tensor(9)},
    ]
    mean = average_state_dicts(iter(states))
    assert torch.equal(mean["w"], torch.tensor([4.0, 3.0]))
    assert mean["w"].dtype == torch.float32
    # Integer buffers are counters: taken from the first state dict, not averaged.
    assert mean["n"].item() == 5 and mean["n"].dtype == torch.int64


def test_keeps_each_dtype_and_accumulates_in_float64():
    # In float16, 2048 + 1 rounds back to 2048: a float16 accumulator would lose every 1.
    states = [{"h": torch.tensor([2048.0], dtype=torch.float16)}] + [
        {"h": torch.tensor([1.0], dtype=torch.float16)} for _ in range(4)
    ]
    mean = average_state_dicts(states)
    assert mean["h"].dtype == torch.float16
    assert torch.equal(mean["h"], torch.tensor([2052 / 5], dtype=torch.float64).half())


def test_float64_inputs_are_left_as_they_were():
    first, second = torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([3.0, 4.0])
    mean = average_state_dicts([{"w": first}, {"w": second.double()}])
    assert torch.equal(first, torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert torch.equal(mean["w"], torch.tensor([2.0, 3.0], dtype=torch.float64))
    assert mean["w"].data_ptr() != first.data_ptr()


def test_float32_weights_get_the_correctly_rounded_mean():
    # A float64 sum, divided and cast once, is the exact mean rounded to float32; a float32
    # running mean (as AveragedModel keeps) rounds at every step and misses it on many of
    # these 10,000 elements (3,088 of them; docs/BENCHMARKS.md quotes this).
    generator = torch.Generator().manual_seed(0)
    states = [{"w": 1 + torch.rand(10_000, generator=generator)} for _ in range(7)]
    exact = torch.stack([s["w"].double() for s in states]).mean(0).float()
    assert torch.equal(average_state_dicts(states)["w"], exact)
    running = states[0]["w"].clone()
    for k, state in enumerate(states[1:], start=2):
        running += (state["w"] - running) / k
    assert (running != exact).sum() > 2_500


def test_large_and_channels_last_tensors_are_added_in_slices_exactly():
    generator = torch.Generator().manual_seed(1)
    shapes = {"fc": (300, 1_000), "conv": (128, 64, 3, 3)}  # both more than SLICE elements
    states = []
    for _ in range(5):
        state = {key: 1 + torch.rand(shape, generator=generator) for key, shape in shapes.items()}
        state["conv"] = state["conv"].to(memory_format=torch.channels_last)
        states.append(state)
    assert all(math.prod(shape) > SLICE for shape in shapes.values())
    mean = average_state_dicts(states)
    for key in shapes:
        exact = torch.stack([s[key].double() for s in states]).mean(0).float()
        assert torch.equal(mean[key], exact)


def test_no_tensor_of_a_state_dict_outlives_its_turn():
    # Memory-mapped tensors of one checkpoint share one mapping: a single tensor (or a view of
    # one) kept alive keeps the whole file in memory. Here each tensor's memory is a numpy
    # array, which lives exactly as long as some tensor still uses it.
    alive: list[list[weakref.ref]] = []

    def states():
        for seed in range(4):
            # Streaming: every earlier state dict is gone before the next one is made.
            assert all(ref() is None for refs in alive for ref in refs)
            arrays = {k: v.numpy().copy() for k, v in model(seed).state_dict().items()}
            alive.append([weakref.ref(array) for array in arrays.values()])
            yield {key: torch.from_numpy(array) for key, array in arrays.items()}
            del arrays

    average_state_dicts(states())
    assert all(ref() is None for refs in alive for ref in refs)


def model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 3))
    net.train()
    net(torch.randn(8, 1, 8, 8))  # move the BN running statistics away from their defaults
    return net


def test_equals_swa_utils_averaged_model():
    models = [model(seed) for seed in range(5)]
    reference = AveragedModel(models[0], use_buffers=True)
    for net in models:
        reference.update_parameters(net)
    mean = average_state_dicts(net.state_dict() for net in models)
    expected = reference.module.state_dict()
    for key, value in mean.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, expected[key], rtol=0, atol=1e-6)
    hand = torch.stack([net[0].weight.detach() for net in models]).mean(0)
    torch.testing.assert_close(mean["0.weight"], hand, rtol=0, atol=1e-6)


def test_mismatched_layouts_are_errors():
    with pytest.raises(ValueError, match=r"state dict 2 does not match the first: missing \['b'\]"):
        average_state_dicts([{"a": torch.ones(1), "b": torch.ones(1)}, {"a": torch.ones(1)}])
    with pytest.raises(ValueError, match="state dict 2: a has shape"):
        average_state_dicts([{"a": torch.ones(2)}, {"a": torch.ones(3)}])
    with pytest.raises(ValueError, match="at least one"):
        average_state_dicts([])


class Scaled(nn.Linear):
    """A module whose state dict holds a non-tensor `_extra_state` (a dict of its settings)."""

    def __init__(self, scale: float):
        super().__init__(2, 2)
        self.scale = scale

    def get_extra_state(self):
        return {"scale": self.scale, "note": "set by hand"}

    def set_extra_state(self, state):
        self.scale = state["scale"]


def test_non_tensor_extra_state_is_taken_from_the_first_and_loads_back():
    torch.manual_seed(0)
    nets = [Scaled(scale) for scale in (2.0, 3.0)]
    states = [net.state_dict() for net in nets]
    assert states[0]["_extra_state"] == {"scale": 2.0, "note": "set by hand"}
    mean = average_state_dicts(states)
    assert mean["_extra_state"] == {"scale": 2.0, "note": "set by hand"}
    assert mean["_extra_state"] is not states[0]["_extra_state"]  # a copy, not the caller's
    torch.testing.assert_close(mean["weight"], (nets[0].weight + nets[1].weight).detach() / 2)
    target = Scaled(5.0)
    target.load_state_dict(mean)
    assert target.scale == 2.0
    with pytest.raises(ValueError, match="_extra_state is a tensor in one and not the other"):
        average_state_dicts([states[0], {**states[1], "_extra_state": torch.ones(1)}])
