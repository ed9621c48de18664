"""Phase 3's ways to combine the workers, n seeds: accuracy, NLL, ECE and Brier score of the
uniform average, the greedy soup, the ensemble, SWAG and MultiSWAG (and phase 1, the workers
alone), with the seconds each adds to phase 3, for two ways of collecting SWAG's snapshots.

Run: .venv/bin/python bench/combine.py [--seeds 5] [--config SPEC.yaml] [key=value ...]

Each seed is one swap job per arm with `phase3.combine=greedy phase3.ensemble=true`: within an
arm the same workers give every combination, so the comparison is paired. The soup and the
ensemble both need every worker scored alone (`score_workers_seconds`); the soup then averages
and BN-refreshes one candidate per worker (`greedy_seconds`); the ensemble only averages the
scored probabilities. Every worker also collects SWAG statistics (`phase2.swag_rank`, once per
epoch), and phase 3 draws `phase3.swag_samples` models from each, BN-refreshed one by one
(`swag_seconds`); "SWAG" is the mean over workers of each worker's own SWAG, MultiSWAG all their
draws together. The arms, run one after the other for each seed:

- `whole`: the spec's schedule (the recipes: cosine to 0), snapshots from the first epoch on;
- `tail`: the swa schedule, cosine from phase2.lr to phase2.swa_lr = lr x --swa-lr-ratio over the
  first --swag-start of the steps, constant after, snapshots only on that constant tail.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
from pathlib import Path
from typing import Any

from measure import RESULTS, describe_machine, machine, summary, write_results
from rich.console import Console

from swap.driver import run_job
from swap.spec import load_spec

REPO = Path(__file__).resolve().parent.parent
SWAG = "SWAG (mean of each worker's)"
MODELS = ("phase 1", "workers (mean of each alone)", "uniform average", "greedy soup", "ensemble",
          "SWAG (mean of each worker's)", "multiswag")  # fmt: skip
METRICS = ("accuracy", "nll", "ece", "brier")


def main() -> None:
    args = arguments()
    host = machine()
    print(describe_machine(host))
    import ray  # here, not above: swap (imported first) applies its Ray settings

    lr = load_spec(args.config, args.overrides).phase2.lr
    arms = {
        "whole": [],
        "tail": [
            "phase2.schedule=swa",
            f"phase2.swa_lr={lr * args.swa_lr_ratio:g}",
            f"phase2.swag_start={args.swag_start}",
        ],  # fmt: skip
    }
    print(f"arms: {arms}")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory(prefix="swap-combine-") as scratch:
        for k in range(args.seeds):
            for arm, extra in arms.items():
                overrides = [*args.overrides, *extra, f"seed={k}", f"output.dir={scratch}",
                             "phase3.combine=greedy", "phase3.ensemble=true",
                             f"phase2.swag_rank={args.swag_rank}",
                             f"phase3.swag_samples={args.swag_samples}"]  # fmt: skip
                results = run_job(load_spec(args.config, overrides), Console(file=io.StringIO()))
                runs[arm].append(one_run(results))
                p3 = runs[arm][-1]
                print(
                    f"seed {k} {arm}: uniform {p3['uniform average']['accuracy']:.2%} (NLL "
                    f"{p3['uniform average']['nll']:.4f}), SWAG "
                    f"{p3[SWAG]['accuracy']:.2%} (NLL {p3[SWAG]['nll']:.4f}), MultiSWAG "
                    f"{p3['multiswag']['accuracy']:.2%} (NLL {p3['multiswag']['nll']:.4f})",
                    flush=True,
                )
    ray.shutdown()
    tables = {arm: summarize(arm_runs) for arm, arm_runs in runs.items()}
    for arm, table in tables.items():
        print(f"\narm {arm}: {' '.join(arms[arm]) or 'the spec as it is'}")
        print_table(table, args.seeds)
    print_goal(runs["tail"])
    name = Path(args.config).stem
    write_results(args.out / f"combine-{name}.json", host, arms=arms, tables=tables, runs=runs)


def print_goal(runs: list[dict[str, Any]]) -> None:
    """Issue 20's goal for the tail arm, paired by seed: SWAG's and MultiSWAG's test NLL at or
    below the uniform average's, at no more than 0.2 points less accuracy."""
    for model in (SWAG, "multiswag"):
        nll = [r[model]["nll"] - r["uniform average"]["nll"] for r in runs]
        acc = [100 * (r[model]["accuracy"] - r["uniform average"]["accuracy"]) for r in runs]
        print(
            f"tail arm, {model} minus the uniform average (paired, n={len(runs)}): NLL "
            f"{statistics.fmean(nll):+.4f} (each: {', '.join(f'{x:+.4f}' for x in nll)}), "
            f"accuracy {statistics.fmean(acc):+.2f} points"
        )


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "quickstart.yaml"))
    parser.add_argument("--seeds", type=int, default=5, help="jobs per arm (seeds 0, 1, ...)")
    parser.add_argument("--swag-rank", type=int, default=20, help="phase2.swag_rank")
    parser.add_argument("--swag-samples", type=int, default=5, help="phase3.swag_samples")
    parser.add_argument("--swag-start", type=float, default=0.5, help="tail arm: swag_start")
    parser.add_argument("--swa-lr-ratio", type=float, default=0.2,
                        help="tail arm: phase2.swa_lr as a share of phase2.lr")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="spec overrides")
    return parser.parse_args()


