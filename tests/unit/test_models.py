"""Every architecture: parameter count against the published one, one forward/backward on CPU.

Run: pytest tests/unit/test_models.py
"""

from __future__ import annotations

import pytest
import torch

import swap
from swap.data.common import DatasetInfo
from swap.errors import SwapError
from swap.models.cifar import BasicBlock
from swap.models.registry import build_model
from swap.rundir import MODEL_FILE, save_state_dict
from swap.spec import Model
from swap.training import Precision, to_memory_format

CIFAR10 = DatasetInfo(num_classes=10, channels=3, image_size=32)
CIFAR100 = DatasetInfo(num_classes=100, channels=3, image_size=32)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# (arch, model fields, data set, exact count, published millions, source)
PARAMETERS = [
    ("resnet20", {}, CIFAR10, 269_722, 0.27, "He et al. 2016, table 6"),
    ("resnet32", {}, CIFAR10, 464_154, 0.46, "He et al. 2016, table 6"),
    ("resnet44", {}, CIFAR10, 658_586, 0.66, "He et al. 2016, table 6"),
    ("resnet56", {}, CIFAR10, 853_018, 0.85, "He et al. 2016, table 6"),
    ("resnet110", {}, CIFAR10, 1_727_962, 1.7, "He et al. 2016, table 6"),
    ("preresnet164", {}, CIFAR10, 1_703_258, 1.7, "He et al. 2016b, table 2"),
    ("wide_resnet", {"depth": 16, "width": 4}, CIFAR10, 2_748_890, 2.7, "WRN paper, table 4"),
    ("wide_resnet", {}, CIFAR10, 36_479_194, 36.5, "WRN-28-10, WRN paper, table 4"),
    ("wide_resnet", {}, CIFAR100, 36_536_884, 36.5, "WRN-28-10 for 100 classes"),
    ("vgg16_bn", {}, CIFAR10, 15_253_578, 15.3, "the SWA paper's VGG-16-BN"),
    ("resnet18", {}, CIFAR10, 11_181_642, 11.2, "torchvision, 10 classes"),
    ("resnet50", {}, DatasetInfo(1000, 3, 224), 25_557_032, 25.6, "torchvision / He et al."),
    ("small_cnn", {}, DatasetInfo(10, 1, 8), 94_186, 0.094, "the quickstart's docstring: ~0.1 M"),
    ("mlp", {}, DatasetInfo(10, 1, 28), 670_730, 0.67, "its docstring: 784-512-512-10"),
]


@pytest.mark.parametrize(
    ("arch", "fields", "info", "exact", "published", "source"),
    PARAMETERS,
    ids=[f"{p[0]}-{p[2].num_classes}{'-' + str(p[1]) if p[1] else ''}" for p in PARAMETERS],
)
def test_parameter_count_matches_the_published_one(arch, fields, info, exact, published, source):
    n = count(build_model(Model(arch=arch, **fields), info))
    assert n == exact
    assert n / 1e6 == pytest.approx(published, rel=0.02), source


FORWARD = [
    ("resnet20", {}, CIFAR10),
    ("resnet32", {}, CIFAR10),
    ("resnet44", {}, CIFAR10),
    ("resnet56", {}, CIFAR10),
    ("resnet110", {}, CIFAR10),
    ("preresnet164", {}, CIFAR100),
    ("wide_resnet", {"depth": 16, "width": 4}, CIFAR100),
    ("wide_resnet", {}, CIFAR10),  # WRN-28-10: one batch of two images
    ("vgg16_bn", {}, CIFAR10),
    ("vgg16_bn", {}, DatasetInfo(10, 1, 28)),  # MNIST-sized: the pools round up
    ("resnet20", {}, DatasetInfo(10, 1, 28)),
    ("resnet18", {}, CIFAR10),
    ("resnet50", {}, DatasetInfo(1000, 3, 64)),
    ("small_cnn", {}, DatasetInfo(10, 1, 8)),
    ("mlp", {}, DatasetInfo(10, 1, 28)),
    ("tests.custom_code:tiny_net", {}, DatasetInfo(7, 2, 6)),
]


@pytest.mark.parametrize(
    ("arch", "fields", "info"),
    FORWARD,
    ids=[f"{a}{f or ''}-{i.channels}x{i.image_size}px" for a, f, i in FORWARD],
)
def test_one_forward_and_backward_on_cpu(arch, fields, info):
    torch.manual_seed(0)
    model = build_model(Model(arch=arch, **fields), info)
    x = torch.randn(2, info.channels, info.image_size, info.image_size)
    logits = model(x)
    assert logits.shape == (2, info.num_classes)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


def test_option_a_shortcut_pads_channels_with_zeros():
    block = BasicBlock(16, 32, stride=2).eval()
    with torch.no_grad():
        for conv in (block.conv1, block.conv2):
            conv.weight.zero_()  # the residual branch adds 0: the output is relu(shortcut)
    x = torch.randn(1, 16, 8, 8)
    out = block(x)
    assert out.shape == (1, 32, 4, 4)
    torch.testing.assert_close(out[:, 8:24], torch.relu(x[:, :, ::2, ::2]))
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


def test_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    model = build_model(Model(arch="resnet20"), CIFAR10).eval()
    x = torch.randn(3, 3, 32, 32)
    expected = model(x)
    nhwc = to_memory_format(model, Precision(channels_last=True))
    assert nhwc.state_dict()["0.weight"].is_contiguous(memory_format=torch.channels_last)
    got = nhwc(Precision(channels_last=True).to_input(x, torch.device("cpu")))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_torchvision_reference_passes_only_num_classes():
    model = build_model(Model(arch="torchvision.models:resnet18"), CIFAR10)
    assert count(model) == 11_181_642


def test_torchvision_arch_on_one_channel_data_is_an_error():
    with pytest.raises(SwapError, match="^model.arch: torchvision's resnet18 takes 3-channel"):
        build_model(Model(arch="resnet18"), DatasetInfo(10, 1, 28))


def test_custom_arch_must_return_a_module():
    with pytest.raises(SwapError, match="^model.arch: .*must return a torch.nn.Module, got dict"):
        build_model(Model(arch="tests.custom_code:not_a_module"), CIFAR10)


def test_swap_build_model_works_for_a_custom_data_set(tmp_path):
    spec = swap.Spec(
        name="x",
        data={"dataset": "tests.custom_code:tensor_sets", "root": str(tmp_path)},
        model={"arch": "resnet20"},
    )
    model = swap.build_model(spec)
    assert model(torch.randn(2, 2, 6, 6)).shape == (2, 3)  # 2 channels, 3 classes: from data


@pytest.mark.parametrize("as_uri", [False, True])
def test_load_model_reads_a_run_directory_by_path_or_uri(tmp_path, as_uri):
    spec = swap.Spec(name="x", model={"arch": "mlp"}, data={"dataset": "digits"})
    trained = swap.build_model(spec)
    torch.nn.init.normal_(trained[1].weight)  # unlike a fresh model's weights
    (tmp_path / "spec.yaml").write_text(spec.to_yaml())
    run_dir = f"file://{tmp_path}" if as_uri else str(tmp_path)
    save_state_dict(trained.state_dict(), f"{run_dir}/final/{MODEL_FILE}")
    loaded = swap.load_model(run_dir)
    assert not loaded.training
    for name, tensor in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
