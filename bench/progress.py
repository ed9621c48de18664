"""What reporting progress costs a phase-2 worker's training steps (swap.progress.Progress): the
same epochs of `training.train_epoch`, with and without `Progress.step` after every step, in
alternating order, on the quickstart's model and batch (the cheapest step swap ships, where a
fixed cost per step weighs most) and on the Fashion-MNIST recipe's.

Run: .venv/bin/python bench/progress.py [--repeats 9] [--steps 1000]

Prints, per workload, the median samples/s of each arm and their ratio (with progress / without),
paired by repeat; on a shared 2-core machine that ratio moves by several percent from run to run,
so it also times the two costs themselves: a `Progress.step` call when no report is due (every
step) and a report (once a second), and prints their share of a second of training at the
measured step rate. The goal (issue 24): the cost under 1% of phase-2 samples/s, a ratio >= 0.99.
Progress writes its JSON into a temporary directory, as a worker does into a local run directory.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from measure import RESULTS, describe_machine, machine, summary, write_results

from swap.data.common import DatasetInfo, builtin_info
from swap.models.registry import build_model
from swap.progress import Progress
from swap.spec import load_spec
from swap.training import sgd, train_epoch

REPO = Path(__file__).resolve().parent.parent
WORKLOADS = {
    "quickstart": "configs/quickstart.yaml",
    "fashion-mnist": "configs/fashion_mnist_mlp.yaml",
}


def epoch_seconds(spec, info: DatasetInfo, steps: int, directory: str | None) -> float:
    """Seconds for `steps` phase-2 steps on random data of the set's shape; with progress
    reported into `directory` when it is given."""
    torch.manual_seed(0)
    model = build_model(spec.model, info)
    batch = spec.phase2.batch_size
    side = info.image_size
    inputs = torch.randn(steps, batch, info.channels, side, side)
    labels = torch.randint(0, info.num_classes, (steps, batch))
    optimizer = sgd(model, spec.phase2.lr, spec.phase2_momentum, spec.phase2_weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    after_step = None
    if directory is not None:
        progress = Progress(directory, {"phase": 2, "worker": 0}, 1, steps, batch)
        progress.start_epoch(1)
        after_step = progress.step
    started = time.perf_counter()
    train_epoch(model, zip(inputs, labels, strict=True), optimizer, scheduler, torch.device("cpu"),
                after_step=after_step)  # fmt: skip
    return time.perf_counter() - started


def call_costs(directory: str, calls: int = 20_000) -> dict[str, float]:
    """Seconds per `Progress.step` call when no second has passed (the every-step path: a clock
    read, an addition on the device) and per report (a read-back and an atomic JSON write)."""
    loss = torch.tensor(0.5)
    progress = Progress(directory, {"phase": 2, "worker": 0}, 1, calls, 32)
    progress.start_epoch(1)
    progress.last = float("inf")  # never due: only the cheap path
    started = time.perf_counter()
    for step in range(1, calls + 1):
        progress.step(step, loss)
    cheap = (time.perf_counter() - started) / calls
    progress.clock = lambda: progress.last + 2.0  # always due: a report at every call
    started = time.perf_counter()
    for step in range(1, 201):
        progress.step(step, loss)
    return {"step_seconds": cheap, "report_seconds": (time.perf_counter() - started) / 200}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--steps", type=int, default=1000, help="steps per measured epoch")
    args = parser.parse_args()
    host = machine()
    print(describe_machine(host))
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        for name, path in WORKLOADS.items():
            spec = load_spec(REPO / path)
            info = builtin_info(spec.data.dataset)
            samples = args.steps * spec.phase2.batch_size
            epoch_seconds(spec, info, 20, None)  # warm-up: allocations, kernels chosen
            without, with_progress = [], []
            for repeat in range(args.repeats):
                arms = [(without, None), (with_progress, directory)]
                for times, where in arms if repeat % 2 == 0 else arms[::-1]:
                    times.append(samples / epoch_seconds(spec, info, args.steps, where))
            costs = [call_costs(directory) for _ in range(args.repeats)]
            step = summary([c["step_seconds"] for c in costs])["median"]
            report = summary([c["report_seconds"] for c in costs])["median"]
            rate = summary(without)["median"] / spec.phase2.batch_size  # steps a second
            share = step * rate + report  # of each second of training: one report a second
            ratios = [a / b for a, b in zip(with_progress, without, strict=True)]
            results[name] = {
                "batch": spec.phase2.batch_size,
                "steps": args.steps,
                "samples_per_second_without": summary(without),
                "samples_per_second_with": summary(with_progress),
                "ratio_with_over_without": summary(ratios),
                "step_call_seconds": step,
                "report_seconds": report,
                "share_of_training_time": share,
            }
            print(
                f"{name:14s} batch {spec.phase2.batch_size:4d}: "
                f"{summary(without)['median']:9.0f} samples/s without, "
                f"{summary(with_progress)['median']:9.0f} with progress; "
                f"median ratio {summary(ratios)['median']:.4f} "
                f"(min {min(ratios):.4f}, max {max(ratios):.4f}, n={len(ratios)})\n"
                f"{'':14s} per call {step * 1e6:.1f} µs at {rate:.0f} steps/s, a report "
                f"{report * 1e3:.2f} ms a second: {share:.3%} of training time"
            )
    write_results(RESULTS / "progress.json", host, workloads=results)


if __name__ == "__main__":
    main()
