"""Model architectures by name, built for a data set's channels and classes.

Run: python -c "from swap.models.registry import BUILDERS; print(sorted(BUILDERS))"
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from swap.catalog import ARCHS
from swap.data.common import DatasetInfo
from swap.errors import SwapError
from swap.models.cifar import cifar_resnet, preresnet, vgg16_bn, wide_resnet
from swap.spec import Model
from swap.user_code import call_with_accepted, import_function, is_reference

Builder = Callable[[Model, DatasetInfo], nn.Module]

WIDE_RESNET_DEPTH, WIDE_RESNET_WIDTH = 28, 10  # WRN-28-10, when model.depth/width are null


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


def mlp(info: DatasetInfo, hidden: int = 512) -> nn.Module:
    """Two hidden layers of `hidden` units, each linear-BN-ReLU, on the flattened image (0.67 M
    parameters on 28x28 grey images): cheap enough per example that a large batch is several
    times faster per epoch than a small one on CPUs, the regime SWAP is for."""
    inputs = info.channels * info.image_size**2
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(inputs, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Linear(hidden, info.num_classes),
    )


def _wide_resnet(model: Model, info: DatasetInfo) -> nn.Module:
    depth = model.depth or WIDE_RESNET_DEPTH
    width = model.width or WIDE_RESNET_WIDTH
    return wide_resnet(depth, width, info.channels, info.num_classes)


def _fixed(build: Callable[..., nn.Module], model: Model, info: DatasetInfo) -> nn.Module:
    return build(info.channels, info.num_classes)


BUILDERS: dict[str, Builder] = {  # one per name in swap.catalog.ARCHS
    "small_cnn": lambda model, info: small_cnn(info),
    "mlp": lambda model, info: mlp(info),
    **{f"resnet{d}": partial(_fixed, partial(cifar_resnet, d)) for d in (20, 32, 44, 56, 110)},
    "preresnet164": partial(_fixed, partial(preresnet, 164)),
    "wide_resnet": _wide_resnet,
    "vgg16_bn": partial(_fixed, vgg16_bn),
}

# torchvision builders that need more than num_classes to return plain logits in training.
TORCHVISION_OPTIONS = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


def build_model(model: Model, info: DatasetInfo) -> nn.Module:
    """The untrained network `model` names, for `info`'s channels and classes."""
    if model.arch in BUILDERS:
        return BUILDERS[model.arch](model, info)
    if is_reference(model.arch):
        return _custom_model(model.arch, info)
    if info.channels != 3:
        raise SwapError(
            f"model.arch: torchvision's {model.arch} takes 3-channel images; the data has "
            f"{info.channels} (swap's own nets take any: {', '.join(ARCHS)})"
        )

    import torchvision.models  # 1.3 s to import: only jobs on torchvision's models pay it

    options = TORCHVISION_OPTIONS.get(model.arch, {})
    return torchvision.models.get_model(
        model.arch, weights=None, num_classes=info.num_classes, **options
    )


def _custom_model(reference: str, info: DatasetInfo) -> nn.Module:
    """`function(num_classes=...)`, plus `in_channels`/`image_size` if it names them."""
    try:
        function = import_function(reference)
    except ValueError as exc:
        raise SwapError(f"model.arch: {exc} (got {reference!r})") from None
    module = call_with_accepted(
        function,
        {"num_classes": info.num_classes},
        in_channels=info.channels,
        image_size=info.image_size,
    )
    if not isinstance(module, nn.Module):
        raise SwapError(
            f"model.arch: {reference} must return a torch.nn.Module, got {type(module).__name__}"
        )
    return module
