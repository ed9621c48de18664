"""Phase 1 at the machine's speed: what each epoch costs beyond its steps, with a checkpoint
every epoch (swap before phase1.checkpoint_every) and with the automatic cadence, and the two CPU
layouts of 2 cores: 2 DDP ranks of 1 CPU (1 torch thread each, a gloo all-reduce per step)
against 1 rank of 2 CPUs (2 intra-op threads, no all-reduce).

Run: .venv/bin/python bench/phase1.py [--repeats 3] [--configs configs/quickstart.yaml,...]

Each repeat runs every arm once, in turn, as `swap run` against one running Ray (started here),
with phase 2 cut to one short epoch per worker (not measured). From each run's results.json:
phase 1's seconds from the job's start to its last epoch's end, its epochs' own seconds (the
steps and their all-reduce), what followed the steps of each epoch (`after_training_seconds`:
metrics, progress, the checkpoint when there was one) and the checkpoints' `save` and `report`
(Ray Train's copy into the run's storage and its barrier). Prints medians over the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from measure import RESULTS, describe_machine, machine, summary, write_results

REPO = Path(__file__).resolve().parent.parent
SWAP = str(Path(sys.executable).parent / "swap")
CONFIGS = ["configs/quickstart.yaml", "configs/fashion_mnist_mlp.yaml"]
SHORT_PHASE2 = ["phase2.workers=2", "phase2.epochs=1"]
ARMS = {  # name: overrides
    "2x1, checkpoint every epoch": ["phase1.workers=2", "phase1.checkpoint_every=1"],
    "2x1, automatic checkpoints": ["phase1.workers=2"],
    "1x2, automatic checkpoints": ["phase1.workers=1", "resources.phase1_cpus_per_worker=2"],
}


def run(config: str, overrides: list[str], scratch: str, address: str) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(dir=scratch))
    env = {**os.environ, "RAY_ADDRESS": address}
    argv = [SWAP, "run", config, *SHORT_PHASE2, *overrides, f"output.dir={out}"]
    subprocess.run(argv, env=env, cwd=REPO, check=True, capture_output=True)
    [path] = out.glob("*/*/results.json")
    return json.loads(path.read_text())


def costs(results: dict[str, Any]) -> dict[str, float]:
    p1 = results["phase1"]
    history = p1["history"]
    first_step = history[0]["ended_at"] - history[0]["seconds"]
    checkpoints = [h["checkpoint_seconds"] for h in history if "checkpoint_seconds" in h]
    steps = sum(h["seconds"] for h in history)
    after = sum(h.get("after_training_seconds", 0.0) for h in history)
    return {
        "start_to_first_step": first_step - results["started_at"],
        "start_to_last_epoch": history[-1]["ended_at"] - results["started_at"],
        "epochs_seconds": steps,
        "after_steps_seconds": after,
        "after_steps_share_of_epochs": after / steps,
        "epoch_seconds_median": statistics.median(h["seconds"] for h in history),
        "checkpoints": len(checkpoints),
        "checkpoint_save_median": statistics.median(c["save"] for c in checkpoints),
        "checkpoint_report_median": statistics.median(c["report"] for c in checkpoints),
        "samples_per_second": p1["samples_per_second"],
        "torch_threads": p1["torch_threads"],
        "test_accuracy": p1["test_accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    args = parser.parse_args()
    host = machine()  # imports swap, which applies its Ray settings: Ray reads them at import
    print(describe_machine(host))
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    address = ray.get_runtime_context().gcs_address
    measured: dict[str, dict[str, list[dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="swap-phase1-") as scratch:
        for config in args.configs.split(","):
            for repeat in range(args.repeats):
                for arm, overrides in ARMS.items():
                    row = costs(run(config, overrides, scratch, address))
                    measured.setdefault(config, {}).setdefault(arm, []).append(row)
                    print(f"{config} {arm} #{repeat + 1}: " + ", ".join(
                        f"{k} {v:.3f}" for k, v in row.items()), flush=True)  # fmt: skip
    table = {
        config: {
            arm: {key: summary([r[key] for r in rows]) for key in rows[0]}
            for arm, rows in arms.items()
        }
        for config, arms in measured.items()
    }
    keys = ["start_to_last_epoch", "start_to_first_step", "epochs_seconds", "after_steps_seconds",
            "after_steps_share_of_epochs", "checkpoints", "checkpoint_save_median",
            "checkpoint_report_median", "samples_per_second", "test_accuracy"]  # fmt: skip
    for config, arms in table.items():
        print(f"\n{config} (medians of {args.repeats})")
        print(f"{'':32s}" + "".join(f"{k[:24]:>26s}" for k in keys))
        for arm, stats in arms.items():
            print(f"{arm:32s}" + "".join(f"{stats[k]['median']:>26.3f}" for k in keys))
    write_results(RESULTS / "phase1.json", host, runs=measured, medians=table)


if __name__ == "__main__":
    main()
