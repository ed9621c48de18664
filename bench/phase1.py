"""Phase 1 at the machine's speed: swap's phase 1 against plain PyTorch on the same data, model,
batch and schedule, and against Ray Train's own no-op fit(), in the same run; what each epoch
costs beyond its steps (a checkpoint every epoch, as swap did before phase1.checkpoint_every, and
the automatic cadence); the two CPU layouts of 2 cores: 2 DDP ranks of 1 CPU (1 torch thread
each, a gloo all-reduce per step) and 1 rank of 2 CPUs (2 intra-op threads, no all-reduce).

Run: .venv/bin/python bench/phase1.py [--repeats 3] [--configs configs/quickstart.yaml,...]

Each repeat runs every arm once, in turn, against one running Ray (started here):
- swap: `swap run` with phase 2 cut to one short epoch per worker (not measured). From its
  results.json: each epoch's own seconds (its steps and the all-reduce of its statistics), what
  followed them (`after_training_seconds`: metrics, progress, the checkpoint when there was one)
  and each checkpoint's `save` and `report`; and when things began: the job, phase 1's fit(),
  rank 0's training function (`worker_started_at`: Ray Train's start-up is over), its first step.
- plain PyTorch (bench/plain_pytorch.py, a process of its own): one process using every core,
  and DDP over gloo with phase 1's ranks, 1 thread each: each epoch's steps, and its seconds in
  all from before its processes start to the final test accuracy.
- Ray Train's fit() of a function that returns at once, with each swap arm's workers and CPUs.

The goals (issue 25, this machine): a phase-1 epoch at most 1.1x the faster plain arm's; what
phase 1's fit() spends beyond its epochs' steps at most Ray Train's no-op fit() + 2 s, on a
20-epoch phase 1 of the Fashion-MNIST recipe. Prints medians and the verdicts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from typing import Any

from fixed_costs import ray_train_noop
from measure import REPO, RESULTS, SWAP, local_ray, medians, run_swap, step_began, write_results

CONFIGS = ["configs/quickstart.yaml", "configs/fashion_mnist_mlp.yaml"]
EPOCHS = 20  # phase 1's epochs on every workload: the goal's 20-epoch phase 1
SHORT_PHASE2 = ["phase2.workers=2", "phase2.epochs=1"]
LAYOUTS = {"2x1": (2, 1), "1x2": (1, 2)}  # phase-1 ranks x CPUs per rank, on 2 cores
SWAP_ARMS = {  # name: (layout, checkpoint_every)
    "swap 2x1, checkpoint every epoch": ("2x1", 1),
    "swap 2x1, automatic checkpoints": ("2x1", None),
    "swap 1x2, automatic checkpoints": ("1x2", None),
}
PLAIN_ARMS = {"plain, 1 process x 2 threads": 1, "plain DDP, 2 processes x 1 thread": 2}
EPOCH_GOAL, BEYOND_GOAL_S = 1.1, 2.0


def swap_arm(config: str, layout: str, every: int | None, scratch: str, address: str) -> dict:
    workers, cpus = LAYOUTS[layout]
    argv = [SWAP, "run", config, *SHORT_PHASE2, f"phase1.max_epochs={EPOCHS}",
            f"phase1.workers={workers}", f"resources.phase1_cpus_per_worker={cpus}",
            f"phase1.checkpoint_every={'null' if every is None else every}"]  # fmt: skip
    return swap_costs(*run_swap(argv, scratch, address))


def swap_costs(results: dict[str, Any], launched: float) -> dict[str, float]:
    p1 = results["phase1"]
    history = p1["history"]
    first_step = step_began(history[0])
    fit_returned = p1["started_at"] + p1["seconds"]
    checkpoints = [h["checkpoint_seconds"] for h in history if "checkpoint_seconds" in h]
    steps = sum(h["seconds"] for h in history)
    after = sum(h.get("after_training_seconds", 0.0) for h in history)
    return {
        "epoch_seconds_median": statistics.median(h["seconds"] for h in history),
        "epochs_seconds": steps,
        "fit_beyond_steps": p1["seconds"] - steps,
        "launch_to_phase1_end_beyond_steps": fit_returned - launched - steps,
        # where the time beyond the steps goes, in order
        "launch_to_job_start": results["started_at"] - launched,
        "job_start_to_fit": p1["started_at"] - results["started_at"],
        "fit_to_worker_start": p1["worker_started_at"] - p1["started_at"],
        "worker_start_to_first_step": first_step - p1["worker_started_at"],
        "after_steps_seconds": after,
        "last_epoch_to_fit_return": fit_returned - history[-1]["ended_at"],
        "after_steps_share_of_epochs": after / steps,
        "checkpoints": len(checkpoints),
        "checkpoint_save_median": statistics.median(c["save"] for c in checkpoints),
        "checkpoint_report_median": statistics.median(c["report"] for c in checkpoints),
        "test_accuracy": p1["test_accuracy"],
    }


def plain_arm(config: str, processes: int) -> dict[str, float]:
    from swap.spec import load_spec

    p1 = load_spec(config).phase1
    argv = [sys.executable, str(REPO / "bench" / "plain_pytorch.py"), "--config", config,
            "--batch", str(p1.batch_size), "--lr", str(p1.lr), "--epochs", str(EPOCHS),
            "--processes", str(processes)]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    epochs = result["epoch_seconds"]
    return {
        "epoch_seconds_median": statistics.median(epochs),
        "epochs_seconds": sum(epochs),
        "seconds": result["seconds"],
        "beyond_steps": result["seconds"] - sum(epochs),
        "test_accuracy": result["test_accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    args = parser.parse_args()
    host, address = local_ray()
    measured: dict[str, dict[str, list[dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="swap-phase1-") as scratch:
        for config in args.configs.split(","):
            for repeat in range(args.repeats):
                rows = {arm: swap_arm(config, *how, scratch, address)
                        for arm, how in SWAP_ARMS.items()}  # fmt: skip
                rows |= {arm: plain_arm(config, n) for arm, n in PLAIN_ARMS.items()}
                rows |= {f"Ray Train no-op fit(), {layout}": {"seconds": ray_train_noop(*how)}
                         for layout, how in LAYOUTS.items()}  # fmt: skip
                for arm, row in rows.items():
                    measured.setdefault(config, {}).setdefault(arm, []).append(row)
                    print(f"{config} {arm} #{repeat + 1}: " + ", ".join(
                        f"{k} {v:.3f}" for k, v in row.items()), flush=True)  # fmt: skip
    table = {config: {arm: medians(rows) for arm, rows in arms.items()}
             for config, arms in measured.items()}  # fmt: skip
    verdicts = {config: verdict(arms) for config, arms in table.items()}
    for config, arms in table.items():
        print(f"\n{config}, {EPOCHS} epochs (medians of {args.repeats})")
        for arm, stats in arms.items():
            print(f"  {arm:40s} " + ", ".join(f"{k} {s['median']:.3f}" for k, s in stats.items()))
        for line in verdicts[config]["lines"]:
            print(f"  {line}")
    write_results(RESULTS / "phase1.json", host, epochs=EPOCHS, runs=measured, medians=table,
                  verdicts=verdicts)  # fmt: skip


def verdict(arms: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Each automatic-checkpoint swap arm against the goals: its epoch against the faster plain
    arm's, and its fit() beyond the steps against Ray Train's no-op fit() of its layout."""

    def median(arm: str, key: str) -> float:
        return arms[arm][key]["median"]

    fastest = min(median(arm, "epoch_seconds_median") for arm in PLAIN_ARMS)
    out: dict[str, Any] = {"lines": []}
    for arm, (layout, every) in SWAP_ARMS.items():
        if every is not None:
            continue
        epoch_ratio = median(arm, "epoch_seconds_median") / fastest
        noop = median(f"Ray Train no-op fit(), {layout}", "seconds")
        beyond = median(arm, "fit_beyond_steps")
        out[arm] = {"epoch_ratio": epoch_ratio, "fit_beyond_steps": beyond, "noop_fit": noop,
                    "epoch_goal_met": epoch_ratio <= EPOCH_GOAL,
                    "beyond_goal_met": beyond <= noop + BEYOND_GOAL_S}  # fmt: skip
        out["lines"].append(
            f"{arm}: epoch {epoch_ratio:.2f}x the faster plain arm's (goal <= {EPOCH_GOAL}: "
            f"{'met' if epoch_ratio <= EPOCH_GOAL else 'MISSED'}); fit() beyond the steps "
            f"{beyond:.2f} s, no-op fit() {noop:.2f} s + {BEYOND_GOAL_S:.0f} (goal: "
            f"{'met' if beyond <= noop + BEYOND_GOAL_S else 'MISSED'})"
        )
    return out


if __name__ == "__main__":
    main()
