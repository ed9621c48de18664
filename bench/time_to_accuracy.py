"""Time to accuracy: small-batch SGD, large-batch SGD and SWAP over a sweep of budgets, n seeds.

Run: .venv/bin/python bench/time_to_accuracy.py [--seeds 5] [--config SPEC.yaml]

The curves: small- and large-batch SGD in plain PyTorch (bench/plain_pytorch.py: one process
with both cores, the faster way to run them here) at each epoch budget, and SWAP as a whole swap
job (against the Ray this script starts) at each (phase-1 epochs, phase-2 epochs) budget. The
reference points, at one budget each: the same SGD in plain PyTorch DDP on 2 processes and as a
swap single-phase run (phase 1 alone on Ray Train), so swap's overheads count against it. Every
run of a seed is one job of the same 2 CPUs; the order is rotated per seed. Writes
bench/results/time_to_accuracy.json and .png; prints SWAP's time to reach small-batch SGD's
final accuracy (-0.2 points) as a ratio of small-batch SGD's time.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from measure import RESULTS, command_line, describe_machine, machine, summary, write_results
from plain_pytorch import Arm, run

from swap.spec import load_spec

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "fashion_mnist_mlp.yaml"
MEASURED = ("test_accuracy", "val_accuracy", "seconds")
TOLERANCE = 0.002  # SWAP's target: small-batch SGD's final accuracy minus 0.2 points


@dataclass(frozen=True)
class Budget:
    """One point of a curve: an arm run for `epochs` (SGD) or `phase1`+`phase2` epochs (SWAP)."""

    arm: str  # small, large, swap; or a reference: small-ddp, large-ddp, small-swap, large-swap
    epochs: int = 0
    phase1: int = 0
    phase2: int = 0

    @property
    def label(self) -> str:
        return f"{self.phase1}+{self.phase2}" if self.arm == "swap" else str(self.epochs)


CURVES = ("small", "large", "swap")
NAMES = {
    "small": "small-batch SGD (plain PyTorch)",
    "large": "large-batch SGD (plain PyTorch)",
    "swap": "SWAP (swap job)",
    "small-ddp": "small-batch SGD, plain DDP x2",
    "large-ddp": "large-batch SGD, plain DDP x2",
    "small-swap": "small-batch SGD, swap phase 1 alone",
    "large-swap": "large-batch SGD, swap phase 1 alone",
}


def main() -> None:
    args = arguments()
    if args.summarize:  # the analysis again, from a run's JSON: nothing is measured
        saved = json.loads(args.summarize.read_text())
        saved.update(report(saved["runs"], args.out), summarized_by=command_line())
        args.summarize.write_text(json.dumps(saved, indent=1) + "\n")
        return
    recipe = load_spec(args.config)
    budgets = plan(recipe, args)
    host = machine()
    print(describe_machine(host))
    print(describe(recipe, args))
    import ray  # after swap, which applied its Ray settings: Ray reads them as it is imported

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=args.verbose)
    runs = []
    with tempfile.TemporaryDirectory(prefix="swap-tta-") as scratch:
        warm_up(recipe, scratch)
        for k in range(args.seeds):
            seed = recipe.seed + k
            for budget in budgets[k % len(budgets) :] + budgets[: k % len(budgets)]:
                record = measure(budget, seed, recipe, args, scratch)
                runs.append(record)
                print(
                    f"seed {seed} {NAMES[budget.arm]:<36} {budget.label:>5}: test "
                    f"{record['test_accuracy']:.2%}  {record['seconds']:6.1f} s",
                    flush=True,
                )
    ray.shutdown()
    analysis = report(runs, args.out)
    write_results(args.out / "time_to_accuracy.json", host, setup=describe(recipe, args),
                  **analysis, runs=runs)  # fmt: skip


def report(runs: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """Print the table and the verdict, draw the plot; return both for the JSON."""
    points = summarize(runs)
    verdict = judge(points)
    print_table(points)
    print("\n".join(verdict))
    plot(points, out / "time_to_accuracy.png")
    return {"points": points, "verdict": verdict}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG), help="the SWAP recipe (a swap spec)")
    parser.add_argument("--seeds", type=int, default=5, help="runs per budget (seed, seed+1, ...)")
    parser.add_argument("--small-batch", type=int, default=64)
    parser.add_argument("--small-lr", type=float, default=0.05)
    parser.add_argument("--small-epochs", default="5,10,20", help="small-batch budgets")
    parser.add_argument("--large-epochs", default="5,10,20", help="large-batch budgets")
    parser.add_argument(
        "--swap-epochs", default="5+2,10+2,10+4,10+8", help="SWAP budgets: phase-1+phase-2 epochs"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--verbose", action="store_true", help="show the workers' progress")
    parser.add_argument(
        "--summarize", type=Path, metavar="JSON", help="redo the analysis of a saved run's JSON"
    )
    return parser.parse_args()


def plan(recipe: Any, args: argparse.Namespace) -> list[Budget]:
    """Every budget one seed runs: the three curves, then each reference at its largest."""
    ints = lambda text: [int(x) for x in text.split(",")]  # noqa: E731
    small, large = ints(args.small_epochs), ints(args.large_epochs)
    swap = [tuple(int(x) for x in pair.split("+")) for pair in args.swap_epochs.split(",")]
    return [
        *(Budget("small", epochs=e) for e in small),
        *(Budget("large", epochs=e) for e in large),
        *(Budget("swap", phase1=p1, phase2=p2) for p1, p2 in swap),
        Budget("small-ddp", epochs=min(small)),  # per-step all-reduce: the slowest; one point
        Budget("large-ddp", epochs=max(large)),
        Budget("small-swap", epochs=max(small)),
        Budget("large-swap", epochs=max(large)),
    ]


def describe(recipe: Any, args: argparse.Namespace) -> dict[str, str]:
    p1, p2 = recipe.phase1, recipe.phase2
    return {
        "data": f"{recipe.data.dataset} (augment {recipe.data.augment}, val_fraction "
        f"{recipe.data.val_fraction}), model {recipe.model.arch}",
        "small": f"batch {args.small_batch}, peak lr {args.small_lr:g}, epochs {args.small_epochs}",
        "large": f"batch {p1.batch_size}, peak lr {p1.lr:g}, epochs {args.large_epochs}",
        "swap": f"phase 1 as large-batch SGD for the first number of epochs; phase 2: "
        f"{p2.workers} workers x the second number of epochs at batch {p2.batch_size}, lr "
        f"{p2.lr:g} {p2.schedule}; phase 3 average + BN refresh; budgets {args.swap_epochs}",
        "sgd": f"momentum {p1.momentum}, weight decay {p1.weight_decay}, "
        f"{p1.warmup_epochs} warm-up epoch(s) then linear decay to 0 at the budget",
        "clock": "plain PyTorch: from before its processes start to its test accuracy; swap: "
        "the job's total_seconds (phase 1 alone: from its data preparation to its end), "
        "against a running Ray",
    }


def measure(budget: Budget, seed: int, recipe: Any, args: argparse.Namespace, scratch: str):
    p1 = recipe.phase1
    small = budget.arm.startswith("small")
    batch, lr = (args.small_batch, args.small_lr) if small else (p1.batch_size, p1.lr)
    if budget.arm in ("small", "large", "small-ddp", "large-ddp"):
        processes = 2 if budget.arm.endswith("ddp") else 1
        arm = Arm(
            str(args.config),
            seed,
            batch,
            lr,
            budget.epochs,
            processes,
            p1.warmup_epochs,
            p1.momentum,
            p1.weight_decay,
        )
        result = run(arm)
    elif budget.arm == "swap":
        result = run_swap(swap_spec(recipe, seed, scratch, budget))
    else:
        workers = 1 if small else p1.workers  # one rank, both cores: the faster small batch
        result = run_phase1_alone(
            swap_spec(recipe, seed, scratch, budget, batch_size=batch, lr=lr, workers=workers)
        )
    return {"arm": budget.arm, "budget": budget.label, "seed": seed, **result}


def swap_spec(recipe: Any, seed: int, scratch: str, budget: Budget, **phase1: Any) -> Any:
    """The recipe for one run: its seed, scratch output and the budget's epochs; `phase1`
    fields (batch_size, lr, workers) replace the recipe's for the single-phase references."""
    from swap.spec import spec_from_dict

    raw = recipe.to_dict()
    name = f"{budget.arm}-{budget.label.replace('+', '-')}"
    raw.update(seed=seed, output={"dir": scratch}, name=name)
    epochs = budget.phase1 or budget.epochs
    raw["phase1"].update(stop_train_accuracy=None, max_epochs=epochs, **phase1)
    raw["phase2"]["epochs"] = budget.phase2 or raw["phase2"]["epochs"]
    if phase1.get("workers") == 1:  # one rank on both cores
        raw["resources"]["cpus_per_worker"] = 2
    return spec_from_dict(raw, name)


