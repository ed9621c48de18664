"""Placing each phase on Ray: a Ray Train run, one task per phase-2 worker, one coordinator.

Run: used by swap.job.run_job; each function here places work and collects results, no math.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import ray
from ray.train import (
    Checkpoint,
    CheckpointConfig,
    FailureConfig,
    LoggingConfig,
    RunConfig,
    ScalingConfig,
)
from ray.train.torch import TorchConfig, TorchTrainer
from rich.console import Console

from swap import ddp, metrics, seeds, storage
from swap.checkpoints import (
    RESULT,
    attempts_record,
    phase2_dir,
    read_json,
    record_attempt,
    write_json,
)
from swap.errors import JobFailed
from swap.phase1 import phase1_worker
from swap.phase2 import phase2_worker
from swap.phase3 import phase3_coordinator
from swap.spec import Spec
from swap.storage import join


def run_phase1(spec: Spec, run_dir: str) -> tuple[dict[str, Any], Checkpoint]:
    """Phase 1 as one Ray Train run; its checkpoints go to `<run_dir>/phase1/`.

    Ray Train restarts the group from the last epoch's checkpoint after a worker dies (up to
    `phase1.max_failures` times), and a rerun into the same run directory resumes there too.
    """
    started = time.perf_counter()
    labels = metrics.Labels.of_run(spec.name, run_dir)
    metrics.set_phase(labels, 1)
    gpu = spec.resources.use_gpu
    trainer = TorchTrainer(
        phase1_worker,
        train_loop_config={"spec": spec.to_dict(), "run_id": labels.job},
        torch_config=TorchConfig(backend=ddp.backend(gpu)),
        scaling_config=ScalingConfig(
            num_workers=spec.phase1.workers,
            use_gpu=gpu,
            resources_per_worker=worker_resources(spec, phase=1),
            placement_strategy=spec.resources.phase1_placement,
        ),
        run_config=RunConfig(
            name="phase1",
            storage_path=run_dir,
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            failure_config=FailureConfig(max_failures=spec.phase1.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    result = trainer.fit()  # raises if training failed
    summary = dict(result.return_value)
    if "diverged" in summary:
        raise JobFailed(
            f"phase 1 diverged: {summary['diverged']} "
            "(lower phase1.lr or raise phase1.warmup_epochs)"
        )
    summary["seconds"] = time.perf_counter() - started
    summary["samples_per_second"] = throughput(summary["history"])
    # Ray gives the path inside its file system; record where a user finds it.
    summary["checkpoint"] = join(run_dir, "phase1", result.checkpoint.path.rpartition("/")[2])
    metrics.record_phase1(labels, summary)
    return summary, result.checkpoint


def phase1_checkpoint(summary: dict[str, Any]) -> Checkpoint:
    """The checkpoint a finished phase 1 left, for a resumed job."""
    filesystem, path = storage.resolve(summary["checkpoint"])
    return Checkpoint(path, filesystem=filesystem)


def run_phase2(
    spec: Spec, run_dir: str, checkpoint: Checkpoint, phase1_sha256: str, console: Console
) -> dict[str, Any]:
    """One Ray task per worker. A worker whose process or node dies is rerun from its last
    epoch (up to `phase2.max_retries` times); one that still fails is dropped, alone."""
    started = time.perf_counter()
    labels = metrics.Labels.of_run(spec.name, run_dir)
    metrics.set_phase(labels, 2)
    workers = finished_earlier(spec, run_dir, console)
    options = {
        **task_options(spec),
        "scheduling_strategy": spec.resources.phase2_scheduling,
        "max_retries": spec.phase2.max_retries,
        "retry_exceptions": [OSError],  # storage hiccups; not divergence, not bugs
    }
    task = ray.remote(phase2_task).options(**options)
    pending = {
        task.remote(spec.to_dict(), index, checkpoint, run_dir, phase1_sha256): index
        for index in range(spec.phase2.workers)
        if index not in workers
    }
    while pending:
        metrics.record_phase2_workers(labels, len(pending), workers.values())
        [ref], _ = ray.wait(list(pending), num_returns=1)
        index = pending.pop(ref)
        try:
            workers[index] = ray.get(ref)
        except ray.exceptions.RayError as exc:
            workers[index] = failed_worker(spec, run_dir, index, exc)
            console.print(f"[red]phase 2  worker {index} dropped:[/] {workers[index]['error']}")
            continue
        metrics.record_evaluation(labels.at(2, index), workers[index])
        console.print(
            f"phase 2  worker {index} finished: test acc {workers[index]['test_accuracy']:.2%} "
            f"in {workers[index]['seconds']:.1f}s (attempts: {workers[index]['attempts']})"
        )
    metrics.record_phase2_workers(labels, 0, workers.values())
    seconds = time.perf_counter() - started
    metrics.record_phase_seconds(labels, 2, seconds)
    return {"seconds": seconds, "workers": [workers[i] for i in sorted(workers)]}


def finished_earlier(spec: Spec, run_dir: str, console: Console) -> dict[int, dict[str, Any]]:
    """Workers that finished in an earlier attempt of this job: they are not trained again."""
    done = {}
    for index in range(spec.phase2.workers):
        location = join(phase2_dir(run_dir, index), RESULT)
        if storage.exists(location):
            done[index] = read_json(location)
            console.print(f"phase 2  worker {index} finished in an earlier attempt: kept")
    return done


def failed_worker(spec: Spec, run_dir: str, index: int, exc: Exception) -> dict[str, Any]:
    lines = str(exc).strip().splitlines()
    return {
        "index": index,
        "seed": seeds.worker_seed(spec.seed, index),
        "status": "failed",
        **{k: v for k, v in attempts_record(phase2_dir(run_dir, index)).items() if k != "pid"},
        "error": lines[-1] if lines else type(exc).__name__,
    }


def phase2_task(
    spec: dict[str, Any], index: int, checkpoint: Checkpoint, run_dir: str, phase1_sha256: str
) -> dict[str, Any]:
    """Record this attempt, fetch the phase-1 checkpoint where the task runs, train worker
    `index`, and mark it finished in the run's storage."""
    resolved = Spec.model_validate(spec)
    directory = phase2_dir(run_dir, index)
    node_id = ray.get_runtime_context().get_node_id()
    attempt = record_attempt(directory, pid=os.getpid(), node_id=node_id)
    labels = metrics.Labels.of_run(resolved.name, run_dir).at(2, index)
    with checkpoint.as_directory() as phase1_dir:
        result = phase2_worker(
            resolved, index, Path(phase1_dir), run_dir, metrics.WorkerProgress(labels),
            phase1_sha256=phase1_sha256,
        )  # fmt: skip
    result.update(
        node_id=node_id,
        attempts=attempt["attempts"],
        nodes=attempt["nodes"],  # one per run: where it ran before a node was lost, too
        samples_per_second=throughput(result["history"]),
    )
    write_json(join(directory, RESULT), result)
    return result


def run_phase3(spec: Spec, run_dir: str, workers: list[dict[str, Any]]) -> dict[str, Any]:
    """The coordinator runs as one Ray task, next to the storage, not on the driver."""
    finished = {
        w["index"]: (w["checkpoint"], w["sha256"]) for w in workers if w["status"] == "finished"
    }
    if len(finished) < spec.phase2.min_workers:
        raise JobFailed(
            f"phase 2: {len(finished)} of {spec.phase2.workers} workers finished; "
            f"phase2.min_workers is {spec.phase2.min_workers}"
        )
    labels = metrics.Labels.of_run(spec.name, run_dir)
    metrics.set_phase(labels, 3)
    task = ray.remote(phase3_coordinator).options(**task_options(spec))
    try:
        result = ray.get(task.remote(spec, finished, run_dir))
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, JobFailed):
            raise exc.cause from None
        raise
    metrics.record_phase3(labels, result)
    return result


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
