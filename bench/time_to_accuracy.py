"""Time to accuracy: small-batch SGD, large-batch SGD and SWAP over a sweep of budgets, n seeds.

Run: .venv/bin/python bench/time_to_accuracy.py [--seeds 5] [--config SPEC.yaml] [--device cuda]

The curves: small- and large-batch SGD in plain PyTorch (bench/plain_pytorch.py: one process
with both cores, the faster way to run them here) at each epoch budget, and SWAP as a whole swap
job (against the Ray this script starts) at each (phase-1 epochs, phase-2 epochs) budget. The
reference points, at one budget each: the same SGD in plain PyTorch DDP on 2 processes and as a
swap single-phase run (phase 1 alone on Ray Train), so swap's overheads count against it. Every
run of a seed is one job of the same 2 CPUs; the order is rotated per seed. Writes
bench/results/time_to_accuracy.json and .png; prints SWAP's time to reach small-batch SGD's
final accuracy (-0.2 points) as a ratio of small-batch SGD's time.

On a GPU (--device cuda, configs/fashion_mnist_cnn_gpu.yaml; bench/gpu_check.sh runs it): the
plain PyTorch arms keep the data in the GPU's memory, and SWAP runs once per --swap-workers W,
its W phase-2 workers sharing the one GPU (resources.gpus_per_worker 1/W), where one small-batch
run leaves it mostly idle. No DDP references there (one GPU). --deadline stops before a seed it
could not finish; the JSON is rewritten after every run, so a run cut short keeps what it did.
"""

from __future__ import annotations

import argparse
import io
import json
import os
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
GPU_CONFIG = REPO / "configs" / "fashion_mnist_cnn_gpu.yaml"
MEASURED = ("test_accuracy", "val_accuracy", "seconds")
TOLERANCE = 0.002  # SWAP's target: small-batch SGD's final accuracy minus 0.2 points
GOAL = 0.3  # ... reached within this share of small-batch SGD's wall-clock (the GPU's goal)
DEFAULTS = {  # per device: on a GPU, sized for about 3 minutes (bench/gpu_check.sh's visit)
    "cpu": {"seeds": 5, "small_epochs": "5,10,20", "large_epochs": "5,10,20",
            "swap_epochs": "5+2,10+2,10+4,10+8", "swap_workers": ""},
    "cuda": {"seeds": 3, "small_epochs": "12", "large_epochs": "8,24", "swap_epochs": "8+2",
             "swap_workers": "4,8"},
}  # fmt: skip


@dataclass(frozen=True)
class Budget:
    """One point of a curve: an arm run for `epochs` (SGD) or `phase1`+`phase2` epochs (SWAP)."""

    arm: str  # small, large, swap (swap-w<W>: W workers); or a reference: small-ddp, large-ddp,
    # small-swap, large-swap
    epochs: int = 0
    phase1: int = 0
    phase2: int = 0
    workers: int = 0  # SWAP's phase-2 workers (0: the recipe's)

    @property
    def label(self) -> str:
        return f"{self.phase1}+{self.phase2}" if is_swap(self.arm) else str(self.epochs)


def is_swap(arm: str) -> bool:
    return arm == "swap" or arm.startswith("swap-w")


def name(arm: str) -> str:
    if arm.startswith("swap-w"):
        return f"SWAP, W={arm.removeprefix('swap-w')} (swap job)"
    return NAMES[arm]


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
    started = time.monotonic()  # --deadline counts from here: Ray's start and the warm-up too
    args = arguments()
    if args.summarize:  # the analysis again, from a run's JSON: nothing is measured
        saved = json.loads(args.summarize.read_text())
        saved.update(report(saved["runs"], args.out, args.device), summarized_by=command_line())
        args.summarize.write_text(json.dumps(saved, indent=1) + "\n")
        return
    recipe = load_spec(args.config, args.set)
    budgets = plan(recipe, args)
    host = machine()
    print(describe_machine(host))
    print(describe(recipe, args))
    import ray  # after swap, which applied its Ray settings: Ray reads them as it is imported

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=args.verbose)
    path = args.out / "time_to_accuracy.json"
    runs = []
    with tempfile.TemporaryDirectory(prefix="swap-tta-") as scratch:
        warm_up(recipe, args, scratch)
        for k in seeds_in_time(args, started):
            seed = recipe.seed + k
            for budget in budgets[k % len(budgets) :] + budgets[: k % len(budgets)]:
                record = measure(budget, seed, recipe, args, scratch)
                runs.append(record)
                print(
                    f"seed {seed} {name(budget.arm):<36} {budget.label:>5}: test "
                    f"{record['test_accuracy']:.2%}  {record['seconds']:6.1f} s",
                    flush=True,
                )
                save(path, host, setup=describe(recipe, args), runs=runs, complete=False)
    ray.shutdown()
    analysis = report(runs, args.out, args.device)
    write_results(path, host, setup=describe(recipe, args), **analysis, runs=runs,
                  complete=True)  # fmt: skip


