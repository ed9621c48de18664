"""Equal-weight averaging of model weights, streamed one state dict at a time.

Run: python -c "from swap.averaging import average_state_dicts; help(average_state_dicts)"
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor


def average_state_dicts(state_dicts: Iterable[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """The element-wise mean of `state_dicts`, each weighted equally.

    Streaming: pass a generator that loads one state dict at a time, and memory holds the float64
    running mean (two float32 models' worth) plus the one state dict being added, never all W.

    Floating-point tensors (parameters, BatchNorm running statistics) are averaged as a running
    mean in float64, so W roundings do not pile up, and cast back to their own dtype one tensor
    at a time. Other tensors are counters or indices
    (BatchNorm's `num_batches_tracked`), whose mean means nothing: they are taken from the first
    state dict. `refresh_bn` resets the BatchNorm ones anyway.
    """
    mean: dict[str, Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    count = 0
    for state in state_dicts:
        count += 1
        if count == 1:
            for key, value in state.items():
                dtypes[key] = value.dtype
                value = value.detach()
                mean[key] = value.double() if value.is_floating_point() else value.clone()
            continue
        _check_same_layout(mean, state, count)
        for key, value in state.items():
            if value.is_floating_point():
                # mean_k = mean_{k-1} + (x_k - mean_{k-1}) / k
                mean[key].lerp_(value.detach().to(mean[key].device, torch.float64), 1.0 / count)
    if count == 0:
        raise ValueError("average_state_dicts needs at least one state dict")
    del state  # the last worker's weights: free them before the cast
    # Cast back one tensor at a time, dropping its float64 mean as it goes: the peak stays at
    # the mean plus one state dict, not also the whole result.
    return {key: mean.pop(key).to(dtypes[key]) for key in list(mean)}


def _check_same_layout(mean: Mapping[str, Tensor], state: Mapping[str, Tensor], index: int):
    if mean.keys() != state.keys():
        missing = sorted(mean.keys() - state.keys())
        extra = sorted(state.keys() - mean.keys())
        raise ValueError(
            f"state dict {index} does not match the first: missing {missing}, extra {extra}"
        )
    for key, value in state.items():
        if value.shape != mean[key].shape:
            raise ValueError(
                f"state dict {index}: {key} has shape {tuple(value.shape)}, "
                f"the first has {tuple(mean[key].shape)}"
            )
