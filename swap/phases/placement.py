"""What a worker of each phase asks Ray for, shared by the three phases' placements.

Run: python -c "from swap.phases.placement import worker_resources; help(worker_resources)"
"""

from __future__ import annotations

from typing import Any

from swap.spec import Spec


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


def throughput(history: list[dict[str, Any]]) -> float:
    """Samples per second of training, over all epochs (evaluation and start-up excluded)."""
    seconds = sum(h["seconds"] for h in history)
    return sum(h["samples"] for h in history) / seconds if seconds else 0.0