def seeds_in_time(args: argparse.Namespace, started: float, clock=time.monotonic):
    """0, 1, ... --seeds - 1, stopping before a seed that would end after --deadline seconds
    from `started` (if it took as long as the last one)."""
    last = 0.0
    for k in range(args.seeds):
        elapsed = clock() - started
        if args.deadline and k and elapsed + last > args.deadline:
            print(f"--deadline {args.deadline:.0f} s: stopping after {k} seeds ({elapsed:.0f} s "
                  f"so far, {last:.0f} s a seed)", flush=True)  # fmt: skip
            return
        yield k
        last = clock() - started - elapsed


def save(path: Path, host: dict[str, Any], **results: Any) -> None:
    """The JSON so far, quietly: what a run cut short leaves (--summarize analyses it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": command_line(), "machine": host, **results}, indent=1))


def report(runs: list[dict[str, Any]], out: Path, device: str = "cpu") -> dict[str, Any]:
    """Print the table and the verdict, draw the plot; return both for the JSON, with one line
    per SWAP arm for bench/gpu_check.sh's summary."""
    points = summarize(runs)
    verdict, short = judge(points)
    print_table(points)
    print("\n".join(verdict))
    plot(points, out / "time_to_accuracy.png", device)
    return {"points": points, "verdict": verdict, "summary": short}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG), help="the SWAP recipe (a swap spec)")
    parser.add_argument(
        "--seeds", type=int, default=None, help="runs per budget (seed, seed+1, ...; 5, cuda: 3)"
    )
    parser.add_argument("--small-batch", type=int, default=64)
    parser.add_argument("--small-lr", type=float, default=0.05)
    parser.add_argument("--small-epochs", help="small-batch budgets (default: per device)")
    parser.add_argument("--large-epochs", help="large-batch budgets")
    parser.add_argument("--swap-epochs", help="SWAP budgets: phase-1+phase-2 epochs")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--swap-workers",
        help="SWAP arms by phase-2 workers sharing the device, e.g. 4,8 (default: the recipe's; "
        "cuda: 4,8)",
    )
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="overrides of the recipe"
    )
    parser.add_argument(
        "--references",
        action=argparse.BooleanOptionalAction,
        help="the DDP and single-phase reference points (default: on the CPU only)",
    )
    parser.add_argument(
        "--deadline", type=float, default=0, help="seconds: start no seed ending later (0: none)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--verbose", action="store_true", help="show the workers' progress")
    parser.add_argument(
        "--summarize", type=Path, metavar="JSON", help="redo the analysis of a saved run's JSON"
    )
    args = parser.parse_args()
    cuda = args.device == "cuda"
    args.references = not cuda if args.references is None else args.references
    if cuda and args.references:
        parser.error("--references: DDP on 2 processes is the CPU's reference; not on one GPU")
    for key, value in DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if cuda and args.config == str(CONFIG):
        args.config = str(GPU_CONFIG)
    return args


def plan(recipe: Any, args: argparse.Namespace) -> list[Budget]:
    """Every budget one seed runs: the three curves (a SWAP curve per --swap-workers), then each
    reference at its largest."""
    ints = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    small, large = ints(args.small_epochs), ints(args.large_epochs)
    swap = [tuple(int(x) for x in pair.split("+")) for pair in args.swap_epochs.split(",")]
    arms = [(f"swap-w{w}", w) for w in ints(args.swap_workers)] or [("swap", 0)]
    budgets = [
        *(Budget("small", epochs=e) for e in small),
        *(Budget("large", epochs=e) for e in large),
        *(Budget(arm, phase1=p1, phase2=p2, workers=w) for arm, w in arms for p1, p2 in swap),
    ]
    if not args.references:
        return budgets
    return [
        *budgets,
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
        f"{args.swap_workers or p2.workers} workers x the second number of epochs at batch "
        f"{p2.batch_size}, lr {p2.lr:g} {p2.schedule}, all at once on the {args.device}; phase 3 "
        f"average + BN refresh; budgets {args.swap_epochs}",
        "device": args.device,
        "overrides": " ".join(args.set),
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
            args.device,
            tuple(args.set),
        )
        result = run(arm)
    elif is_swap(budget.arm):
        result = run_swap(swap_spec(recipe, seed, scratch, budget, args.device))
    else:
        workers = 1 if small else p1.workers  # one rank, both cores: the faster small batch
        result = run_phase1_alone(
            swap_spec(
                recipe, seed, scratch, budget, args.device, batch_size=batch, lr=lr, workers=workers
            )
        )
    return {"arm": budget.arm, "budget": budget.label, "seed": seed, **result}