def one_run(results: dict[str, Any]) -> dict[str, Any]:
    """One job's test scores per model, its soup's choice and phase 3's seconds."""
    p3 = results["phase3"]
    test = {m["model"]: {k: m["test"][k] for k in METRICS} for m in p3["models"]}
    workers = [v for k, v in test.items() if k.startswith("worker ")]
    swag = [v for k, v in test.items() if k.startswith("swag worker ")]
    test["workers (mean of each alone)"] = {
        k: statistics.fmean(w[k] for w in workers) for k in METRICS
    }
    test[SWAG] = {k: statistics.fmean(w[k] for w in swag) for k in METRICS}
    return {
        **test,
        "chosen": p3["averaged_workers"],
        "candidates": p3["candidates"],
        "seconds": {
            "phase3": p3["seconds"],
            "bn_refresh": p3["bn_refresh_seconds"],
            "score_workers": p3["score_workers_seconds"],
            "greedy": p3["greedy_seconds"],
            "swag": p3["swag_seconds"],
        },
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    table = {m: {k: summary([r[m][k] for r in runs]) for k in METRICS} for m in MODELS}
    table["seconds"] = {k: summary([r["seconds"][k] for r in runs]) for k in runs[0]["seconds"]}
    table["soup_size"] = summary([len(r["chosen"]) for r in runs])
    return table


def print_table(table: dict[str, Any], seeds: int) -> None:
    print(f"\n{'model (test set)':<30} {'n':>2}  {'acc %':>13}  {'NLL':>13}  {'ECE':>13}  "
          f"{'Brier':>13}")  # fmt: skip
    for model in MODELS:
        row = table[model]
        cells = [f"{row['accuracy']['mean'] * 100:6.2f} ± {row['accuracy']['std'] * 100:4.2f}"]
        cells += [f"{row[k]['mean']:.4f} ± {row[k]['std']:.4f}" for k in ("nll", "ece", "brier")]
        print(f"{model:<30} {seeds:>2}  " + "  ".join(f"{c:>13}" for c in cells))
    s = table["seconds"]
    print(
        f"phase 3 seconds (median): {s['phase3']['median']:.2f} in all; scoring every worker "
        f"{s['score_workers']['median']:.2f} (soup and ensemble), greedy search "
        f"{s['greedy']['median']:.2f}, SWAG draws {s['swag']['median']:.2f}; soup size "
        f"{table['soup_size']['mean']:.1f} on average"
    )


if __name__ == "__main__":
    main()
