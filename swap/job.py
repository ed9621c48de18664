"""The driver: one job spec through the three phases on Ray, into one run directory.

Run: swap run configs/quickstart.yaml   (or: from swap.job import run_job)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ray
from ray.train import Checkpoint, CheckpointConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from rich.console import Console

from swap.checkpoints import atomic_write, new_run_dir, write_json
from swap.cluster import connect_ray
from swap.phase1 import phase1_worker
from swap.phase2 import phase2_worker, worker_seed
from swap.phase3 import phase3_coordinator
from swap.results import print_summary, versions
from swap.spec import Spec


def run_job(spec: Spec, console: Console | None = None) -> dict[str, Any]:
    """Run all three phases; return what `results.json` holds. Ray is started if not running."""
    console = console or Console()
    started = time.perf_counter()
    run_dir = new_run_dir(spec.output.dir, spec.name)
    atomic_write(run_dir / "spec.yaml", lambda tmp: tmp.write_text(spec.to_yaml()))
    results: dict[str, Any] = {
        "name": spec.name,
        "run_id": run_dir.name,
        "run_dir": str(run_dir),
        "status": "running",
        "spec": spec.to_dict(),
        "versions": versions(),
    }
    console.print(f"[bold]swap[/] {spec.name}: run directory {run_dir}", soft_wrap=True)
    try:
        connect_ray()
        console.rule("phase 1: large-batch data-parallel SGD")
        results["phase1"], checkpoint = run_phase1(spec, run_dir)
        write_json(run_dir / "results.json", results)
        console.rule("phase 2: independent small-batch workers")
        results["phase2"] = run_phase2(spec, run_dir, checkpoint, console)
        write_json(run_dir / "results.json", results)
        console.rule("phase 3: average, refresh BatchNorm, evaluate")
        results["phase3"] = run_phase3(spec, run_dir, results["phase2"]["workers"])
        results["status"] = "finished"
    except BaseException as exc:
        results["status"] = "failed"
        results["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise
    finally:
        results["total_seconds"] = time.perf_counter() - started
        write_json(run_dir / "results.json", results)
    print_summary(results, console)
    return results


def run_phase1(spec: Spec, run_dir: Path) -> tuple[dict[str, Any], Checkpoint]:
    """Phase 1 as one Ray Train run; its checkpoints go to `<run_dir>/phase1/`."""
    started = time.perf_counter()
    gpu = spec.resources.use_gpu
    trainer = TorchTrainer(
        phase1_worker,
        train_loop_config={"spec": spec.to_dict()},
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=spec.phase1.workers,
            use_gpu=gpu,
            resources_per_worker=worker_resources(spec),
        ),
        run_config=RunConfig(
            name="phase1",
            storage_path=str(run_dir),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    result = trainer.fit()  # raises if training failed
    summary = dict(result.return_value)
    history = summary["history"]
    summary["seconds"] = time.perf_counter() - started
    summary["samples_per_second"] = _throughput(history)
    summary["checkpoint"] = result.checkpoint.path
    return summary, result.checkpoint


def run_phase2(
    spec: Spec, run_dir: Path, checkpoint: Checkpoint, console: Console
) -> dict[str, Any]:
    """One Ray task per worker, no retries: a failure is recorded and costs only that worker."""
    started = time.perf_counter()
    task = ray.remote(phase2_task).options(max_retries=0, **task_resources(spec))
    pending = {
        task.remote(spec.to_dict(), index, checkpoint, str(run_dir)): index
        for index in range(spec.phase2.workers)
    }
    workers: dict[int, dict[str, Any]] = {}
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        index = pending.pop(ref)
        try:
            workers[index] = ray.get(ref)
            console.print(
                f"phase 2  worker {index} finished: "
                f"test acc {workers[index]['test_accuracy']:.2%} "
                f"in {workers[index]['seconds']:.1f}s"
            )
        except ray.exceptions.RayError as exc:
            error = str(exc).strip().splitlines()[-1]
            workers[index] = {
                "index": index,
                "seed": worker_seed(spec, index),
                "status": "failed",
                "error": error,
            }
            console.print(f"[red]phase 2  worker {index} failed:[/] {error}")
    return {
        "seconds": time.perf_counter() - started,
        "workers": [workers[i] for i in sorted(workers)],
    }


def phase2_task(
    spec: dict[str, Any], index: int, checkpoint: Checkpoint, run_dir: str
) -> dict[str, Any]:
    """Fetch the phase-1 checkpoint where this task runs, then train worker `index`."""
    with checkpoint.as_directory() as phase1_dir:
        result = phase2_worker(Spec.model_validate(spec), index, Path(phase1_dir), Path(run_dir))
    result["node_id"] = ray.get_runtime_context().get_node_id()
    result["samples_per_second"] = _throughput(result["history"])
    return result


def run_phase3(spec: Spec, run_dir: Path, workers: list[dict[str, Any]]) -> dict[str, Any]:
    """The coordinator runs as one Ray task, next to the storage, not on the driver."""
    finished = {w["index"]: w["checkpoint"] for w in workers if w["status"] == "finished"}
    if not finished:
        raise RuntimeError("phase 2: every worker failed; there is nothing to average")
    task = ray.remote(phase3_coordinator).options(max_retries=0, **task_resources(spec))
    return ray.get(task.remote(spec, finished, run_dir))


def worker_resources(spec: Spec) -> dict[str, float]:
    resources = {"CPU": spec.resources.cpus_per_worker}
    if spec.resources.use_gpu:
        resources["GPU"] = 1
    return resources


def task_resources(spec: Spec) -> dict[str, float]:
    return {"num_cpus": spec.resources.cpus_per_worker, "num_gpus": int(spec.resources.use_gpu)}


def _throughput(history: list[dict[str, Any]]) -> float:
    """Samples per second of training, over all epochs (evaluation and start-up excluded)."""
    seconds = sum(h["seconds"] for h in history)
    return sum(h["samples"] for h in history) / seconds if seconds else 0.0