def swap_spec(
    recipe: Any, seed: int, scratch: str, budget: Budget, device: str, **phase1: Any
) -> Any:
    """The recipe for one run: its seed, scratch output, the budget's epochs and workers, on
    `device`; `phase1` fields (batch_size, lr, workers) replace the recipe's for the
    single-phase references."""
    from swap.spec import spec_from_dict

    raw = recipe.to_dict()
    name = f"{budget.arm}-{budget.label.replace('+', '-')}"
    raw.update(seed=seed, output={"dir": scratch}, name=name)
    epochs = budget.phase1 or budget.epochs
    raw["phase1"].update(stop_train_accuracy=None, max_epochs=epochs, **phase1)
    raw["phase2"]["epochs"] = budget.phase2 or raw["phase2"]["epochs"]
    raw["phase2"]["workers"] = budget.workers or raw["phase2"]["workers"]
    raw["resources"].update(on_device(raw["resources"], raw["phase2"]["workers"], device))
    if phase1.get("workers") == 1:  # one rank on both cores
        raw["resources"]["cpus_per_worker"] = 2
    return spec_from_dict(raw, name)


def on_device(resources: dict[str, Any], workers: int, device: str) -> dict[str, Any]:
    """The resources that run all `workers` phase-2 workers at once on `device`: a 1/W share
    of the GPU each, and of the cores if the recipe's CPUs per worker would not fit."""
    cpus = min(resources["cpus_per_worker"], (os.cpu_count() or 1) / workers)
    if device == "cuda":
        return {"use_gpu": True, "gpus_per_worker": 1 / workers, "cpus_per_worker": cpus}
    amp = "none" if resources["amp"] == "fp16" else resources["amp"]  # fp16 is GPU-only
    return {"use_gpu": False, "amp": amp, "cpus_per_worker": cpus}


def warm_up(recipe: Any, args: argparse.Namespace, scratch: str) -> None:
    """One short untimed SWAP job (and on a GPU, a plain run: CUDA's start-up in this process),
    so the first timed run pays no cold caches."""
    workers = int(args.swap_workers.split(",")[0]) if args.swap_workers else 0
    budget = Budget("swap", phase1=2, phase2=1, workers=workers)
    run_swap(swap_spec(recipe, recipe.seed, scratch, budget, args.device))
    if args.device == "cuda":
        p1 = recipe.phase1
        run(Arm(str(args.config), recipe.seed, p1.batch_size, p1.lr, 1, device=args.device,
                overrides=tuple(args.set)))  # fmt: skip


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


