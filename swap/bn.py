"""Recompute BatchNorm running statistics of a model (e.g. an averaged one) from data.

Run: python -c "from swap.bn import refresh_bn; help(refresh_bn)"
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


def refresh_bn(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    device: torch.device | str | None = None,
    input_key: str = "input",
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> int:
    """Reset every BatchNorm layer's running mean/variance and recompute them over `batches`.

    The same estimate as `torch.optim.swa_utils.update_bn`: with `momentum=None` each layer keeps
    the cumulative average of the per-batch statistics. Unlike it, a batch may be a tensor, a
    tuple/list (its first element is the input) or a dict (`batch[input_key]`); forward passes
    run without autograd and, with `autocast_dtype`, under autocast (as training did), on NHWC
    inputs with `channels_last`. Returns the number of batches seen; layers' momentum and the
    model's train/eval mode are restored.
    """
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    was_training = model.training
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    model.train()
    seen = 0
    device_type = torch.device(device).type if device is not None else "cpu"
    try:
        with torch.no_grad():
            for batch in batches:
                inputs = model_input(batch, input_key)
                if device is not None:
                    inputs = inputs.to(device, non_blocking=True)
                if channels_last and inputs.dim() == 4:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                with torch.autocast(
                    device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None
                ):
                    model(inputs)
                seen += 1
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        model.train(was_training)
    return seen


def model_input(batch: Any, input_key: str = "input") -> Tensor:
    """The model's input in a batch: the tensor itself, a sequence's first item, or a dict key."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch:
        return batch[0]
    if isinstance(batch, dict):
        if input_key not in batch:
            raise KeyError(f"batch has no {input_key!r} key (keys: {sorted(batch)})")
        return batch[input_key]
    raise TypeError(f"cannot find the model input in a batch of type {type(batch).__name__}")
