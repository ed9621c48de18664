"""Phase 2 on Ray: one task per worker, each failing alone; a killed one reruns from its epoch.

Run: called by swap.driver.run_job; the worker itself is swap/phases/phase2_worker.py (no Ray).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import ray
from ray import ObjectRef
from rich.console import Console

from swap import metrics, seeds, storage
from swap.catalog import STREAMED_DATASETS
from swap.data.common import Splits
from swap.errors import DivergenceError, SwapError, first_line, ray_failure_in
from swap.models.registry import build_model
from swap.phases.phase2_worker import phase2_worker
from swap.phases.placement import (
    STREAM_CPUS,
    concurrent_slots,
    phase1_cpus_held,
    remote_task,
    throughput,
)
from swap.rundir import (
    FAILURE,
    RESULT,
    attempts_record,
    phase2_dir,
    read_json,
    record_attempt,
    record_error,
    verify,
    write_json,
)
from swap.spec import Spec
from swap.storage import join
from swap.training import sgd, use_cpus


def start_phase2_processes(spec: Spec, data: ObjectRef, beside_phase1: bool) -> list[ObjectRef]:
    """Start the processes phase 2 will train in, while phase 1 trains: as many as can run at
    once (`warm_up_count`), each importing what a worker needs and reading the job's data once.

    A warm-up task asks for no resources, so it runs beside phase 1; when it returns, its
    process waits in Ray's pool, and Ray hands a phase-2 task an idle process of the job
    before starting a new one. On the local Ray swap starts, idle processes are kept
    (RAY_num_workers_soft_limit in swap.ray_session); on a cluster whose raylets reap idle
    workers sooner, phase 2 starts cold, as it would without this.

    Not with GPUs: every GPU task starts in a fresh process of its own (placement.remote_task),
    so a warmed CPU process would never be used, only idle beside the job.
    """
    if spec.resources.use_gpu:
        return []
    count = warm_up_count(spec, ray.cluster_resources(), beside_phase1)
    warm = ray.remote(warm_up).options(
        num_cpus=0, scheduling_strategy=spec.resources.phase2_scheduling
    )
    return [warm.remote(spec, data) for _ in range(count)]


def warm_up_count(spec: Spec, cluster: dict[str, float], beside_phase1: bool) -> int:
    """How many phase-2 processes to warm up on a `cluster` of these resources: as many as
    phase 2 runs at once, but `beside_phase1` (it has yet to train) no more than the whole
    CPUs its ranks (and a streamed set's Ray Data tasks) leave free in the cluster (a count:
    Ray places them). A warm-up beside phase 1 on the CPUs phase 1 uses only moves
    time from the phase switch to phase 1's start and first epochs, with Ray Train's start-up
    the slower for it (docs/BENCHMARKS.md, section 2)."""
    slots = concurrent_slots(spec, spec.phase2.workers, cluster)
    if not beside_phase1:
        return slots
    held = phase1_cpus_held(spec) + (STREAM_CPUS if spec.data.dataset in STREAMED_DATASETS else 0)
    free = round(cluster.get("CPU", 0) - held, 6)  # CPUs as typed: 1.3 - 0.3 is 0.999...
    return max(0, min(slots, math.floor(free)))


def warm_up(spec: Spec, splits: Splits) -> int:
    """What a phase-2 task does before its first step that does not need phase 1's weights:
    the imports (loading this function does most; torch's optimizers import torch._dynamo,
    a second, on first use), and the data read once."""
    sgd(build_model(spec.model, splits.info), spec.phase2.lr, 0.0, 0.0)
    return os.getpid()


def run_phase2(
    spec: Spec,
    run_dir: str,
    data: ObjectRef,
    phase1_weights: str,
    phase1_sha256: str,
    console: Console,
    warmed: Sequence[ObjectRef] = (),
    earlier: dict[str, Any] | None = None,
    refresh: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """One Ray task per worker on the job's `data`, each forking the weights at
    `phase1_weights` (a path or URI, checked against `phase1_sha256`). A worker whose process
    or node dies is rerun from its last epoch (up to `phase2.max_retries` times); one that still
    fails is dropped, alone. `warmed`: the warm-up tasks of `start_phase2_processes`.

    On a resumed run (`earlier`: phase 2's record from before, if it got that far), workers
    that finished with intact checkpoints are kept, those that diverged stay failed, and every
    other is run again: from its last good epoch, or from the phase-1 weights. If the run is
    interrupted, the workers still running are cancelled. `refresh`: brings the driver's view
    up to date before a line about a worker is printed."""
    started = time.perf_counter()
    labels = metrics.Labels.of_run(spec.name, run_dir)
    metrics.set_phase(labels, 2)
    if warmed:  # their processes idle, ready to be reused, before any task asks for one
        ray.wait(list(warmed), num_returns=len(warmed))
    workers = kept_workers(spec, run_dir, earlier, console)
    task = remote_task(
        phase2_task,
        spec,
        scheduling_strategy=spec.resources.phase2_scheduling,
        max_retries=spec.phase2.max_retries,
        retry_exceptions=[OSError],  # storage hiccups; not divergence, not bugs
    )
    queued = [index for index in range(spec.phase2.workers) if index not in workers]
    at_once = stream_slots(spec) if spec.data.dataset in STREAMED_DATASETS else len(queued)
    pending: dict[ObjectRef, int] = {}
    try:
        while queued or pending:
            while queued and len(pending) < at_once:
                index = queued.pop(0)
                ref = task.remote(spec, index, data, phase1_weights, run_dir, phase1_sha256)
                pending[ref] = index
            metrics.record_phase2_workers(labels, len(pending) + len(queued), workers.values())
            [ref], _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(ref)
            workers[index] = collect(spec, run_dir, index, ref, console, refresh)
            if workers[index]["status"] == "finished":
                metrics.record_evaluation(labels.at(2, index), workers[index])
    except BaseException:  # interrupted: stop the workers, which resume from their epochs
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    metrics.record_phase2_workers(labels, 0, workers.values())
    seconds = time.perf_counter() - started
    metrics.record_phase_seconds(labels, 2, seconds)
    before = (earlier or {}).get("seconds", 0.0)
    return {"seconds": before + seconds, "workers": [workers[i] for i in sorted(workers)]}


def stream_slots(spec: Spec) -> int:
    """How many phase-2 workers may run at once on a streamed data set: as many as leave a CPU
    of the cluster free for Ray Data's own tasks (listing, reading), which a worker waits on
    while it holds its CPUs; at least one."""
    total = ray.cluster_resources().get("CPU", 0)
    return max(1, int((total - 1) // spec.resources.cpus_per_worker))


def collect(
    spec: Spec,
    run_dir: str,
    index: int,
    ref: ObjectRef,
    console: Console,
    refresh: Callable[[], None],
) -> dict[str, Any]:
    """Worker `index`'s record once its task ended: its result, or why it failed."""
    try:
        worker = ray.get(ref)
    except ray.exceptions.RayError as exc:
        worker = failed_worker(spec, run_dir, index, exc)
        write_json(join(phase2_dir(run_dir, index), FAILURE), worker)  # for `swap status`
        refresh()
        console.print(f"[red]phase 2  worker {index} dropped:[/] {worker['error']}")
        return worker
    refresh()  # its last epochs' lines before the line that it finished
    for skipped in worker.get("resume_fallbacks", []):
        console.print(f"[yellow]phase 2  worker {index}: skipped {skipped}[/]", soft_wrap=True)
    console.print(
        f"phase 2  worker {index} finished: test acc {worker['test_accuracy']:.2%} "
        f"in {worker['seconds']:.1f}s (attempts: {worker['attempts']})"
    )
    return worker


def kept_workers(
    spec: Spec, run_dir: str, earlier: dict[str, Any] | None, console: Console
) -> dict[int, dict[str, Any]]:
    """The workers not to train again: those that finished in an earlier attempt of this run
    with their checkpoints intact, and those that diverged (a rerun would diverge again). A
    finished worker whose model.pt or swag.pt is missing or damaged is run again (from its last
    good resume point), and the console says why."""
    failed = {w["index"]: w for w in (earlier or {}).get("workers", []) if w["status"] == "failed"}
    kept = {}
    for index in range(spec.phase2.workers):
        location = join(phase2_dir(run_dir, index), RESULT)
        if storage.exists(location):
            problem = damaged(location)
            if problem is None:
                kept[index] = read_json(location)
                console.print(f"phase 2  worker {index} finished in an earlier attempt: kept")
                continue
            storage.delete(location)  # not finished any more: no later attempt may keep it
            console.print(
                f"[yellow]phase 2  worker {index}: {problem}: training it again from its last "
                "good resume point[/]",
                soft_wrap=True,
            )
        elif index in failed and failed[index].get("failure") == DIVERGED:
            kept[index] = failed[index]
            console.print(f"phase 2  worker {index} diverged in an earlier attempt: not rerun")
        elif index in failed:
            console.print(
                f"phase 2  worker {index} failed in an earlier attempt "
                f"({failed[index]['error']}): running it again",
                soft_wrap=True,
            )
    return kept


def damaged(result: str) -> str | None:
    """Why a finished worker's record (its result.json) or the files it names cannot be
    trusted any more (missing, truncated, changed), or None if they all can."""
    try:
        record = read_json(result)
        verify(record["checkpoint"], record["sha256"])
        if "swag" in record:
            verify(record["swag"], record["swag_sha256"])
    except SwapError as exc:
        return str(exc)
    return None


DIVERGED = "diverged"  # a worker's loss went non-finite: not rerun, here or on --resume


def failure_kind(exc: Exception) -> str:
    """Why a worker's task failed: `diverged`; `storage` (an OSError: storage, or Ray
    losing a node or actor under the worker); `error` (another exception in the worker);
    `process` (its process or node died, or it was cancelled)."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        if isinstance(exc.cause, DivergenceError):
            return DIVERGED
        return "storage" if isinstance(exc.cause, OSError) else "error"
    return "process"


def failed_worker(spec: Spec, run_dir: str, index: int, exc: Exception) -> dict[str, Any]:
    lines = str(exc).strip().splitlines()
    return {
        "index": index,
        "seed": seeds.worker_seed(spec.seed, index),
        "status": "failed",
        **{k: v for k, v in attempts_record(phase2_dir(run_dir, index)).items() if k != "pid"},
        "failure": failure_kind(exc),
        "error": lines[-1] if lines else type(exc).__name__,
    }


def phase2_task(
    spec: Spec, index: int, splits: Splits, phase1_weights: str, run_dir: str, phase1_sha256: str
) -> dict[str, Any]:
    """Record this attempt, train worker `index` where the task runs, and mark it finished in
    the run's storage. (`splits` arrives as the object the driver shared: Ray resolves it.)"""
    directory = phase2_dir(run_dir, index)
    node_id = ray.get_runtime_context().get_node_id()
    attempt = record_attempt(directory, pid=os.getpid(), node_id=node_id)
    events = metrics.WorkerMetrics(metrics.Labels.of_run(spec.name, run_dir).at(2, index))
    threads = use_cpus(spec.resources.cpus_per_worker)
    try:
        result = phase2_worker(spec, index, splits, phase1_weights, run_dir, events,
                               phase1_sha256)  # fmt: skip
    except Exception as exc:  # why, for the retry after it and `swap status`
        cause = ray_failure_in(exc)
        if cause is None:
            record_error(directory, exc)
            raise
        lost = OSError(first_line(cause))
        record_error(directory, lost)  # Ray lost a node or actor under the worker: Ray reruns
        raise lost from exc  # OSErrors (retry_exceptions), as it does a storage error
    result.update(
        node_id=node_id,
        attempts=attempt["attempts"],
        nodes=attempt["nodes"],  # one per run: where it ran before a node was lost, too
        torch_threads=threads,
        samples_per_second=throughput(result["history"]),
    )
    write_json(join(directory, RESULT), result)
    return result
