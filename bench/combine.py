"""Phase 3's ways to combine the workers, n seeds: accuracy, NLL, ECE and Brier score of the
uniform average, the greedy soup, the ensemble, SWAG and MultiSWAG (and phase 1, the workers
alone), with the seconds each adds to phase 3.

Run: .venv/bin/python bench/combine.py [--seeds 5] [--config SPEC.yaml] [key=value ...]

Each seed is one swap job with `phase3.combine=greedy phase3.ensemble=true`: the same workers
give every combination, so the comparison is paired. The soup and the ensemble both need every
worker scored alone (`score_workers_seconds`); the soup then averages and BN-refreshes one
candidate per worker (`greedy_seconds`); the ensemble only averages the scored probabilities.
Every worker also collects SWAG statistics (`phase2.swag_rank`, once per epoch), and phase 3
draws `phase3.swag_samples` models from each, BN-refreshed one by one (`swag_seconds`); "SWAG"
is the mean over workers of each worker's own SWAG, MultiSWAG all their draws together.
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
MODELS = ("phase 1", "workers (mean of each alone)", "uniform average", "greedy soup", "ensemble",
          "SWAG (mean of each worker's)", "multiswag")  # fmt: skip
METRICS = ("accuracy", "nll", "ece", "brier")


def main() -> None:
    args = arguments()
    host = machine()
    print(describe_machine(host))
    import ray  # here, not above: swap (imported first) applies its Ray settings

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    runs = []
    with tempfile.TemporaryDirectory(prefix="swap-combine-") as scratch:
        for k in range(args.seeds):
            overrides = [*args.overrides, f"seed={k}", f"output.dir={scratch}",
                         "phase3.combine=greedy", "phase3.ensemble=true",
                         f"phase2.swag_rank={args.swag_rank}",
                         f"phase3.swag_samples={args.swag_samples}"]  # fmt: skip
            results = run_job(load_spec(args.config, overrides), Console(file=io.StringIO()))
            runs.append(one_run(results))
            p3 = runs[-1]
            print(
                f"seed {k}: uniform {p3['uniform average']['accuracy']:.2%}, greedy "
                f"{p3['greedy soup']['accuracy']:.2%} of {len(p3['chosen'])}, ensemble "
                f"{p3['ensemble']['accuracy']:.2%}, MultiSWAG {p3['multiswag']['accuracy']:.2%}",
                flush=True,
            )
    ray.shutdown()
    table = summarize(runs)
    print_table(table, args.seeds)
    name = Path(args.config).stem
    write_results(args.out / f"combine-{name}.json", host, table=table, runs=runs)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "quickstart.yaml"))
    parser.add_argument("--seeds", type=int, default=5, help="jobs (seeds 0, 1, ...)")
    parser.add_argument("--swag-rank", type=int, default=20, help="phase2.swag_rank")
    parser.add_argument("--swag-samples", type=int, default=5, help="phase3.swag_samples")
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
    test["SWAG (mean of each worker's)"] = {
        k: statistics.fmean(w[k] for w in swag) for k in METRICS
    }
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
