"""The driver: one job spec through the three phases on Ray, into one run directory.

Run: swap run configs/quickstart.yaml   (or: from swap.driver import run_job)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from swap import metrics, storage
from swap.catalog import STREAMED_DATASETS
from swap.data.common import Splits
from swap.data.registry import prepare_data
from swap.errors import RunInterrupted
from swap.interrupts import stop_on_signals
from swap.live import RunView
from swap.phases.phase1 import run_phase1
from swap.phases.phase2 import run_phase2, start_phase2_processes
from swap.phases.phase3 import run_phase3
from swap.phases.placement import check_gpus, check_phase1_fits, check_stream_cpus, share_data
from swap.ray_session import connect_ray
from swap.report import print_summary, write_report
from swap.rundir import MODEL_FILE, finished_and_intact, open_run, save_results
from swap.spec import Spec
from swap.storage import join


def run_job(
    spec: Spec, console: Console | None = None, resume: str | None = None, verbose: bool = False
) -> dict:
    """Run the three phases; return what `results.json` holds. Ray is started if not running.

    With `resume` (a run directory of the same spec), a phase that finished there is not run
    again: phase 1 continues from its last checkpointed epoch, phase 2 keeps its finished
    workers whose checkpoints are intact and resumes or reruns the others, and phase 3 runs
    again. A finished run whose checkpoints are all intact is left as it is.

    While it runs, `console` shows its progress (swap.live: a live table in a terminal, plain
    lines elsewhere); with `verbose`, the training processes' own output instead, as Ray
    forwards it. The first SIGINT or SIGTERM stops the run where it is: what runs is
    cancelled, the run is recorded as interrupted (resumable), and RunInterrupted is raised.
    """
    console = console or Console()
    started = time.perf_counter()
    if resume is not None and (finished := finished_and_intact(spec, resume)) is not None:
        console.print(
            f"{finished['run_dir']}: finished, and every checkpoint in its manifest matches its "
            "SHA-256: nothing to do",
            soft_wrap=True,
        )
        return finished
    if spec.data.dataset in STREAMED_DATASETS:  # described with Ray Data: Ray first
        connect_ray(log_to_driver=verbose)
    # Built once, here: a missing file, bad data or a batch too large fail before a run
    # directory exists or Ray starts.
    spec, splits = prepare_data(spec)
    connect_ray(log_to_driver=verbose)
    check_gpus(spec, console)  # GPUs torch cannot use: named before a run directory exists
    check_phase1_fits(spec, console)  # a rank no node can hold would wait for ever
    if splits.stream is not None:
        check_stream_cpus(spec)
    run_dir, results = open_run(spec, resume)  # results.json is written: resumable from here
    results["data"] = splits.summary  # sizes, classes, the validation split's chance accuracy
    earlier_seconds = results.get("total_seconds", 0.0)
    console.print(f"[bold]swap[/] {spec.name}: run directory {run_dir}", soft_wrap=True)
    labels = metrics.Labels(results["run_id"], spec.name)

    def save() -> None:
        results["total_seconds"] = earlier_seconds + time.perf_counter() - started
        save_results(run_dir, results)

    view = None if verbose else RunView(run_dir, console)
    refresh = view.flush if view is not None else lambda: None
    try:
        with stop_on_signals(), view or contextlib.nullcontext():
            console.print(metrics.scrape_hint(labels), soft_wrap=True)
            phases(spec, splits, run_dir, results, Context(console, labels, save, refresh))
    except RunInterrupted as exc:
        phase = results.get("current_phase", 1)
        results.update(status="interrupted", error=f"interrupted by {exc.signal_name}")
        results["interrupted_in_phase"] = phase
        metrics.set_phase(labels, metrics.INTERRUPTED)
        exc.run_dir, exc.phase = run_dir, phase
        raise
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


@dataclass(frozen=True)
class Context:
    """What the phases' placement shares with the driver: its console, metrics labels, the
    save of results.json, and the view's refresh (before the driver prints a line)."""

    console: Console
    labels: metrics.Labels
    save: Callable[[], None]
    refresh: Callable[[], None]

    def entering(self, results: dict[str, Any], phase: int, title: str) -> None:
        self.refresh()
        results["current_phase"] = phase
        self.save()
        self.console.rule(f"phase {phase}: {title}")


