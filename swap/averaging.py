"""Equal-weight averaging of model weights, streamed one state dict at a time.

Run: python -c "from swap.averaging import average_state_dicts; help(average_state_dicts)"
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

SLICE = 1 << 16  # elements added at a time: the float64 copy of an input slice is 512 KiB


def average_state_dicts(state_dicts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The element-wise mean of `state_dicts`, each weighted equally.

    Streaming: pass a generator that loads one state dict at a time, and memory holds the float64
    sums (two float32 models' worth) plus the one state dict being added, never all W.

    Floating-point tensors (parameters, BatchNorm running statistics) are summed in float64,
    each input cast as it is added (a slice at a time), divided once and cast back to their own
    dtype one tensor at a time. float64 holds the sum of W float32 weights exactly unless they
    cancel across magnitudes some 2^29 apart, so the result is the exact mean rounded to the
    tensor's dtype: it does not drift with W as a float32 running mean does. Other tensors are
    counters or indices (BatchNorm's `num_batches_tracked`), whose mean means nothing: they are
    taken from the first state dict. `refresh_bn` resets the BatchNorm ones anyway. So are
    entries that are not tensors at all: a module's `get_extra_state()` may return an object
    (a config, a quantization observer's settings), saved under `<module>._extra_state`. In a
    checkpoint swap reads (`torch.load(weights_only=True)`) such an object can only be made of
    plain containers and scalars (dicts, lists, strings, numbers); others fail to load.
    """
    sums: dict[str, Any] = {}  # keyed and shaped as the first state dict: the layout
    dtypes: dict[str, torch.dtype | None] = {}
    count = 0
    for state in state_dicts:
        count += 1
        if count == 1:
            sums, dtypes = _start(state)
        else:
            _check_same_layout(sums, state, count)
            for key, total in sums.items():
                if _is_float(total):
                    _add(total, state[key].detach())
        del state  # before the next one is loaded: one state dict in memory at a time
    if count == 0:
        raise ValueError("average_state_dicts needs at least one state dict")
    # Cast back one tensor at a time, dropping its float64 sum as it goes: the peak stays at
    # the sums plus one state dict, not also the whole result.
    return {key: _mean_of(sums.pop(key), count, dtypes[key]) for key in list(sums)}


def _add(total: Tensor, value: Tensor) -> None:
    """`total += value`, in slices along the first dimension: the add casts `value` to float64
    (and moves it to the sums' device) through a temporary copy, which this keeps to about
    SLICE elements, or one row where a row is larger."""
    if total.dim() == 0 or total.numel() <= SLICE:
        total.add_(value.to(total.device))
        return
    rows = max(1, SLICE * total.shape[0] // total.numel())
    for start in range(0, total.shape[0], rows):
        total[start : start + rows].add_(value[start : start + rows].to(total.device))


def _is_float(value: Any) -> bool:
    return isinstance(value, Tensor) and value.is_floating_point()


def _start(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, torch.dtype | None]]:
    """The sums the first state dict starts, and its dtypes.

    A function of its own, so that no loop variable outlives it: a memory-mapped state dict's
    tensors share one mapping, and one tensor kept alive would keep the whole file in memory.
    """
    sums = {  # copies, also of float64 inputs: the sums must never alias a caller's tensor
        k: v.detach().to(torch.float64, copy=True) if _is_float(v) else _copy(v)
        for k, v in state.items()
    }
    return sums, {k: v.dtype if isinstance(v, Tensor) else None for k, v in state.items()}


def _copy(value: Any) -> Any:
    return value.clone() if isinstance(value, Tensor) else copy.deepcopy(value)


def _mean_of(total: Any, count: int, dtype: torch.dtype | None) -> Any:
    return total.div_(count).to(dtype) if _is_float(total) else total


def _check_same_layout(sums: Mapping[str, Any], state: Mapping[str, Any], index: int):
    if sums.keys() != state.keys():
        missing = sorted(sums.keys() - state.keys())
        extra = sorted(state.keys() - sums.keys())
        raise ValueError(
            f"state dict {index} does not match the first: missing {missing}, extra {extra}"
        )
    for key, value in state.items():
        if isinstance(value, Tensor) != isinstance(sums[key], Tensor):
            raise ValueError(f"state dict {index}: {key} is a tensor in one and not the other")
        if isinstance(value, Tensor) and value.shape != sums[key].shape:
            raise ValueError(
                f"state dict {index}: {key} has shape {tuple(value.shape)}, "
                f"the first has {tuple(sums[key].shape)}"
            )
