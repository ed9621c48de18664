"""The driver: one job spec through the three phases on Ray, into one run directory.

Run: swap run configs/quickstart.yaml   (or: from swap.driver import run_job)
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from swap import metrics
from swap.data.registry import prepare_data
from swap.phases.phase1 import run_phase1
from swap.phases.phase2 import run_phase2, start_phase2_processes
from swap.phases.phase3 import run_phase3
from swap.phases.placement import check_gpus, share_data
from swap.ray_session import connect_ray
from swap.report import print_summary, write_report
from swap.rundir import MODEL_FILE, open_run, save_results
from swap.spec import Spec
from swap.storage import join


def run_job(spec: Spec, console: Console | None = None, resume: str | None = None) -> dict:
    """Run the three phases; return what `results.json` holds. Ray is started if not running.

    With `resume` (a run directory of the same spec), a phase that finished there is not run
    again, and phase 2 keeps its finished workers and resumes the others from their last epoch.
    """
    console = console or Console()
    started = time.perf_counter()
    # Built once, here: a missing file or a batch too large fails before a run directory or Ray.
    spec, splits = prepare_data(spec)
    connect_ray()
    check_gpus(spec, console)  # GPUs torch cannot use: named before a run directory exists
    run_dir, results = open_run(spec, resume)
    earlier_seconds = results.get("total_seconds", 0.0)
    console.print(f"[bold]swap[/] {spec.name}: run directory {run_dir}", soft_wrap=True)
    labels = metrics.Labels(results["run_id"], spec.name)

    def save() -> None:
        results["total_seconds"] = earlier_seconds + time.perf_counter() - started
        save_results(run_dir, results)

    try:
        console.print(metrics.scrape_hint(labels), soft_wrap=True)
        metrics.set_phase(labels, metrics.PENDING)
        data = share_data(splits)  # every process of the job reads it from Ray's object store
        # Phase 2's processes start (imports, data) while phase 1 trains: the switch only
        # hands them the weights.
        warmed = start_phase2_processes(spec, data) if "phase2" not in results else []
        console.rule("phase 1: large-batch data-parallel SGD")
        if "phase1" in results:
            console.print("phase 1 finished in an earlier attempt: kept")
        else:
            results["phase1"] = run_phase1(spec, run_dir, data)
        save()
        console.rule("phase 2: independent small-batch workers")
        weights = join(results["phase1"]["checkpoint"], MODEL_FILE)
        if "phase2" not in results:
            sha = results["phase1"]["sha256"]
            results["phase2"] = run_phase2(spec, run_dir, data, weights, sha, console, warmed)
        save()
        console.rule("phase 3: average, refresh BatchNorm, evaluate")
        results["phase3"] = run_phase3(spec, run_dir, data, results["phase2"]["workers"], weights)
        mark_dropped(results["phase2"]["workers"], results["phase3"]["dropped"])
        results["status"] = "finished"
        metrics.set_phase(labels, metrics.DONE)
    except BaseException as exc:
        results["status"] = "failed"
        metrics.set_phase(labels, metrics.FAILED)
        results["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise
    finally:
        save()
    print_summary(results, console)
    write_report(results, run_dir, console)
    return results


def mark_dropped(workers: list[dict[str, Any]], dropped: dict[int, str]) -> None:
    """Workers the coordinator could not average (a corrupted checkpoint) are dropped."""
    for worker in workers:
        reason = dropped.get(worker["index"])
        if reason is not None:
            worker.update(status="dropped", error=reason)
