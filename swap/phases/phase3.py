"""Phase 3 on Ray: the coordinator as one task, next to the storage, not on the driver.

Run: called by swap.driver.run_job; the coordinator is swap/phases/phase3_coordinator.py.
"""

from __future__ import annotations

import time
from typing import Any

import ray
from ray import ObjectRef

from swap import metrics
from swap.errors import JobFailed
from swap.phases.phase3_coordinator import phase3_coordinator
from swap.phases.placement import remote_task
from swap.spec import Spec
from swap.training import use_cpus


def run_phase3(
    spec: Spec, run_dir: str, data: ObjectRef, workers: list[dict[str, Any]], phase1: str
) -> dict[str, Any]:
    """Combine the finished workers (phase 2's `workers` records) into `final/model.pt`, on the
    job's `data`, and evaluate them beside the `phase1` weights. On CPUs the task lands in an
    idle phase-2 process, its imports and data read; on a GPU, in a fresh process."""
    finished = {
        w["index"]: (w["checkpoint"], w["sha256"]) for w in workers if w["status"] == "finished"
    }
    if len(finished) < spec.phase2.min_workers:  # no coordinator for a job that must fail
        raise JobFailed(
            f"phase 2: {len(finished)} of {spec.phase2.workers} workers finished; "
            f"phase2.min_workers is {spec.phase2.min_workers}"
        )
    swag = {
        w["index"]: (w["swag"], w["swag_sha256"])
        for w in workers
        if w["status"] == "finished" and "swag" in w
    }
    labels = metrics.Labels.of_run(spec.name, run_dir)
    metrics.set_phase(labels, 3)
    task = remote_task(phase3_task, spec)
    started = time.perf_counter()
    try:
        result = ray.get(task.remote(spec, data, finished, run_dir, phase1, swag))
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, JobFailed):
            raise exc.cause from None
        raise
    result["wall_seconds"] = time.perf_counter() - started  # as the driver waited for it
    metrics.record_phase3(labels, result)
    return result


def phase3_task(spec: Spec, *args: Any) -> dict[str, Any]:
    """The coordinator, in the task's process, with torch's threads set from its Ray CPUs."""
    threads = use_cpus(spec.resources.cpus_per_worker)
    return {**phase3_coordinator(spec, *args), "torch_threads": threads}