def judge(points: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """SWAP's time to small-batch SGD's final accuracy - 0.2 points, as a ratio of small-batch
    SGD's time (its last budget, and its own first budget to reach that target), and SWAP's
    accuracy against large-batch SGD's at the same time (interpolated on its curve); for each
    SWAP arm. Returns the verdict's lines and one short line per SWAP arm."""
    small, large = curve(points, "small"), curve(points, "large")
    if not small or not large:  # a run cut short before both SGD arms ran
        return ["no verdict: small- or large-batch SGD has no run"], []
    final = small[-1]
    target = final["test_accuracy"]["mean"] - TOLERANCE
    lines = [
        f"target: small-batch SGD's final mean test accuracy {final['test_accuracy']['mean']:.2%}"
        f" ({final['budget']} epochs, {final['seconds']['mean']:.1f} s) - 0.2 points = "
        f"{target:.2%}",
        large_against_small(large, final),
    ]
    short = []
    for arm in sorted({p["arm"] for p in points if is_swap(p["arm"])}):
        swap = curve(points, arm)
        label = "SWAP" if arm == "swap" else f"SWAP W={arm.removeprefix('swap-w')}"
        lines.append(time_to_target(label, swap, small, target))
        against = [against_large(label, p, large) for p in swap]
        lines += [line for line, _ in against]
        first = next((p for p in swap if p["test_accuracy"]["mean"] >= target), None)
        best = first or max(swap, key=lambda p: p["test_accuracy"]["mean"])
        ratio = best["seconds"]["mean"] / final["seconds"]["mean"]
        short.append(
            f"{label} {best['budget']}: {ratio:.2f}x small-batch SGD's time, "
            f"{(best['test_accuracy']['mean'] - final['test_accuracy']['mean']) * 100:+.2f} pts "
            f"vs it, {against[swap.index(best)][1] * 100:+.2f} vs large-batch at equal time"
            + ("" if first else " (target NOT reached)")
        )
    return lines, short


def large_against_small(large: list[dict[str, Any]], final: dict[str, Any]) -> str:
    """Whether this workload is one where large-batch SGD loses to small-batch SGD."""
    best = max(large, key=lambda p: p["test_accuracy"]["mean"])
    gap = (final["test_accuracy"]["mean"] - best["test_accuracy"]["mean"]) * 100
    return (
        f"large-batch SGD's best mean {best['test_accuracy']['mean']:.2%} ({best['budget']} "
        f"epochs) is {gap:.2f} points {'below' if gap > 0 else 'ABOVE'} small-batch SGD's final"
        + ("" if gap > 0 else ": large batches do not lose here; SWAP has nothing to win")
    )


def time_to_target(
    label: str, swap: list[dict[str, Any]], small: list[dict[str, Any]], target: float
) -> str:
    """When SWAP first reaches `target`, as a share of small-batch SGD's time (or how far off)."""
    final = small[-1]
    reached = [p for p in swap if p["test_accuracy"]["mean"] >= target]
    own = next(p for p in small if p["test_accuracy"]["mean"] >= target)
    if reached:
        first = reached[0]
        ratio = first["seconds"]["mean"] / final["seconds"]["mean"]
        return (
            f"{label} reaches it at budget {first['budget']} in {first['seconds']['mean']:.1f} "
            f"s: {ratio:.2f}x small-batch SGD's time "
            f"({own['seconds']['mean'] / final['seconds']['mean']:.2f}x for small-batch SGD's "
            f"own first budget that reaches it, {own['budget']} epochs); goal <= {GOAL}x: "
            + ("met" if ratio <= GOAL else "NOT met")
        )
    best = max(swap, key=lambda p: p["test_accuracy"]["mean"])
    return (
        f"{label} does NOT reach it: its best mean is {best['test_accuracy']['mean']:.2%} "
        f"(budget {best['budget']}, {best['seconds']['mean']:.1f} s), "
        f"{(target - best['test_accuracy']['mean']) * 100:.2f} points short"
    )


def against_large(
    label: str, point: dict[str, Any], large: list[dict[str, Any]]
) -> tuple[str, float]:
    """`point`'s accuracy against large-batch SGD's at the same time: a line, the difference."""
    times = [p["seconds"]["mean"] for p in large]
    accuracies = [p["test_accuracy"]["mean"] for p in large]
    at, accuracy = point["seconds"]["mean"], point["test_accuracy"]["mean"]
    if at <= times[-1]:
        equal = float(np.interp(at, times, accuracies))
        where = "at the same time (interpolated on its curve)"
    else:  # beyond its longest budget: its curve has flattened there (see the table)
        equal = accuracies[-1]
        where = f"at its longest budget ({large[-1]['budget']} epochs, {times[-1]:.1f} s)"
    line = (
        f"{label} {point['budget']} ({at:.1f} s): {accuracy:.2%} vs large-batch SGD {where} "
        f"{equal:.2%} ({(accuracy - equal) * 100:+.2f} points)"
    )
    return line, accuracy - equal


def print_table(points: list[dict[str, Any]]) -> None:
    print(
        f"\n{'arm':<36} {'budget':>6} {'n':>2}  {'test acc %':>13}  {'val acc %':>13}  "
        f"{'seconds':>13}  {'median s':>8}"
    )
    for p in points:
        test, val, sec = p["test_accuracy"], p["val_accuracy"], p["seconds"]
        print(
            f"{name(p['arm']):<36} {p['budget']:>6} {test['n']:>2}  "
            f"{test['mean'] * 100:6.2f} ± {test['std'] * 100:4.2f}  "
            f"{val['mean'] * 100:6.2f} ± {val['std'] * 100:4.2f}  "
            f"{sec['mean']:6.1f} ± {sec['std']:4.1f}  {sec['median']:8.1f}"
        )


def plot(points: list[dict[str, Any]], path: Path, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for arm in dict.fromkeys(p["arm"] for p in points):
        mine = curve(points, arm)
        x = [p["seconds"]["mean"] for p in mine]
        y = [p["test_accuracy"]["mean"] * 100 for p in mine]
        axes.errorbar(
            x,
            y,
            xerr=[p["seconds"]["std"] for p in mine],
            yerr=[p["test_accuracy"]["std"] * 100 for p in mine],
            fmt="o-" if arm in ("small", "large") or is_swap(arm) else "s",
            capsize=3,
            label=f"{name(arm)} (n={mine[0]['test_accuracy']['n']})",
        )
        for p, xi, yi in zip(mine, x, y, strict=True):
            axes.annotate(p["budget"], (xi, yi), xytext=(4, 4), textcoords="offset points")
    axes.set_xlabel("wall-clock seconds (mean ± std over seeds)")
    axes.set_ylabel("test accuracy % (mean ± std)")
    where = "one GPU" if device == "cuda" else f"{os.cpu_count()} CPUs"
    axes.set_title(f"Time to accuracy on {where} (labels: epochs; SWAP: phase-1+phase-2 epochs)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
