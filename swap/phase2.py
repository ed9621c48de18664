"""Phase 2: one independent small-batch worker, forked from the phase-1 weights. No Ray here.

Run: launched by swap.launch.run_phase2, one Ray task per worker; each fails alone.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data.distributed import DistributedSampler

from swap.checkpoints import (
    MODEL_FILE,
    load_progress,
    load_state_dict,
    phase2_dir,
    save_progress,
    save_state_dict,
)
from swap.data import load_splits, loader, loader_settings
from swap.errors import DivergenceError
from swap.models import build_model
from swap.schedules import PHASE2_SCHEDULES, lambda_lr
from swap.spec import Spec
from swap.storage import join
from swap.training import (
    epoch_record,
    evaluate,
    precision_for,
    progress_line,
    sgd,
    to_memory_format,
    train_epoch,
)


class Progress(Protocol):
    """What a worker reports as it trains; swap.job passes one that records Ray metrics."""

    def epoch(self, record: dict[str, Any], steps: int) -> None: ...

    def checkpoint(self, saved: Any, seconds: float) -> None: ...  # save_state_dict's return


def worker_seed(spec: Spec, index: int) -> int:
    return spec.seed + 1 + index


def epoch_seed(seed: int, epoch: int) -> int:
    """One epoch's RNG seed: a resumed worker draws what an uninterrupted one would."""
    return seed * 10_007 + epoch


def phase2_worker(
    spec: Spec,
    index: int,
    phase1_dir: Path,
    run_dir: str,
    progress: Progress | None = None,
    phase1_sha256: str | None = None,
) -> dict[str, Any]:
    """Train worker `index` from the phase-1 weights in `phase1_dir` and save its own.

    Its seed (`seed + 1 + index`) drives its data order and augmentation. The optimizer starts
    fresh: phase 1's momentum belongs to a different batch size and learning rate. After
    every epoch the worker commits a resumable checkpoint to its directory in the run; a rerun
    (after its process or node died) continues from there. A NaN or infinite loss raises
    DivergenceError: that worker is lost, not retried.
    """
    p2 = spec.phase2
    seed = worker_seed(spec, index)
    directory = phase2_dir(run_dir, index)
    started = time.perf_counter()
    device = torch.device("cuda" if spec.resources.use_gpu else "cpu")

    splits = load_splits(spec.data)
    precision, feed = precision_for(spec, device), loader_settings(spec)
    committed = load_progress(directory)  # a rerun continues after its last committed epoch
    torch.manual_seed(seed)
    model = build_model(spec.model, splits.info)
    if committed is None:
        model.load_state_dict(load_state_dict(Path(phase1_dir) / MODEL_FILE, phase1_sha256))
    model = to_memory_format(model.to(device), precision)

    # A one-replica DistributedSampler: a seeded shuffle per epoch, reproducible on resume.
    sampler = DistributedSampler(splits.train, num_replicas=1, rank=0, shuffle=True, seed=seed)
    batches = loader(splits.train, p2.batch_size, sampler=sampler, settings=feed)
    optimizer = sgd(model, p2.lr, spec.phase2_momentum, spec.phase2_weight_decay)
    schedule = partial(PHASE2_SCHEDULES[p2.schedule], total_steps=p2.epochs * len(batches))
    scheduler = lambda_lr(optimizer, schedule)
    history = resume(committed, model, optimizer, scheduler, precision)
    resumed_from = len(history)

    for epoch in range(len(history) + 1, p2.epochs + 1):
        sampler.set_epoch(epoch)
        torch.manual_seed(epoch_seed(seed, epoch))
        lr = optimizer.param_groups[0]["lr"]
        epoch_started = time.perf_counter()
        try:
            stats = train_epoch(
                model, batches, optimizer, scheduler, device, precision, stop_on_nonfinite=True
            )
        except DivergenceError as exc:
            raise DivergenceError(f"phase-2 worker {index}: epoch {epoch}, {exc}") from None
        history.append(epoch_record(epoch, stats, lr, time.perf_counter() - epoch_started))
        print(progress_line(f"phase 2  worker {index}", history[-1], p2.epochs), flush=True)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "history": history}  # fmt: skip
        if precision.scaler is not None:
            state["scaler"] = precision.scaler.state_dict()
        save_progress(directory, epoch, state)
        if progress:
            progress.epoch(history[-1], len(batches))

    bs = spec.phase3.batch_size
    test = evaluate(model, loader(splits.test, bs, settings=feed), device, precision)
    val = evaluate(model, loader(splits.val, bs, settings=feed), device, precision)
    saving = time.perf_counter()
    saved = save_state_dict(model.state_dict(), join(directory, MODEL_FILE))
    if progress:
        progress.checkpoint(saved, time.perf_counter() - saving)
    return {
        "index": index,
        "seed": seed,
        "status": "finished",
        "train_accuracy": history[-1]["train_accuracy"],
        "val_accuracy": val.accuracy if val.count else None,
        "test_accuracy": test.accuracy,
        "test_loss": test.loss,
        "seconds": time.perf_counter() - started,
        "resumed_from_epoch": resumed_from,
        "checkpoint": saved.location,
        "sha256": saved.sha256,
        "history": history,
    }


def resume(
    state: dict[str, Any] | None,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    precision: Any,
) -> list[dict[str, Any]]:
    """Load the worker's last committed epoch (`load_progress`), if it has one; return the
    epochs' history."""
    if state is None:
        return []
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if precision.scaler is not None and "scaler" in state:
        precision.scaler.load_state_dict(state["scaler"])
    print(f"phase 2  worker resuming after epoch {len(state['history'])}", flush=True)
    return state["history"]
