"""CIFAR-style networks: ResNet-20..110, PreResNet-164, Wide ResNet, VGG-16-BN, for 32x32 images.

Run: python -c "from swap.models.cifar import cifar_resnet; print(cifar_resnet(20, 3, 10))"

torchvision has only the ImageNet variants (a 7x7 stride-2 stem and max-pool that would shrink
a 32x32 image to 8x8 at once), so these are written here, after the papers. Every net ends in
global average pooling, so other image sizes work too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def _head(channels: int, num_classes: int) -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]


def _stages(
    blocks: int, widths: tuple[int, ...], block: Callable[[int, int, int], nn.Module]
) -> list[nn.Module]:
    """`blocks` blocks per stage, from the 16-channel stem to each stage's output `widths`;
    every stage after the first halves the resolution in its first block."""
    layers, c_in = [], 16
    for stage, c_out in enumerate(widths):
        for i in range(blocks):
            layers.append(block(c_in, c_out, 2 if stage > 0 and i == 0 else 1))
            c_in = c_out
    return layers


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus shortcut, then ReLU (He et al. 2016, CIFAR ResNets).

    Option A shortcut: where the shape changes, the identity is subsampled by 2 and padded with
    zero channels, so the shortcut adds no parameters (the paper's CIFAR choice).
    """

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = _conv3x3(c_out, c_out), nn.BatchNorm2d(c_out)
        self.stride, self.extra_channels = stride, c_out - c_in

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.stride != 1 or self.extra_channels:
            shortcut = x[:, :, :: self.stride, :: self.stride]
            half = self.extra_channels // 2
            shortcut = F.pad(shortcut, (0, 0, 0, 0, half, self.extra_channels - half))
        return F.relu(out + shortcut)


def cifar_resnet(depth: int, channels: int, num_classes: int) -> nn.Module:
    """ResNet-`depth` for CIFAR (depth = 6n + 2: 20, 32, 44, 56, 110): a 3x3 stem of 16
    channels, three stages of n basic blocks at 16, 32, 64 channels, global pool, linear."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
    stem = [_conv3x3(channels, 16), nn.BatchNorm2d(16), nn.ReLU()]
    stages = _stages((depth - 2) // 6, (16, 32, 64), BasicBlock)
    model = nn.Sequential(*stem, *stages, *_head(64, num_classes))
    _kaiming_init(model)
    return model


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3 at a quarter of `c_out` channels, BN-ReLU-conv1x1 to
    `c_out`, plus shortcut (He et al. 2016, "Identity Mappings"); a 1x1 projection where the
    shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        planes = c_out // 4
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(planes), _conv3x3(planes, planes, stride)
        self.bn3, self.conv3 = nn.BatchNorm2d(planes), nn.Conv2d(planes, c_out, 1, bias=False)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + (x if self.shortcut is None else self.shortcut(x))


def preresnet(depth: int, channels: int, num_classes: int) -> nn.Module:
    """Pre-activation bottleneck ResNet-`depth` (9n + 2; 164: n = 18, 1.7 M parameters)."""
    if (depth - 2) % 9:
        raise ValueError(f"pre-activation bottleneck ResNet depth must be 9n + 2, got {depth}")
    stages = _stages((depth - 2) // 9, (64, 128, 256), PreActBottleneck)
    model = nn.Sequential(
        _conv3x3(channels, 16), *stages, nn.BatchNorm2d(256), nn.ReLU(), *_head(256, num_classes)
    )
    _kaiming_init(model)
    return model


class WideBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus shortcut (Zagoruyko & Komodakis 2016); where the
    width changes, a 1x1 projection of the pre-activated input."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), _conv3x3(c_in, c_out, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), _conv3x3(c_out, c_out)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        return out + (x if self.shortcut is None else self.shortcut(activated))


def wide_resnet(depth: int, width: int, channels: int, num_classes: int) -> nn.Module:
    """WRN-`depth`-`width` (depth = 6n + 4): stages of n wide blocks at 16k, 32k, 64k channels.
    WRN-28-10: 36.5 M parameters; WRN-16-4: 2.7 M. No dropout (the SWA paper's setting)."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"Wide ResNet depth must be 6n + 4 with n >= 1, got {depth}")
    c_out = 64 * width
    stages = _stages((depth - 4) // 6, (16 * width, 32 * width, c_out), WideBlock)
    model = nn.Sequential(
        _conv3x3(channels, 16),
        *stages,
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        *_head(c_out, num_classes),
    )
    _kaiming_init(model)
    return model


VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16_bn(channels: int, num_classes: int) -> nn.Module:
    """VGG-16 with BatchNorm for CIFAR, as in the SWA paper (Izmailov et al. 2018): 13 conv-BN-ReLU
    layers, five 2x2 max-pools, then 512-512-classes fully connected with dropout (15.3 M
    parameters for 10 classes). Pools round up, so 28x28 inputs work too."""
    layers: list[nn.Module] = []
    c_in = channels
    for item in VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        else:
            layers += [nn.Conv2d(c_in, int(item), 3, padding=1), nn.BatchNorm2d(int(item))]
            layers.append(nn.ReLU(inplace=True))
            c_in = int(item)
    classifier = [
        nn.Dropout(), nn.Linear(512, 512), nn.ReLU(inplace=True),
        nn.Dropout(), nn.Linear(512, 512), nn.ReLU(inplace=True),
        nn.Linear(512, num_classes),
    ]  # fmt: skip
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), *classifier)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return model


def _kaiming_init(model: nn.Module) -> None:
    """He initialization for convolutions (fan-out) and linear layers; BN at weight 1, bias 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
