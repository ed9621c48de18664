"""What a swap job spends besides training: start-up, the phase switch, phase 3's own cost, and
in all, on the quickstart, against a running Ray and from cold, next to Ray Train's own start-up
(a no-op training function) measured in the same run.

Run: .venv/bin/python bench/fixed_costs.py [--repeats 5] [--config configs/quickstart.yaml]

Each repeat runs, interleaved: `swap run` against the Ray this script started (RAY_ADDRESS), a
cold `swap run` (it starts its own local Ray), and a TorchTrainer with a function that returns
at once, on the workers and CPUs of the spec's phase 1. Times come from each run's results.json
(Unix times of every epoch's end, and of the job's start) and from when this script launched
`swap run`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from measure import REPO, RESULTS, SWAP, local_ray, run_swap, step_began, summary, write_results

TARGETS = {  # seconds, from the issue: quickstart on this machine, medians
    "launch_to_first_step_running": 4.0,
    "launch_to_first_step_cold": 10.0,
    "phase_switch": 1.5,
    "phase3_beyond_bn_and_eval": 1.0,
    "overhead_running": 8.0,
}


def main() -> None:
    args = arguments()
    from swap.spec import load_spec

    spec = load_spec(args.config, args.overrides)  # the no-op fit gets phase 1's layout
    layout = (spec.phase1.workers, spec.resources.phase1_cpus)
    host, address = local_ray()
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="swap-fixed-") as scratch:
        for repeat in range(1, args.repeats + 1):
            measured = {
                **{f"{k}_running": v for k, v in swap_run(args, scratch, address).items()},
                "ray_train_noop_fit": ray_train_noop(*layout),
                **{f"{k}_cold": v for k, v in swap_run(args, scratch, None).items()},
            }
            for key, value in measured.items():
                rows.setdefault(key, []).append(value)
            print(f"repeat {repeat}: " + ", ".join(f"{k} {v:.2f}" for k, v in measured.items()))
    stats = {key: summary(values) for key, values in rows.items()}
    print(
        f"\n{'seconds (median of n)':<44} {'n':>2} {'median':>7} {'mean ± std':>14} {'target':>7}"
    )
    for key, s in stats.items():
        target = TARGETS.get(key)
        mark = (
            "" if target is None else f"{target:>6.1f}{' ok' if s['median'] <= target else ' MISS'}"
        )
        print(
            f"{key:<44} {s['n']:>2} {s['median']:>7.2f} {s['mean']:>6.2f} ± {s['std']:<5.2f} {mark}"
        )
    write_results(args.out / "fixed_costs.json", host, measurements=rows, summary=stats,
                  targets=TARGETS)  # fmt: skip


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "quickstart.yaml"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="spec overrides")
    return parser.parse_args()


def swap_run(args: argparse.Namespace, scratch: str, address: str | None) -> dict[str, float]:
    """One `swap run` as a user types it; its fixed costs from its results.json."""
    results, launched = run_swap([SWAP, "run", args.config, *args.overrides], scratch, address)
    return costs(results, launched, address is not None)


def costs(results: dict[str, Any], launched: float, running: bool) -> dict[str, float]:
    p1, p3 = results["phase1"], results["phase3"]
    first_step = step_began(p1["history"][0])
    epochs = [h for w in results["phase2"]["workers"] for h in w["history"]]
    spans = sorted((step_began(h), h["ended_at"]) for h in epochs)
    training = sum(h["seconds"] for h in p1["history"]) + covered(spans)
    measured = {
        "launch_to_first_step": first_step - launched,
        "job_start_to_first_step": first_step - results["started_at"],
        "overhead": results["total_seconds"] - training,
        "total": results["total_seconds"],
        "training_on_critical_path": training,
    }
    if running:  # the phase switch and phase 3 cost the same, cold or not
        measured["phase_switch"] = spans[0][0] - p1["history"][-1]["ended_at"]
        measured["phase3_beyond_bn_and_eval"] = (
            p3["wall_seconds"] - p3["bn_refresh_seconds"] - p3["evaluation_seconds"]
        )
    return measured


def covered(spans: list[tuple[float, float]]) -> float:
    """Seconds during which at least one of the (start, end) spans ran (sorted by start)."""
    total, end = 0.0, float("-inf")
    for start, stop in spans:
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def ray_train_noop(workers: int, cpus: float) -> float:
    """Ray Train's own cost: fit() of a function that returns at once, on `workers` workers of
    `cpus` CPUs each."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    with tempfile.TemporaryDirectory(prefix="swap-noop-") as storage:
        trainer = TorchTrainer(
            lambda config: None,
            scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": cpus}),
            run_config=RunConfig(storage_path=storage, name="noop"),
        )
        started = time.perf_counter()
        trainer.fit()
        return time.perf_counter() - started


if __name__ == "__main__":
    main()
