"""The driver: one job spec through the three phases on Ray, into one run directory.

Run: swap run configs/quickstart.yaml   (or: from swap.job import run_job)
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from swap import metrics, storage
from swap.checkpoints import MODEL_FILE, new_run_dir, read_json, write_json, write_text
from swap.cluster import connect_ray
from swap.data import prepare_data
from swap.errors import SpecError, SwapError
from swap.launch import phase1_checkpoint, run_phase1, run_phase2, run_phase3
from swap.report import write_report
from swap.results import print_summary, versions
from swap.spec import Spec, parse_spec
from swap.storage import join


def run_job(spec: Spec, console: Console | None = None, resume: str | None = None) -> dict:
    """Run the three phases; return what `results.json` holds. Ray is started if not running.

    With `resume` (a run directory of the same spec), a phase that finished there is not run
    again, and phase 2 keeps its finished workers and resumes the others from their last epoch.
    """
    console = console or Console()
    started = time.perf_counter()
    # Data paths made absolute here; missing files fail before a run directory or Ray exists.
    spec = prepare_data(spec)
    run_dir, results = open_run(spec, resume)
    earlier_seconds = results.get("total_seconds", 0.0)
    console.print(f"[bold]swap[/] {spec.name}: run directory {run_dir}", soft_wrap=True)
    labels = metrics.Labels(results["run_id"], spec.name)

    def save_progress() -> None:
        results["total_seconds"] = earlier_seconds + time.perf_counter() - started
        save(run_dir, results)

    try:
        connect_ray()
        console.print(metrics.scrape_hint(labels), soft_wrap=True)
        metrics.set_phase(labels, metrics.PENDING)
        console.rule("phase 1: large-batch data-parallel SGD")
        if "phase1" in results:
            console.print("phase 1 finished in an earlier attempt: kept")
            checkpoint = phase1_checkpoint(results["phase1"])
        else:
            results["phase1"], checkpoint = run_phase1(spec, run_dir)
        save_progress()
        console.rule("phase 2: independent small-batch workers")
        if "phase2" not in results:
            sha = results["phase1"]["sha256"]
            results["phase2"] = run_phase2(spec, run_dir, checkpoint, sha, console)
        save_progress()
        console.rule("phase 3: average, refresh BatchNorm, evaluate")
        results["phase3"] = run_phase3(spec, run_dir, results["phase2"]["workers"])
        mark_dropped(results["phase2"]["workers"], results["phase3"]["dropped"])
        results["status"] = "finished"
        metrics.set_phase(labels, metrics.DONE)
    except BaseException as exc:
        results["status"] = "failed"
        metrics.set_phase(labels, metrics.FAILED)
        results["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise
    finally:
        save_progress()
    print_summary(results, console)
    write_report(results, run_dir, console)
    return results


def open_run(spec: Spec, resume: str | None) -> tuple[str, dict[str, Any]]:
    """A new run directory with the spec saved, or the one to resume with what it recorded."""
    if resume is None:
        run_dir = new_run_dir(spec.output.dir, spec.name)
        write_text(join(run_dir, "spec.yaml"), spec.to_yaml())
        return run_dir, {
            "name": spec.name,
            "run_id": run_dir.rpartition("/")[2],
            "run_dir": run_dir,
            "status": "running",
            "spec": spec.to_dict(),
            "versions": versions(),
        }
    run_dir = storage.absolute(resume)
    saved_spec = join(run_dir, "spec.yaml")
    if not storage.exists(saved_spec):
        raise SwapError(f"--resume: {run_dir} is not a run directory (it has no spec.yaml)")
    saved = parse_spec(storage.read_bytes(saved_spec).decode(), saved_spec)
    differing = changed_fields(saved.to_dict(), spec.to_dict())
    if differing:
        raise SpecError(
            [f"--resume: the spec differs from {saved_spec} at {field}" for field in differing]
        )
    results = read_json(join(run_dir, "results.json"))
    results.update(status="running", resumed=results.get("resumed", 0) + 1)
    results.pop("error", None)
    return run_dir, results


def changed_fields(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    fields = []
    for key in sorted(a.keys() | b.keys()):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            fields += changed_fields(left, right, f"{prefix}{key}.")
        elif left != right:
            fields.append(f"{prefix}{key} ({left!r} there, {right!r} here)")
    return fields


def mark_dropped(workers: list[dict[str, Any]], dropped: dict[int, str]) -> None:
    """Workers the coordinator could not average (a corrupted checkpoint) are dropped."""
    for worker in workers:
        reason = dropped.get(worker["index"])
        if reason is not None:
            worker.update(status="dropped", error=reason)


def save(run_dir: str, results: dict[str, Any]) -> None:
    """results.json and manifest.json (the SHA-256 of every checkpoint), both atomic."""
    write_json(join(run_dir, "results.json"), results)
    write_json(join(run_dir, "manifest.json"), manifest(run_dir, results))


def manifest(run_dir: str, results: dict[str, Any]) -> dict[str, str]:
    files = {}
    if "phase1" in results:
        files[join(results["phase1"]["checkpoint"], MODEL_FILE)] = results["phase1"]["sha256"]
    for worker in results.get("phase2", {}).get("workers", []):
        if "sha256" in worker:
            files[worker["checkpoint"]] = worker["sha256"]
    if "phase3" in results:
        files[results["phase3"]["model"]] = results["phase3"]["sha256"]
    prefix = run_dir.rstrip("/") + "/"
    return {path.removeprefix(prefix): digest for path, digest in sorted(files.items())}
