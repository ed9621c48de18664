"""Model architectures by name, built for a data set's channels and classes.

Run: python -c "import swap.models as m; print(m.build_model('small_cnn', m.DatasetInfo(10, 1, 8)))"
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from swap.data import DatasetInfo


def small_cnn(info: DatasetInfo) -> nn.Module:
    """Three conv-BN-ReLU blocks and a linear head (~0.1 M parameters); the quickstart's model."""

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(
        *block(info.channels, 32),
        *block(32, 64),
        nn.MaxPool2d(2),
        *block(64, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, info.num_classes),
    )


ARCHS: dict[str, Callable[[DatasetInfo], nn.Module]] = {"small_cnn": small_cnn}


def build_model(arch: str, info: DatasetInfo) -> nn.Module:
    return ARCHS[arch](info)
