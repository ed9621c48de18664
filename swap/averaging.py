"""Equal-weight averaging of model weights, streamed one state dict at a time.

Run: python -c "from swap.averaging import average_state_dicts; help(average_state_dicts)"
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor


def average_state_dicts(state_dicts: Iterable[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """The element-wise mean of `state_dicts`, each weighted equally.

    Streaming: pass a generator that loads one state dict at a time, and memory holds the running
    mean plus the one state dict being added, never all W of them: two models in all.

    Floating-point tensors (parameters, BatchNorm running statistics) are averaged as a running
    mean in at least float32 (float16/bfloat16 tensors accumulate in float32, float64 ones in
    float64) and cast back to their own dtype. For float32 weights that is the precision of
    `torch.optim.swa_utils.AveragedModel`: each step rounds once, and the result stays within a
    few ulps of the exact mean; a float64 mean would cost a third model of memory
    (bench/averaging.py measures both).
    Other tensors are counters or indices
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
                if value.is_floating_point():  # a copy: never write into the caller's tensors
                    accumulator = torch.promote_types(value.dtype, torch.float32)
                    mean[key] = value.to(accumulator, copy=True)
                else:
                    mean[key] = value.clone()
            continue
        _check_same_layout(mean, state, count)
        for key, value in state.items():
            if value.is_floating_point():
                # mean_k = mean_{k-1} + (x_k - mean_{k-1}) / k; in place, no temporary when
                # the value is already in the accumulator's dtype and device.
                mean[key].lerp_(value.detach().to(mean[key].device, mean[key].dtype), 1.0 / count)
    if count == 0:
        raise ValueError("average_state_dicts needs at least one state dict")
    del state  # the last worker's weights: free them before the cast
    # Cast back one tensor at a time, dropping its accumulator as it goes (a no-op for float32).
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
