"""Phase 1's work: one DDP rank's loop of large-batch synchronous SGD (Ray Train, DDP).

Run: placed by swap.phases.phase1.run_phase1 as TorchTrainer(phase1_worker, ...), one per rank.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from torch.nn.parallel import DistributedDataParallel

from swap import metrics, seeds, storage
from swap.data.common import Splits
from swap.data.feeds import EpochLoader, Held, evaluation_feed, training_feed
from swap.data.loaders import loader_settings
from swap.data.stream import StreamEpochs
from swap.models.registry import build_model
from swap.phases import ddp
from swap.progress import Progress
from swap.rundir import MODEL_FILE, load_state_dict, save_state_dict
from swap.schedules import checkpoint_due, lambda_lr, phase1_stop_reason, warmup_linear_decay
from swap.spec import Spec
from swap.storage import join
from swap.training import (
    EpochStats,
    Precision,
    epoch_line,
    epoch_record,
    evaluate,
    load_resumable_state,
    precision_for,
    resumable_state,
    sgd,
    to_memory_format,
    train_epoch,
    use_cpus,
)

TRAIN_STATE = "train_state.pt"  # optimizer, LR schedule, loss scale, history: for resuming


@dataclass(frozen=True)
class Rank:
    """One DDP rank's place in the job: what every function of its loop needs."""

    spec: Spec
    splits: Splits
    rank: int
    world: int
    device: torch.device
    precision: Precision
    labels: metrics.Labels