def warm_up(recipe: Any, scratch: str) -> None:
    """One short untimed SWAP job and plain run, so the first timed run pays no cold caches."""
    run_swap(swap_spec(recipe, recipe.seed, scratch, Budget("swap", phase1=2, phase2=1)))


def run_swap(spec: Any) -> dict[str, Any]:
    """A whole SWAP job; its wall-clock is the job's own `total_seconds`."""
    from rich.console import Console

    from swap.driver import run_job

    results = run_job(spec, Console(file=io.StringIO()))
    return {
        "test_accuracy": results["phase3"]["test_accuracy"],
        "val_accuracy": results["phase3"]["val_accuracy"],
        "seconds": results["total_seconds"],
        "phase1_test_accuracy": results["phase1"]["test_accuracy"],
        "phase_seconds": [results[p]["seconds"] for p in ("phase1", "phase2", "phase3")],
    }


def run_phase1_alone(spec: Any) -> dict[str, Any]:
    """swap's phase 1 by itself (a single-phase run), timed from its data preparation."""
    from swap.data.registry import prepare_data
    from swap.phases.phase1 import run_phase1
    from swap.phases.placement import share_data
    from swap.rundir import new_run_dir

    started = time.perf_counter()
    spec, splits = prepare_data(spec)
    result = run_phase1(spec, new_run_dir(spec.output.dir, spec.name), share_data(splits))
    return {
        "test_accuracy": result["test_accuracy"],
        "val_accuracy": result["val_accuracy"],
        "seconds": time.perf_counter() - started,
    }


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (arm, budget): test and validation accuracy and seconds over the seeds."""
    keys = dict.fromkeys((r["arm"], r["budget"]) for r in runs)
    points = []
    for arm, budget in keys:
        mine = [r for r in runs if (r["arm"], r["budget"]) == (arm, budget)]
        points.append(
            {
                "arm": arm,
                "budget": budget,
                **{k: summary([r[k] for r in mine]) for k in MEASURED},
            }
        )
    return points


def curve(points: list[dict[str, Any]], arm: str) -> list[dict[str, Any]]:
    return sorted((p for p in points if p["arm"] == arm), key=lambda p: p["seconds"]["mean"])


def judge(points: list[dict[str, Any]]) -> list[str]:
    """SWAP's time to small-batch SGD's final accuracy - 0.2 points, as a ratio of small-batch
    SGD's time (its last budget, and its own first budget to reach that target), and SWAP's
    accuracy against large-batch SGD's at the same time (interpolated on its curve)."""
    small, large, swap = (curve(points, arm) for arm in CURVES)
    final = small[-1]
    target = final["test_accuracy"]["mean"] - TOLERANCE
    lines = [
        f"target: small-batch SGD's final mean test accuracy {final['test_accuracy']['mean']:.2%}"
        f" ({final['budget']} epochs, {final['seconds']['mean']:.1f} s) - 0.2 points = "
        f"{target:.2%}"
    ]
    reached = [p for p in swap if p["test_accuracy"]["mean"] >= target]
    own = next(p for p in small if p["test_accuracy"]["mean"] >= target)
    if reached:
        first = reached[0]
        lines.append(
            f"SWAP reaches it at budget {first['budget']} in {first['seconds']['mean']:.1f} s: "
            f"{first['seconds']['mean'] / final['seconds']['mean']:.2f}x small-batch SGD's time "
            f"({own['seconds']['mean'] / final['seconds']['mean']:.2f}x for small-batch SGD's "
            f"own first budget that reaches it, {own['budget']} epochs)"
        )
    else:
        best = max(swap, key=lambda p: p["test_accuracy"]["mean"])
        lines.append(
            f"SWAP does NOT reach it: its best mean is {best['test_accuracy']['mean']:.2%} "
            f"(budget {best['budget']}, {best['seconds']['mean']:.1f} s), "
            f"{(target - best['test_accuracy']['mean']) * 100:.2f} points short"
        )
    times = [p["seconds"]["mean"] for p in large]
    accuracies = [p["test_accuracy"]["mean"] for p in large]
    for p in swap:
        at, accuracy = p["seconds"]["mean"], p["test_accuracy"]["mean"]
        if at <= times[-1]:
            equal = float(np.interp(at, times, accuracies))
            where = "at the same time (interpolated on its curve)"
        else:  # beyond its longest budget: its curve has flattened there (see the table)
            equal = accuracies[-1]
            where = f"at its longest budget ({large[-1]['budget']} epochs, {times[-1]:.1f} s)"
        lines.append(
            f"SWAP {p['budget']} ({at:.1f} s): {accuracy:.2%} vs large-batch SGD {where} "
            f"{equal:.2%} ({(accuracy - equal) * 100:+.2f} points)"
        )
    return lines


