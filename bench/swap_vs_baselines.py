"""SWAP against small- and large-batch data-parallel SGD: test accuracy and wall-clock, N seeds.

Run: .venv/bin/python bench/swap_vs_baselines.py [--seeds 5] [--config configs/quickstart.yaml]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path
from typing import Any

from measure import (
    RESULTS,
    describe_machine,
    machine,
    mean_std,
    summary,
    write_results,
)

REPO = Path(__file__).resolve().parent.parent
ARMS = ("small", "large", "swap")
LABELS = {
    "small": "small-batch SGD",
    "large": "large-batch SGD",
    "swap": "SWAP",
}
# The quickstart's small-batch budget, chosen by validation accuracy (never test) in a sweep
# over 10-80 epochs: the fewest epochs within one standard error of the best (one-SE rule).
# docs/BENCHMARKS.md gives the commands and the numbers.
SMALL_EPOCHS = 40


def main() -> None:
    args = arguments()
    from swap.ray_session import apply_ray_defaults

    apply_ray_defaults()  # before Ray is imported, as `swap run` does
    import ray

    from swap.data.registry import prepare_data
    from swap.spec import load_spec

    base = prepare_data(load_spec(args.config, args.overrides))  # missing files stop us here
    host = machine()
    print(describe_machine(host))
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=args.verbose)
    with tempfile.TemporaryDirectory(prefix="swap-bench-") as scratch:
        specs = {seed: arm_specs(base, seed, args, scratch) for seed in seeds(base, args.seeds)}
        budgets = describe_budgets(specs[base.seed], args.cpus)
        print("\n".join(budgets))
        warm_up(specs[base.seed]["large"])
        runs = run_all(specs, args.arms)
    ray.shutdown()
    arms = summarize(runs, args.arms)
    verdict = judge(arms)
    print_table(arms)
    print("\n".join(verdict))
    write_results(
        args.out / "swap_vs_baselines.json",
        host,
        budgets=budgets,
        runs=runs,
        arms=arms,
        verdict=verdict,
    )
    plot(runs, arms, args.out / "swap_vs_baselines.png")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "quickstart.yaml"))
    parser.add_argument("--seeds", type=int, default=5, help="runs per arm (seed, seed+1, ...)")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset of arms")
    parser.add_argument(
        "--small-epochs", type=int, default=SMALL_EPOCHS, help="small-batch epoch budget"
    )
    parser.add_argument(
        "--small-lr",
        type=float,
        default=None,
        help="small-batch peak LR (default: phase1.lr scaled linearly to the small batch)",
    )
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the one local Ray")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--verbose", action="store_true", help="show the workers' progress")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="spec overrides")
    args = parser.parse_args()
    args.arms = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    unknown = set(args.arms) - set(ARMS)
    if unknown:
        parser.error(f"--arms: unknown {sorted(unknown)}; choose from {', '.join(ARMS)}")
    return args


def seeds(spec: Any, count: int) -> list[int]:
    return [spec.seed + k for k in range(count)]


def arm_specs(spec: Any, seed: int, args: argparse.Namespace, scratch: str) -> dict[str, Any]:
    """The three arms for one seed: same data, model, augmentation and CPUs; only the
    optimization differs. The baselines run the phase-1 code path (Ray Train DDP) alone."""
    from swap.errors import SwapError
    from swap.spec import spec_from_dict

    p1, p2 = spec.phase1, spec.phase2
    if p2.batch_size % p1.workers:
        raise SwapError(
            f"small-batch arm: phase2.batch_size ({p2.batch_size}) must be divisible by "
            f"phase1.workers ({p1.workers})"
        )
    base = spec.to_dict()
    base.update(seed=seed, output={"dir": scratch})
    small_lr = args.small_lr or p1.lr * p2.batch_size / p1.batch_size
    changes = {
        "small": {"batch_size": p2.batch_size, "lr": small_lr, "max_epochs": args.small_epochs},
        "large": {"max_epochs": p1.max_epochs + p2.epochs},
        "swap": {},
    }
    specs = {}
    for arm, phase1 in changes.items():
        raw = {**base, "name": f"{spec.name}-{arm}", "phase1": {**base["phase1"], **phase1}}
        if arm != "swap":  # a fixed epoch budget, not the SWAP switch point
            raw["phase1"]["stop_train_accuracy"] = None
        specs[arm] = spec_from_dict(raw, f"{arm} arm")
    return specs


def describe_budgets(specs: dict[str, Any], cpus: int) -> list[str]:
    small, large, swap = specs["small"], specs["large"], specs["swap"]

    def phase1(spec: Any) -> str:
        p1 = spec.phase1
        return (
            f"{p1.workers} DDP workers, global batch {p1.batch_size} "
            f"({p1.batch_size // p1.workers} per worker), peak lr {p1.lr:g} after "
            f"{p1.warmup_epochs} warm-up epoch(s), linear decay to 0, {p1.max_epochs} epochs"
        )

    p2, r = swap.phase2, swap.resources
    stop = swap.phase1.stop_train_accuracy
    return [
        f"data {swap.data.dataset} (augment {swap.data.augment}), model {swap.model.arch}; "
        f"one local Ray with {cpus} CPUs, {r.cpus_per_worker:g} CPU per worker in every arm",
        f"  small-batch SGD : {phase1(small)}",
        f"  large-batch SGD : {phase1(large)}",
        f"  SWAP            : phase 1 {phase1(swap)}"
        + (f" or train accuracy {stop:g}" if stop else "")
        + f"; phase 2 {p2.workers} workers x {p2.epochs} epochs at batch {p2.batch_size}, "
        f"lr {p2.lr:g} {p2.schedule}; phase 3 average"
        + (" + BN refresh" if swap.phase3.bn_refresh else ""),
        "  wall-clock: the whole job (Ray Train start-up, per-epoch checkpoints, evaluation "
        "included), measured the same way in every arm",
    ]


def warm_up(spec: Any) -> None:
    """One short untimed phase-1 run, so the first timed arm does not pay for cold caches."""
    from swap.spec import spec_from_dict

    raw = spec.to_dict()
    raw["name"] = "warm-up"
    raw["phase1"].update(max_epochs=raw["phase1"]["warmup_epochs"] + 1)
    run_phase1_only(spec_from_dict(raw))


def run_all(specs: dict[int, dict[str, Any]], arms: list[str]) -> list[dict[str, Any]]:
    """Every arm once per seed, the order rotated per seed so drifting load hits all arms."""
    runs = []
    for k, (seed, by_arm) in enumerate(specs.items()):
        order = arms[k % len(arms) :] + arms[: k % len(arms)]
        for arm in order:
            record = run_swap(by_arm[arm]) if arm == "swap" else run_phase1_only(by_arm[arm])
            record.update(arm=arm, seed=seed)
            runs.append(record)
            print(
                f"seed {seed}  {LABELS[arm]:<16} test acc {record['test_accuracy']:.2%}  "
                f"val acc {record['val_accuracy']:.2%}  {record['seconds']:6.1f}s",
                flush=True,
            )
    return runs


def run_phase1_only(spec: Any) -> dict[str, Any]:
    """A baseline: phase 1 alone, timed as run_job times a whole job (from its first line)."""
    from swap.data.registry import prepare_data
    from swap.phases.phase1 import run_phase1
    from swap.rundir import new_run_dir

    started = time.perf_counter()
    spec = prepare_data(spec)
    result = run_phase1(spec, new_run_dir(spec.output.dir, spec.name))
    return {
        "test_accuracy": result["test_accuracy"],
        "val_accuracy": result["val_accuracy"],
        "seconds": time.perf_counter() - started,
        "epochs": result["epochs"],
        "train_seconds": sum(h["seconds"] for h in result["history"]),
    }


def run_swap(spec: Any) -> dict[str, Any]:
    """A whole SWAP job; its wall-clock is the job's own `total_seconds` (report plots and the
    printed table, which come after, are not part of it)."""
    from rich.console import Console

    from swap.driver import run_job

    results = run_job(spec, Console(file=io.StringIO()))
    workers = [w for w in results["phase2"]["workers"] if w["status"] == "finished"]
    return {
        "test_accuracy": results["phase3"]["test_accuracy"],
        "val_accuracy": results["phase3"]["val_accuracy"],
        "seconds": results["total_seconds"],
        "test_accuracy_before_bn": results["phase3"]["test_accuracy_before_bn"],
        "phase1_test_accuracy": results["phase1"]["test_accuracy"],
        "worker_test_accuracies": [w["test_accuracy"] for w in workers],
        "phase_seconds": [results[p]["seconds"] for p in ("phase1", "phase2", "phase3")],
    }


def summarize(runs: list[dict[str, Any]], arms: list[str]) -> dict[str, dict[str, Any]]:
    """Per arm: test and validation accuracy, wall-clock; for SWAP also its phase-1 model and
    its average before the BN refresh (the same runs, other models)."""
    extra = ("phase1_test_accuracy", "test_accuracy_before_bn")
    stats = {}
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm]
        keys = ("test_accuracy", "val_accuracy", "seconds", *(extra if arm == "swap" else ()))
        stats[arm] = {key: summary([r[key] for r in mine]) for key in keys}
    return stats


def print_table(arms: dict[str, dict[str, Any]]) -> None:
    print(
        f"\n{'arm':<16} {'n':>2}  {'test acc % (mean ± std)':>23}  {'median':>6}  "
        f"{'val acc %':>13}  {'wall s (mean ± std)':>19}  {'median':>6}"
    )
    for arm, s in arms.items():
        test, val, sec = s["test_accuracy"], s["val_accuracy"], s["seconds"]
        print(
            f"{LABELS[arm]:<16} {test['n']:>2}  {mean_std(test, 100):>23}  "
            f"{test['median'] * 100:6.2f}  {mean_std(val, 100):>13}  "
            f"{mean_std(sec, digits=1):>19}  {sec['median']:6.1f}"
        )
    if "swap" in arms:
        for key, label in (
            ("phase1_test_accuracy", "its phase-1 model"),
            ("test_accuracy_before_bn", "its average before BN refresh"),
        ):
            print(f"  SWAP runs, {label:<30} {mean_std(arms['swap'][key], 100):>13}")
        swap_time = arms["swap"]["seconds"]["median"]
        for arm in ("small", "large"):
            if arm in arms:
                ratio = swap_time / arms[arm]["seconds"]["median"]
                print(f"SWAP time / {LABELS[arm]} time (medians): {ratio:.2f}")


def judge(arms: dict[str, dict[str, Any]]) -> list[str]:
    """Did SWAP keep its promise? `within reach` of small-batch accuracy means SWAP's mean test
    accuracy is at least the small-batch mean minus one small-batch standard deviation."""
    if not {"small", "large", "swap"} <= arms.keys():
        return ["verdict: needs all three arms"]
    swap, small, large = (arms[a]["test_accuracy"] for a in ("swap", "small", "large"))
    beats = swap["mean"] > large["mean"]
    reach = swap["mean"] >= small["mean"] - small["std"]
    return [
        f"verdict: SWAP {'beats' if beats else 'does NOT beat'} large-batch accuracy "
        f"({swap['mean']:.2%} vs {large['mean']:.2%}, difference "
        f"{(swap['mean'] - large['mean']) * 100:+.2f} points; {welch(arms, 'large')})",
        f"verdict: SWAP is {'within' if reach else 'NOT within'} reach of small-batch accuracy "
        f"({swap['mean']:.2%} vs {small['mean']:.2%} ± {small['std']:.2%}; "
        f"{welch(arms, 'small')})",
    ]


def welch(arms: dict[str, dict[str, Any]], other: str) -> str:
    """Welch's t-test p-value of SWAP's mean test accuracy against another arm's."""
    from scipy.stats import ttest_ind_from_stats

    a, b = arms["swap"]["test_accuracy"], arms[other]["test_accuracy"]
    if min(a["n"], b["n"]) < 2 or a["std"] + b["std"] == 0:
        return "too few runs for a t-test"
    test = ttest_ind_from_stats(
        a["mean"], a["std"], a["n"], b["mean"], b["std"], b["n"], equal_var=False
    )
    return f"Welch t-test p = {test.pvalue:.2f}"


def plot(runs: list[dict[str, Any]], arms: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm]
        axes.scatter(
            [r["seconds"] for r in mine],
            [r["test_accuracy"] * 100 for r in mine],
            label=f"{LABELS[arm]} (n={len(mine)})",
            alpha=0.8,
        )
    axes.set_xlabel("wall-clock seconds (whole job)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title("SWAP vs data-parallel SGD baselines: one point per run")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
