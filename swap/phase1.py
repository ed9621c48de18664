"""Phase 1: the per-worker loop of large-batch synchronous data-parallel SGD (Ray Train, DDP).

Run: launched by swap.job.run_phase1 as TorchTrainer(phase1_worker, ...); one copy per rank.
"""

from __future__ import annotations

import logging
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Subset
from torch.utils.data.distributed import DistributedSampler

from swap.checkpoints import MODEL_FILE, save_state_dict
from swap.data import load_splits, loader
from swap.models import build_model
from swap.schedules import lambda_lr, phase1_stop_reason, warmup_linear_decay
from swap.spec import Spec
from swap.training import (
    EpochStats,
    epoch_record,
    evaluate,
    progress_line,
    sgd,
    train_epoch,
)


def phase1_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Train one DDP rank until the stopping rule fires; rank 0's return value is the result.

    Every rank computes the same all-reduced training accuracy, so all ranks stop together.
    """
    # Ray Train logs every report at INFO through a logger its log level does not reach.
    logging.getLogger().setLevel(logging.WARNING)
    spec = Spec.model_validate(config["spec"])
    p1 = spec.phase1
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()

    splits = load_splits(spec.data.dataset, spec.data.augment, spec.data.val_fraction)
    torch.manual_seed(spec.seed)  # the same initial weights on every rank
    model = ray.train.torch.prepare_model(build_model(spec.model.arch, splits.info))
    torch.manual_seed(spec.seed * 1_000_003 + rank)  # each rank its own augmentation draws

    sampler = DistributedSampler(splits.train, world, rank, shuffle=True, seed=spec.seed)
    batches = loader(splits.train, p1.batch_size // world, sampler=sampler)
    optimizer = sgd(model, p1.lr, p1.momentum, p1.weight_decay)
    steps = len(batches)
    scheduler = lambda_lr(
        optimizer,
        partial(
            warmup_linear_decay,
            warmup_steps=p1.warmup_epochs * steps,
            total_steps=p1.max_epochs * steps,
        ),
    )

    history: list[dict[str, Any]] = []
    stop_reason = None
    while stop_reason is None:
        epoch = len(history) + 1
        sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        started = time.perf_counter()
        stats = all_reduce(train_epoch(model, batches, optimizer, scheduler, device))
        record = epoch_record(epoch, stats, lr, time.perf_counter() - started)
        history.append(record)
        stop_reason = phase1_stop_reason(
            epoch, stats.accuracy, p1.max_epochs, p1.stop_train_accuracy
        )
        if rank == 0:
            print(progress_line("phase 1", record, p1.max_epochs), flush=True)
        report_epoch(unwrap(model), record, spec, rank)

    # Ranks' BatchNorm statistics drift apart (each saw its own batches); keep rank 0's, the
    # ones in the checkpoint, so what is evaluated here is exactly what phase 2 starts from.
    # Evaluate the bare module: DDP's forward is a collective, and shards may differ in batches.
    module = unwrap(model)
    if world > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
    test = evaluate_sharded(module, splits.test, spec, rank, world, device)
    val = evaluate_sharded(module, splits.val, spec, rank, world, device)
    return {
        "epochs": len(history),
        "stop_reason": stop_reason,
        "train_accuracy": history[-1]["train_accuracy"],
        "train_loss": history[-1]["train_loss"],
        "val_accuracy": val.accuracy if val.count else None,
        "test_accuracy": test.accuracy,
        "test_loss": test.loss,
        "history": history,
    }


def report_epoch(module: torch.nn.Module, record: dict[str, Any], spec: Spec, rank: int) -> None:
    """Report the epoch's metrics; rank 0 also hands Ray Train the weights as a checkpoint.

    `ray.train.report` is a barrier: every rank must call it, once per epoch.
    """
    if rank != 0:
        ray.train.report(record)
        return
    with tempfile.TemporaryDirectory() as tmp:
        save_state_dict(module.state_dict(), Path(tmp) / MODEL_FILE)
        (Path(tmp) / "spec.yaml").write_text(spec.to_yaml())
        ray.train.report(record, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def all_reduce(stats: EpochStats) -> EpochStats:
    """Sum a pass's statistics over all ranks (a no-op without a process group)."""
    if not dist.is_initialized():
        return stats
    sums = stats.as_tensor()
    dist.all_reduce(sums)
    return EpochStats.from_tensor(sums)


def evaluate_sharded(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    spec: Spec,
    rank: int,
    world: int,
    device: torch.device,
) -> EpochStats:
    """Each rank evaluates every `world`-th example (no padding, so every example counts once)."""
    shard = Subset(dataset, range(rank, len(dataset), world))
    return all_reduce(evaluate(model, loader(shard, spec.phase3.batch_size), device))