def print_table(points: list[dict[str, Any]]) -> None:
    print(
        f"\n{'arm':<36} {'budget':>6} {'n':>2}  {'test acc %':>13}  {'val acc %':>13}  "
        f"{'seconds':>13}  {'median s':>8}"
    )
    for p in points:
        test, val, sec = p["test_accuracy"], p["val_accuracy"], p["seconds"]
        print(
            f"{NAMES[p['arm']]:<36} {p['budget']:>6} {test['n']:>2}  "
            f"{test['mean'] * 100:6.2f} ± {test['std'] * 100:4.2f}  "
            f"{val['mean'] * 100:6.2f} ± {val['std'] * 100:4.2f}  "
            f"{sec['mean']:6.1f} ± {sec['std']:4.1f}  {sec['median']:8.1f}"
        )


def plot(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for arm in NAMES:
        mine = curve(points, arm)
        if not mine:
            continue
        x = [p["seconds"]["mean"] for p in mine]
        y = [p["test_accuracy"]["mean"] * 100 for p in mine]
        axes.errorbar(
            x,
            y,
            xerr=[p["seconds"]["std"] for p in mine],
            yerr=[p["test_accuracy"]["std"] * 100 for p in mine],
            fmt="o-" if arm in CURVES else "s",
            capsize=3,
            label=f"{NAMES[arm]} (n={mine[0]['test_accuracy']['n']})",
        )
        for p, xi, yi in zip(mine, x, y, strict=True):
            axes.annotate(p["budget"], (xi, yi), xytext=(4, 4), textcoords="offset points")
    axes.set_xlabel("wall-clock seconds (mean ± std over seeds)")
    axes.set_ylabel("test accuracy % (mean ± std)")
    axes.set_title("Time to accuracy on 2 CPUs (labels: epochs; SWAP: phase-1+phase-2 epochs)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