def phases(spec: Spec, splits: Splits, run_dir: str, results: dict[str, Any], job: Context) -> None:
    """The three phases of one run, those finished in an earlier attempt kept."""
    metrics.set_phase(job.labels, metrics.PENDING)
    data = share_data(splits)  # every process of the job reads it from Ray's object store
    # Phase 2's processes start (imports, data) while phase 1 trains, on CPUs it leaves free:
    # the switch only hands them the weights.
    warmed = start_phase2_processes(spec, data, beside_phase1="phase1" not in results)
    job.entering(results, 1, "large-batch data-parallel SGD")
    if "phase1" in results:
        job.console.print("phase 1 finished in an earlier attempt: kept")
    else:
        results["phase1"] = run_phase1(spec, run_dir, data, splits.stream)
    job.entering(results, 2, "independent small-batch workers")
    weights = join(results["phase1"]["checkpoint"], MODEL_FILE)
    sha, earlier = results["phase1"]["sha256"], results.get("phase2")
    results["phase2"] = run_phase2(spec, run_dir, data, weights, sha, job.console, warmed,
                                   earlier, job.refresh)  # fmt: skip
    job.entering(results, 3, "average, refresh BatchNorm, evaluate")
    keep_earlier_final(run_dir, results, job.console)
    results["phase3"] = run_phase3(spec, run_dir, data, results["phase2"]["workers"], weights)
    job.refresh()
    mark_dropped(results["phase2"]["workers"], results["phase3"]["dropped"])
    warn_if_chance(results, job.console)
    results["status"] = "finished"
    metrics.set_phase(job.labels, metrics.DONE)


def keep_earlier_final(run_dir: str, results: dict[str, Any], console: Console) -> None:
    """Before phase 3 runs again on a resumed run, an earlier final/model.pt that averaged
    other workers than those finished now is kept beside it, and the console says so: a saved
    result is never replaced silently by an average of fewer workers."""
    earlier = results.get("phase3")
    final = join(run_dir, "final", MODEL_FILE)
    if earlier is None or not storage.exists(final):
        return
    now = sorted(w["index"] for w in results["phase2"]["workers"] if w["status"] == "finished")
    if now == sorted(earlier["averaged_workers"]):
        return
    kept = join(run_dir, "final", f"model-earlier-{results.get('resumed', 0)}.pt")
    storage.write_bytes(kept, storage.read_bytes(final))
    results.setdefault("earlier_finals", []).append(
        {
            "model": kept,
            "sha256": earlier["sha256"],
            "averaged_workers": earlier["averaged_workers"],
        }
    )
    console.print(
        f"[yellow]phase 3: the earlier final/model.pt averaged workers "
        f"{earlier['averaged_workers']}, workers {now} are finished now: it is kept as {kept}[/]",
        soft_wrap=True,
    )


def warn_if_chance(results: dict[str, Any], console: Console) -> None:
    """Flag each finished worker and the final model that is no better than chance on the
    validation split (what always guessing its most common class scores): a `warning` in
    results.json, a line here, a mark in the table. They are averaged all the same: the
    numbers say what happened; the warning says it is not a model."""
    chance = (results.get("data") or {}).get("chance_val_accuracy")
    if chance is None:
        return
    finished = [w for w in results["phase2"]["workers"] if w["status"] == "finished"]
    models = [(f"phase 2  worker {w['index']}", w) for w in finished]
    for name, record in [*models, ("phase 3  the average", results["phase3"])]:
        val = record.get("val_accuracy")
        if val is not None and val <= chance:
            record["warning"] = (
                f"no better than chance on validation: {val:.2%}, and always guessing its "
                f"most common class scores {chance:.2%}"
            )
            console.print(f"[yellow]{name}: {record['warning']}[/]", soft_wrap=True)


def mark_dropped(workers: list[dict[str, Any]], dropped: dict[int, str]) -> None:
    """Workers the coordinator could not average (a corrupted checkpoint) are dropped."""
    for worker in workers:
        reason = dropped.get(worker["index"])
        if reason is not None:
            worker.update(status="dropped", error=reason)
