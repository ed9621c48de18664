"""Start-up levers: phase 2's warm-up processes started beside phase 1 on every slot (swap
before this version) against only on CPUs phase 1 leaves free (now; none on 2 cores when phase 1
uses both), on the shipped configs as a user runs them.

Run: .venv/bin/python bench/startup.py [--repeats 3] [--configs configs/quickstart.yaml,...]

Each repeat runs both arms, in turn, as `swap run` against one running Ray (started here). The
earlier behaviour is made in a process of the bench's own (`--arm every-slot`), which replaces
`swap.phases.phase2.warm_up_count` by one that ignores phase 1 and then runs swap's CLI. From
each run's results.json and the launch time: the first phase-1 step, phase 1's last epoch,
the first phase-2 step, the job's end. Prints medians and the paired differences.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from typing import Any

from measure import RESULTS, local_ray, medians, run_swap, step_began, summary, write_results

CONFIGS = ["configs/quickstart.yaml", "configs/fashion_mnist_mlp.yaml"]
ARMS = ["every-slot", "free-cpus"]


def child(arm: str, argv: list[str]) -> None:
    """In the bench's subprocess: swap's CLI, with the earlier warm-up for `every-slot`."""
    from swap.cli import main
    from swap.phases import phase2

    if arm == "every-slot":
        count = phase2.warm_up_count
        phase2.warm_up_count = lambda spec, cluster, beside_phase1: count(spec, cluster, False)
    sys.argv = ["swap", *argv]
    sys.exit(main())


def run(arm: str, config: str, scratch: str, address: str) -> dict[str, float]:
    argv = [sys.executable, __file__, "--arm", arm, "run", config]
    return timeline(*run_swap(argv, scratch, address))


def timeline(results: dict[str, Any], launched: float) -> dict[str, float]:
    p1 = results["phase1"]["history"]
    p2 = [h for w in results["phase2"]["workers"] for h in w["history"]]
    return {
        "first_phase1_step": step_began(p1[0]) - launched,
        "phase1_last_epoch_end": p1[-1]["ended_at"] - launched,
        "first_phase2_step": min(step_began(h) for h in p2) - launched,
        "job_end": results["started_at"] + results["total_seconds"] - launched,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # the subprocess's
    args, rest = parser.parse_known_args()
    if args.arm:
        return child(args.arm, rest)
    host, address = local_ray()
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="swap-startup-") as scratch:
        for config in args.configs.split(","):
            for repeat in range(args.repeats):
                for arm in ARMS:
                    row = run(arm, config, scratch, address)
                    runs.setdefault(config, {}).setdefault(arm, []).append(row)
                    print(f"{config} {arm} #{repeat + 1}: " + ", ".join(
                        f"{k} {v:.2f}" for k, v in row.items()), flush=True)  # fmt: skip
    table, differences = {}, {}
    for config, arms in runs.items():
        table[config] = {arm: medians(rows) for arm, rows in arms.items()}
        pairs = list(zip(arms["free-cpus"], arms["every-slot"], strict=True))
        differences[config] = {k: summary([now[k] - before[k] for now, before in pairs])
                               for k in pairs[0][0]}  # fmt: skip
        print(f"\n{config}: seconds from launch (medians of {args.repeats}), free-cpus minus "
              "every-slot (paired median)")  # fmt: skip
        for key, diff in differences[config].items():
            before, now = (table[config][arm][key]["median"] for arm in ARMS)
            print(
                f"  {key:24s} every-slot {before:7.2f}  free-cpus {now:7.2f}  "
                f"difference {diff['median']:+.2f}"
            )
    write_results(RESULTS / "startup.json", host, runs=runs, medians=table,
                  differences=differences)  # fmt: skip


if __name__ == "__main__":
    main()