def phase1_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Train one DDP rank until the stopping rule fires; rank 0's return value is the result.

    `config`: the spec, the run id, and the data the driver built once (an ObjectRef). Every
    rank computes the same all-reduced training accuracy and loss, so all ranks stop together,
    also when the loss diverges. After a failure (Ray Train's FailureConfig) or a driver
    restart, training resumes from the latest per-epoch checkpoint.
    """
    # Ray Train logs every report at INFO through a logger its log level does not reach.
    logging.getLogger().setLevel(logging.WARNING)
    entered_at = time.time()  # Ray Train's start-up ends here; what follows is swap's
    spec: Spec = config["spec"]
    threads = use_cpus(spec.resources.phase1_cpus)
    context = ray.train.get_context()
    device = ray.train.torch.get_device()
    me = Rank(
        spec, ray.get(config["data"]), context.get_world_rank(), context.get_world_size(),
        device, precision_for(spec, device),
        metrics.Labels(config.get("run_id", ""), spec.name).at(1, metrics.PHASE1_WORKER),
    )  # fmt: skip
    torch.manual_seed(seeds.stream_seed(spec.seed, seeds.INIT))  # the same weights on every rank
    model = ray.train.torch.prepare_model(
        to_memory_format(build_model(spec.model, me.splits.info), me.precision)
    )
    batches = phase1_feed(me.splits, spec, me.rank, me.world)
    optimizer = sgd(model, spec.phase1.lr, spec.phase1.momentum, spec.phase1.weight_decay)
    scheduler = phase1_schedule(optimizer, spec, steps=len(batches))
    # Restored after DDP wrapping, so optimizer state lands on the parameters' device.
    history, digest = resume(
        ray.train.get_checkpoint(), unwrap(model), optimizer, scheduler, me.precision, me.rank
    )
    resumed_from = len(history)  # after a restart of the group, its last checkpointed epoch
    progress = group_progress(me, config.get("run_dir"), len(batches), history)

    cadence = Cadence(spec.phase1.checkpoint_every, time.perf_counter())
    while (stop_reason := stop_reason_of(history, spec.phase1)) is None:
        epoch = len(history) + 1
        batches.set_epoch(epoch)
        torch.manual_seed(seeds.phase1_rng(spec.seed, me.rank, epoch))
        prepare = me.splits.training_transform(seeds.phase1_augment(spec.seed, me.rank, epoch),
                                               device)  # fmt: skip
        lr, started = optimizer.param_groups[0]["lr"], time.perf_counter()
        if progress is not None:
            progress.start_epoch(epoch)
        local = train_epoch(model, batches, optimizer, scheduler, device, me.precision,
                            prepare=prepare, after_step=progress and progress.step)  # fmt: skip
        trained = time.perf_counter()
        stats = ddp.sum_over_ranks(local, device)
        if not math.isfinite(stats.loss_sum):
            return divergence(epoch, local, device)
        history.append(epoch_record(epoch, stats, lr, time.perf_counter() - started))
        if progress is not None:
            progress.end_epoch(history[-1], epoch_line("phase 1", history[-1],
                                                       spec.phase1.max_epochs))  # fmt: skip
        if me.rank == 0:
            metrics.record_epoch(me.labels, history[-1], len(batches))  # the group's numbers
        stopping = stop_reason_of(history, spec.phase1) is not None
        if cadence.due(epoch, stopping, me.device):
            state = resumable_state(optimizer, scheduler, me.precision, history)
            digest, cost = report_epoch(unwrap(model), state, spec, me.rank, me.labels)
            history[-1]["checkpoint_seconds"] = cost
            cadence.done(cost)
        history[-1]["after_training_seconds"] = time.perf_counter() - trained
    result = summary(me, unwrap(model), history, stop_reason, resumed_from, digest)
    result.update(torch_threads=threads, worker_started_at=entered_at)
    if progress is not None:
        progress.finish(test_accuracy=result["test_accuracy"])
    return result


def group_progress(
    me: Rank, run_dir: str | None, steps: int, history: list[dict[str, Any]]
) -> Progress | None:
    """Rank 0 reports the group's progress (swap.progress) to <run_dir>/phase1; None on the
    other ranks, and without a run directory."""
    if me.rank != 0 or run_dir is None:
        return None
    p1 = me.spec.phase1
    progress = Progress(join(run_dir, "phase1"), {"phase": 1}, p1.max_epochs, steps, p1.batch_size)
    if history:
        progress.resumed(history, f"phase 1  resuming after epoch {len(history)}")
    return progress


def phase1_schedule(
    optimizer: torch.optim.Optimizer, spec: Spec, steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up over `phase1.warmup_epochs`, then linear decay to 0 at `max_epochs`."""
    p1 = spec.phase1
    multiplier = partial(
        warmup_linear_decay,
        warmup_steps=p1.warmup_epochs * steps,
        total_steps=p1.max_epochs * steps,
    )
    return lambda_lr(optimizer, multiplier)


def summary(
    me: Rank,
    module: torch.nn.Module,
    history: list[dict[str, Any]],
    stop_reason: str,
    resumed_from: int,
    digest: str | None,
) -> dict[str, Any]:
    """The phase's result: its epochs, and the final weights evaluated on the held-out sets.

    Ranks' BatchNorm statistics drift apart (each saw its own batches); keep rank 0's, the ones
    in the checkpoint, so what is evaluated here is exactly what phase 2 starts from. Evaluate
    the bare module: DDP's forward is a collective, and shards may differ in batches.
    """
    ddp.broadcast_buffers(module)
    test = evaluate_sharded(module, me, "test")
    val = evaluate_sharded(module, me, "val")
    return {
        "epochs": len(history),
        "stop_reason": stop_reason,
        "resumed_from_epoch": resumed_from,
        "train_accuracy": history[-1]["train_accuracy"],
        "train_loss": history[-1]["train_loss"],
        "val_accuracy": val.accuracy_if_any,
        "test_accuracy": test.accuracy,
        "test_loss": test.loss,
        "sha256": digest,
        "history": history,
    }


def phase1_feed(splits: Splits, spec: Spec, rank: int, world: int) -> EpochLoader | StreamEpochs:
    """Rank `rank`'s batches: one permutation per epoch from phase 1's order stream, shared by
    the ranks, each taking its shard of every global batch of `phase1.batch_size`. A streamed
    set: this rank's shard of the pipeline Ray Train splits over the ranks, shuffled in a buffer
    from the same stream."""
    shard = (lambda epoch: ray.train.get_dataset_shard("train")) if splits.stream else None
    order_seed = partial(seeds.phase1_order, spec.seed)
    return training_feed(splits, spec.phase1.batch_size // world, order_seed,
                         loader_settings(spec), rank=rank, world=world, shard=shard)  # fmt: skip


def stop_reason_of(history: list[dict[str, Any]], p1: Any) -> str | None:
    if not history:
        return None
    last = history[-1]
    return phase1_stop_reason(
        last["epoch"], last["train_accuracy"], p1.max_epochs, p1.stop_train_accuracy
    )


def resume(
    checkpoint: ray.train.Checkpoint | None,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    precision: Precision,
    rank: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """Load the latest checkpoint Ray Train kept, if any; return its history and, on rank 0
    (whose result the driver keeps), its weights' digest."""
    if checkpoint is None:
        return [], None
    with checkpoint.as_directory() as directory:
        weights = Path(directory) / MODEL_FILE
        digest = storage.sha256(weights) if rank == 0 else None
        model.load_state_dict(load_state_dict(weights))
        state = load_state_dict(Path(directory) / TRAIN_STATE)
    return load_resumable_state(state, optimizer, scheduler, precision), digest


def divergence(epoch: int, local: EpochStats, device: torch.device) -> dict[str, Any]:
    """Every rank saw the non-finite sum: all stop here, and the driver fails the job."""
    step = ddp.first_bad_step(local.nonfinite_step, device)
    where = f"epoch {epoch}" if step is None else f"epoch {epoch}, step {step}"
    return {"diverged": f"non-finite training loss at {where}"}


class Cadence:
    """When phase 1 checkpoints (schedules.checkpoint_due): every `every` epochs, or by time,
    from rank 0's clock and the last checkpoint's cost, shared with the other ranks."""

    def __init__(self, every: int | None, now: float):
        self.every, self.last_at, self.last_cost = every, now, None

    def due(self, epoch: int, stopping: bool, device: torch.device) -> bool:
        since = time.perf_counter() - self.last_at
        due = checkpoint_due(epoch, stopping, self.every, since, self.last_cost)
        if stopping or self.every is not None:
            return due  # the same on every rank: the epoch and the all-reduced accuracy
        return ddp.rank0_decides(due, device)

    def done(self, seconds: dict[str, float]) -> None:
        self.last_at, self.last_cost = time.perf_counter(), sum(seconds.values())


def report_epoch(
    module: torch.nn.Module,
    state: dict[str, Any],
    spec: Spec,
    rank: int,
    labels: metrics.Labels,
) -> tuple[str | None, dict[str, float]]:
    """Hand Ray Train the epoch's checkpoint, from rank 0: the weights (`model.pt`, a plain
    state_dict), what resuming needs (`train_state.pt`: `resumable_state`) and the spec.
    Returns the weights' SHA-256 on rank 0 and what it cost in seconds: `save` (the files) and
    `report` (Ray Train copying them into the run's storage, and waiting for every rank).

    `ray.train.report` is a barrier: every rank must call it for the same epochs.
    """
    latest = state["history"][-1]
    started = time.perf_counter()
    if rank != 0:
        ray.train.report(latest)
        return None, {"report": time.perf_counter() - started}
    with tempfile.TemporaryDirectory() as tmp:
        saved = save_state_dict(module.state_dict(), Path(tmp) / MODEL_FILE)
        metrics.record_checkpoint(labels, saved, time.perf_counter() - started)
        save_state_dict(state, Path(tmp) / TRAIN_STATE)
        (Path(tmp) / "spec.yaml").write_text(spec.to_yaml())
        written = time.perf_counter()
        ray.train.report(latest, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    return saved.sha256, {"save": written - started, "report": time.perf_counter() - written}


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def evaluate_sharded(model: torch.nn.Module, me: Rank, split: Held) -> EpochStats:
    """Each rank evaluates its share of `split` (every `world`-th example; no padding, so every
    example counts once), summed over the ranks."""
    batches = evaluation_feed(me.splits, split, me.spec.phase3.batch_size,
                              loader_settings(me.spec), rank=me.rank, world=me.world)  # fmt: skip
    stats = evaluate(model, batches, me.device, me.precision, me.splits.batch_transform)
    return ddp.sum_over_ranks(stats, me.device)
