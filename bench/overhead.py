"""What swap costs over plain PyTorch: training samples/s of phases 1 and 2, start-up, transitions.

Run: .venv/bin/python bench/overhead.py [--repeats 5] [--config configs/quickstart.yaml]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from measure import RESULTS, describe_machine, machine, mean_std, summary, write_results

REPO = Path(__file__).resolve().parent.parent
SWAP = Path(sys.executable).parent / "swap"
THREADS = 1  # torch threads per training process in every arm (Ray: OMP_NUM_THREADS=1)
TARGETS = {"phase2": 0.95, "phase1": 0.90}


def main() -> None:
    args = arguments()
    from swap.spec import load_spec

    # Both arms learn the same thing from the same tensors: no augmentation in either (a plain
    # loop indexes one in-memory tensor; swap's loader would otherwise also crop per example).
    overrides = ["data.augment=false", *args.overrides]
    spec = load_spec(args.config, overrides)
    host = machine()
    print(describe_machine(host))
    print(budgets(spec, args))
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="swap-overhead-") as scratch:
        for repeat in range(1, args.repeats + 1):  # ABAB: the arms alternate within a repeat
            measured, phase1_checkpoint = swap_arm(args, overrides, scratch)
            measured |= {
                "plain_phase2": plain_phase2(spec, args.phase2_epochs),
                "swap_phase2_worker": swap_phase2_worker(spec, phase1_checkpoint, args),
                "plain_phase1": plain_phase1(spec, args.phase1_epochs),
            }
            for key, value in measured.items():
                rows.setdefault(key, []).append(value)
            print(f"repeat {repeat}: " + ", ".join(f"{k} {v:.1f}" for k, v in measured.items()))
    stats = {key: summary(values) for key, values in rows.items()}
    ratios = print_results(stats, rows)
    write_results(
        args.out / "overhead.json",
        host,
        budgets=budgets(spec, args),
        measurements=rows,
        summary=stats,
        ratios=ratios,
    )


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "quickstart.yaml"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--phase1-epochs", type=int, default=12, help="epoch 1 is not timed")
    parser.add_argument("--phase2-epochs", type=int, default=8, help="epoch 1 is not timed")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="spec overrides")
    return parser.parse_args()


def budgets(spec: Any, args: argparse.Namespace) -> str:
    p1, p2 = spec.phase1, spec.phase2
    return (
        f"data {spec.data.dataset} in memory, no augmentation; model {spec.model.arch}; "
        f"{THREADS} torch thread per process; phase 1: {p1.workers} processes, global batch "
        f"{p1.batch_size}, {args.phase1_epochs} epochs; phase 2: 1 process, batch "
        f"{p2.batch_size}, {args.phase2_epochs} epochs; samples/s: median over epochs 2.. of a "
        f"run (the first, warm-up epoch excluded in every arm), then median over {args.repeats} "
        "repeats, arms alternating"
    )


def swap_arm(
    args: argparse.Namespace, overrides: list[str], scratch: str
) -> tuple[dict[str, float], str]:
    """One real `swap run` (its own local Ray), phase 2 with one worker; numbers from its
    results.json: per-epoch seconds and samples, and when each epoch ended. Also returns
    where its phase-1 checkpoint is."""
    command = [str(SWAP), "run", args.config, *overrides, "name=overhead",
               f"phase1.max_epochs={args.phase1_epochs}", "phase2.workers=1",
               f"phase2.epochs={args.phase2_epochs}", f"output.dir={scratch}"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["OMP_NUM_THREADS"] = str(THREADS)
    started = time.time()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(
            f"swap run failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    runs = sorted(Path(scratch, "overhead").iterdir(), key=lambda p: p.stat().st_mtime)
    results = json.loads((runs[-1] / "results.json").read_text())
    p1 = results["phase1"]["history"]
    p2 = results["phase2"]["workers"][0]["history"]
    first_p2_step = p2[0]["ended_at"] - p2[0]["seconds"]
    return {
        "swap_phase2": rate(p2[1:]),
        "swap_phase1": rate(p1[1:]),
        # Epoch end to epoch end: phase 1's per-epoch report (a barrier) and checkpoint included.
        "swap_phase1_with_reports": statistics.median(
            b["samples"] / (b["ended_at"] - a["ended_at"])
            for a, b in zip(p1[:-1], p1[1:], strict=True)
        ),
        "startup_seconds": p1[0]["ended_at"] - p1[0]["seconds"] - started,
        "transition_seconds": first_p2_step - p1[-1]["ended_at"],
        "swap_run_seconds": time.time() - started,
    }, results["phase1"]["checkpoint"]


def rate(history: list[dict[str, Any]]) -> float:
    """Samples per second: the median over epochs, so that a burst of load from elsewhere on a
    shared machine moves it less than it moves a total."""
    return statistics.median(h["samples"] / h["seconds"] for h in history)


def in_memory(spec: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split swap trains on, as two tensors."""
    from swap.data.registry import load_splits

    train = load_splits(spec.data).train
    images = torch.stack([train[i][0] for i in range(len(train))])
    labels = torch.stack([torch.as_tensor(train[i][1]) for i in range(len(train))])
    return images, labels


def plain_model(spec: Any) -> torch.nn.Module:
    from swap.data.registry import dataset_info
    from swap.models.registry import build_model

    torch.manual_seed(spec.seed)
    return build_model(spec.model, dataset_info(spec.data))


