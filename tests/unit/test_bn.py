"""BatchNorm refresh: equal to torch.optim.swa_utils.update_bn, and for the batches it is not.

Run: pytest tests/unit/test_bn.py
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, TensorDataset

from swap.bn import model_input, refresh_bn


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=0.3), nn.ReLU(), nn.Flatten(),
        nn.Linear(144, 8), nn.BatchNorm1d(8), nn.Linear(8, 3),
    )  # fmt: skip


def data() -> TensorDataset:
    generator = torch.Generator().manual_seed(1)
    return TensorDataset(
        torch.randn(70, 1, 8, 8, generator=generator) * 3 + 1, torch.randint(0, 3, (70,))
    )


def bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if "running" in k or "tracked" in k}


def assert_same_buffers(a: nn.Module, b: nn.Module) -> None:
    for (key, x), y in zip(bn_buffers(a).items(), bn_buffers(b).values(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=key)


def test_equals_update_bn_on_the_same_loader():
    ours, theirs = net(), net()
    loader = DataLoader(data(), batch_size=16)  # 5 batches, the last one short
    seen = refresh_bn(ours, loader)
    update_bn(loader, theirs)
    assert seen == 5
    assert_same_buffers(ours, theirs)
    assert bn_buffers(ours)["1.num_batches_tracked"].item() == 5
    # And it really moved them: the defaults are mean 0, variance 1.
    assert bn_buffers(ours)["1.running_mean"].abs().max() > 0.1


def test_statistics_far_from_the_defaults_are_replaced_not_blended():
    """A model whose BN statistics are not at their defaults, as an average of trained workers
    has: the refresh gives what update_bn gives, nothing of the old statistics left."""
    ours = net()
    for index, layer in enumerate(
        m for m in ours.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ):
        layer.running_mean.fill_(5.0 + index)
        layer.running_var.fill_(40.0)
        layer.num_batches_tracked.fill_(1000)
    theirs = copy.deepcopy(ours)
    loader = DataLoader(data(), batch_size=16)
    refresh_bn(ours, loader)
    update_bn(loader, theirs)
    assert_same_buffers(ours, theirs)
    assert bn_buffers(ours)["1.num_batches_tracked"].item() == 5


def test_tensor_tuple_and_dict_batches_give_the_same_statistics():
    images = data().tensors[0]
    by_tensor, by_tuple, by_dict = net(), net(), net()
    refresh_bn(by_tensor, images.split(16))
    refresh_bn(by_tuple, [(x, None) for x in images.split(16)])
    refresh_bn(by_dict, [{"pixels": x, "label": 0} for x in images.split(16)], input_key="pixels")
    assert_same_buffers(by_tensor, by_tuple)
    assert_same_buffers(by_tensor, by_dict)


def test_restores_momentum_and_mode_and_skips_models_without_bn():
    model = net().eval()
    refresh_bn(model, data().tensors[0].split(32))
    assert not model.training
    assert model[1].momentum == 0.3 and model[5].momentum == 0.1
    plain = nn.Linear(3, 3)
    before = copy.deepcopy(plain.state_dict())
    assert refresh_bn(plain, [torch.randn(2, 3)]) == 0
    assert all(torch.equal(before[k], v) for k, v in plain.state_dict().items())


def test_builds_no_autograd_graph_and_leaves_the_weights_untouched():
    model = net()
    weights = {k: v.clone() for k, v in model.named_parameters()}
    graphs = []  # per forward pass: whether its output is part of an autograd graph
    model.register_forward_hook(lambda module, args, out: graphs.append(out.requires_grad))
    refresh_bn(model, data().tensors[0].split(32))
    assert graphs == [False, False, False]  # 70 images in batches of 32
    assert model(data().tensors[0][:2]).requires_grad  # the hook sees a graph when there is one
    for key, value in model.named_parameters():
        assert torch.equal(value, weights[key]) and value.grad is None


def test_bad_batches_name_what_is_wrong():
    with pytest.raises(KeyError, match=r"batch has no 'input' key \(keys: \['x'\]\)"):
        model_input({"x": torch.ones(1)})
    with pytest.raises(TypeError, match="batch of type int"):
        model_input(3)
