"""What the three phases' placements share: the job's data in Ray's object store, and what a
worker of each phase asks Ray for.

Run: python -c "from swap.phases.placement import worker_resources; help(worker_resources)"
"""

from __future__ import annotations

import pickle
from typing import Any

import ray

from swap.data.common import Splits
from swap.errors import SwapError
from swap.spec import Spec


def share_data(splits: Splits) -> ray.ObjectRef:
    """The job's data, put once into Ray's object store. Its arrays reach every process of a
    node without a copy (numpy arrays, read-only), and each node at most once."""
    try:
        return ray.put(splits)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise SwapError(
            f"data.dataset: its data sets cannot be sent to Ray's workers ({exc}); return "
            "data sets that pickle (tensors, arrays, file paths; not open files or locks)"
        ) from None


def worker_resources(spec: Spec, phase: int = 2) -> dict[str, float]:
    """What one worker of a phase asks Ray for: CPUs, GPUs when used, custom resources.

    A phase-1 rank takes a whole GPU, whatever `gpus_per_worker` says: NCCL cannot run two ranks
    of one group on one GPU. Phase-2 workers and the coordinator may share GPUs (fractions).
    """
    r = spec.resources
    gpu = {"GPU": 1.0 if phase == 1 else r.gpus_per_worker} if r.use_gpu else {}
    return {"CPU": r.cpus_per_worker, **gpu, **r.custom}


def task_options(spec: Spec) -> dict[str, Any]:
    """Ray task options for phase-2 workers and the phase-3 coordinator."""
    resources = worker_resources(spec)
    return {
        "max_retries": 0,
        "num_cpus": resources.pop("CPU"),
        "num_gpus": resources.pop("GPU", 0),
        "resources": resources,
    }


def concurrent_slots(spec: Spec, wanted: int) -> int:
    """How many of `wanted` phase-2 workers the cluster can run at once (at least one)."""
    total = ray.cluster_resources()
    needs = worker_resources(spec).items()
    fits = [total.get(name, 0) / amount for name, amount in needs if amount]
    return max(1, min(wanted, int(min(fits, default=wanted))))


def throughput(history: list[dict[str, Any]]) -> float:
    """Samples per second of training, over all epochs (evaluation and start-up excluded)."""
    seconds = sum(h["seconds"] for h in history)
    return sum(h["samples"] for h in history) / seconds if seconds else 0.0