def plain_loop(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    order: Any,
    batch: int,
    epochs: int,
) -> list[dict[str, float]]:
    """The textbook loop: index the tensors, forward, loss, backward, step. `order(epoch)`
    gives the examples this process trains on; a DDP process ends each epoch at a barrier."""
    history = []
    model.train()
    for epoch in range(1, epochs + 1):
        index = order(epoch)
        started = time.perf_counter()
        for first in range(0, len(index), batch):
            step = index[first : first + batch]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(images[step]), labels[step]).backward()
            optimizer.step()
        if dist.is_initialized():
            dist.barrier()
        history.append({"seconds": time.perf_counter() - started, "samples": len(index)})
    return history


def sgd(model: torch.nn.Module, lr: float, spec: Any) -> torch.optim.Optimizer:
    p1 = spec.phase1
    return torch.optim.SGD(
        model.parameters(), lr=lr, momentum=p1.momentum, weight_decay=p1.weight_decay
    )


def plain_phase2(spec: Any, epochs: int) -> float:
    """One process, batch phase2.batch_size: samples/s after the first epoch."""
    torch.set_num_threads(THREADS)
    images, labels = in_memory(spec)
    model = plain_model(spec)
    generator = torch.Generator().manual_seed(spec.seed)

    def order(epoch: int) -> torch.Tensor:
        return torch.randperm(len(labels), generator=generator)

    optimizer = sgd(model, spec.phase2.lr, spec)
    history = plain_loop(model, optimizer, images, labels, order, spec.phase2.batch_size, epochs)
    return rate(history[1:])


def swap_phase2_worker(spec: Any, phase1_checkpoint: str, args: argparse.Namespace) -> float:
    """A diagnosis, not an arm: swap's whole phase-2 worker (`phase2_worker`: its loader,
    schedule, statistics and per-epoch checkpoints), from the swap run's phase-1 weights, called
    in this process. Against plain_phase2 it is the cost of swap's code; against swap_phase2,
    the cost of running it as a Ray task inside a live swap job (Ray's processes beside it)."""
    from swap.phases.phase2_worker import phase2_worker
    from swap.rundir import MODEL_FILE

    torch.set_num_threads(THREADS)
    worker_spec = spec.model_copy(
        update={"phase2": spec.phase2.model_copy(update={"epochs": args.phase2_epochs})}
    )
    with tempfile.TemporaryDirectory() as run_dir, contextlib.redirect_stdout(io.StringIO()):
        result = phase2_worker(worker_spec, 0, str(Path(phase1_checkpoint) / MODEL_FILE), run_dir)
    return rate(result["history"][1:])


def plain_phase1(spec: Any, epochs: int) -> float:
    """phase1.workers processes (torch.multiprocessing spawn), DDP over gloo on 127.0.0.1."""
    world = spec.phase1.workers
    images, labels = in_memory(spec)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        try:
            mp.spawn(ddp_rank, args=(world, port, spec, images, labels, epochs, out), nprocs=world)
        except mp.ProcessExitedException as exc:
            # gloo's teardown can abort a rank after the work is done; the numbers still stand.
            if not Path(out, "rank0.json").exists():
                raise
            print(f"note: a plain DDP rank died after its measurement was written: {exc}")
        history = json.loads(Path(out, "rank0.json").read_text())
    return rate(history[1:])


def ddp_rank(rank: int, world: int, port: int, spec, images, labels, epochs: int, out: str):
    torch.set_num_threads(THREADS)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    model = torch.nn.parallel.DistributedDataParallel(plain_model(spec))
    per_rank = -(-len(labels) // world)  # padded like DistributedSampler: equal shards

    def order(epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(spec.seed + epoch)
        index = torch.randperm(len(labels), generator=generator)
        index = torch.cat([index, index[: per_rank * world - len(index)]])
        return index[rank::world]

    optimizer = sgd(model, spec.phase1.lr, spec)
    batch = spec.phase1.batch_size // world
    history = plain_loop(model, optimizer, images, labels, order, batch, epochs)
    for h in history:
        h["samples"] *= world  # every rank trained as many: the group's samples
    if rank == 0:
        Path(out, "rank0.json").write_text(json.dumps(history))
    dist.barrier()  # no rank tears down while another still talks to it
    dist.destroy_process_group()


def print_results(stats: dict[str, dict[str, float]], rows: dict[str, list[float]]) -> dict:
    print(f"\n{'measurement':<34} {'n':>2}  {'mean ± std':>18}  {'median':>8}")
    for key, s in stats.items():
        print(f"{key:<34} {s['n']:>2}  {mean_std(s, digits=1):>18}  {s['median']:8.1f}")
    ratios = {}
    for phase, swap_key in (
        ("phase2", "swap_phase2"),
        ("phase1", "swap_phase1"),
        ("phase1", "swap_phase1_with_reports"),
    ):
        plain = rows[f"plain_{phase}"]
        paired = [a / b for a, b in zip(rows[swap_key], plain, strict=True)]
        ratio = stats[swap_key]["median"] / stats[f"plain_{phase}"]["median"]
        met = "meets" if ratio >= TARGETS[phase] else "MISSES"
        print(
            f"{swap_key} / plain_{phase}: {ratio:.3f} (ratio of medians; median of paired "
            f"ratios {statistics.median(paired):.3f}); target >= {TARGETS[phase]:.2f}: {met}"
        )
        ratios[swap_key] = {"ratio_of_medians": ratio, "paired": paired, "target": TARGETS[phase]}
    worker = stats["swap_phase2_worker"]["median"]
    print(
        f"diagnosis: swap's phase2_worker called in this process / plain_phase2: "
        f"{worker / stats['plain_phase2']['median']:.3f}; swap_phase2 (the same code as a Ray "
        f"task in the swap run) / that: {stats['swap_phase2']['median'] / worker:.3f}"
    )
    return ratios


if __name__ == "__main__":
    main()
