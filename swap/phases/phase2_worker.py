"""Phase 2's work: one independent small-batch worker, forked from the phase-1 weights. No Ray.

Run: placed by swap.phases.phase2.run_phase2, one Ray task per worker; each fails alone.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

import torch

from swap import seeds
from swap.data.common import Splits
from swap.data.feeds import EpochLoader, evaluation_feed, training_feed
from swap.data.loaders import loader_settings
from swap.data.stream import StreamEpochs
from swap.errors import DivergenceError
from swap.models.registry import build_model
from swap.progress import Progress
from swap.rundir import (
    MODEL_FILE,
    SWAG_FILE,
    attempts_record,
    load_resume_point,
    load_state_dict,
    phase2_dir,
    record_fallback,
    save_resume_point,
    save_state_dict,
)
from swap.schedules import first_snapshot_step, lambda_lr, phase2_multiplier
from swap.spec import Spec
from swap.storage import join
from swap.swag import SwagMoments, check_memory
from swap.training import (
    Precision,
    device_for,
    epoch_line,
    epoch_record,
    evaluate,
    load_resumable_state,
    precision_for,
    resumable_state,
    sgd,
    to_memory_format,
    train_epoch,
)


class WorkerEvents(Protocol):
    """What a worker reports as it trains; its Ray task passes metrics.WorkerMetrics."""

    def epoch(self, record: dict[str, Any], steps: int) -> None: ...

    def checkpoint(self, saved: Any, seconds: float) -> None: ...  # save_state_dict's return


def phase2_worker(
    spec: Spec,
    index: int,
    splits: Splits,
    phase1_weights: str,
    run_dir: str,
    events: WorkerEvents | None = None,
    phase1_sha256: str | None = None,
) -> dict[str, Any]:
    """Train worker `index` on `splits` from the phase-1 weights at `phase1_weights` (a path or
    URI, checked against `phase1_sha256` when given) and save its own.

    Its own streams (swap.seeds: `phase2_order`, `phase2_augment`, `phase2_rng`) drive its data
    order and augmentation, a fresh draw each epoch, unrelated to any other worker's or to phase
    1's (`results.json` records their root, `worker_seed`). The optimizer starts fresh: phase
    1's momentum belongs to a different batch size and learning rate. After every epoch the
    worker commits a resumable checkpoint to its directory in the run; a rerun (after its
    process or node died) continues from there. A NaN or infinite loss raises DivergenceError:
    that worker is lost, not retried.
    """
    p2, started, device = spec.phase2, time.perf_counter(), device_for(spec)
    directory = phase2_dir(run_dir, index)
    precision = precision_for(spec, device)
    committed, skipped = load_resume_point(directory)  # a rerun continues after its last epoch
    model = build_model(spec.model, splits.info)  # its weights come from phase 1 or `committed`
    if committed is None:
        model.load_state_dict(load_state_dict(phase1_weights, phase1_sha256))
    model = to_memory_format(model.to(device), precision)
    batches = phase2_feed(splits, spec, index)
    attempt = max(1, attempts_record(directory)["attempts"])  # phase2_task counted this one
    progress = Progress(directory, {"phase": 2, "worker": index}, p2.epochs, len(batches),
                        p2.batch_size, attempt)  # fmt: skip
    if skipped:  # damaged resume points: the one before, or phase 1's weights, instead
        after = len(committed["history"]) if committed is not None else 0
        record_fallback(directory, skipped, after)
        start = f"after epoch {after}" if after else "from the phase-1 weights"
        progress.say(f"phase 2  worker {index}: {'; '.join(skipped)}: resuming {start}")
    optimizer = sgd(model, p2.lr, spec.phase2_momentum, spec.phase2_weight_decay)
    total = p2.epochs * len(batches)
    tail = first_snapshot_step(p2.swag_start, total)  # the swa schedule's tail starts there too
    floor = p2.swa_lr / p2.lr if p2.swa_lr is not None else 1.0
    scheduler = lambda_lr(optimizer, phase2_multiplier(p2.schedule, total, tail, floor))
    history = resume(committed, model, optimizer, scheduler, precision)
    resumed_from = len(history)
    if history:
        progress.resumed(history, f"phase 2  worker {index}  resuming after epoch {len(history)}")
    swag = swag_moments(spec, model, device, committed)
    collect = swag_hook(
        swag, model, p2.swag_every or len(batches), tail, len(history) * len(batches)
    )

    def after_step(step: int, loss: torch.Tensor) -> None:
        progress.step(step, loss)
        if collect is not None:
            collect()

    for epoch in range(len(history) + 1, p2.epochs + 1):
        batches.set_epoch(epoch)
        torch.manual_seed(seeds.phase2_rng(spec.seed, index, epoch))
        prepare = splits.training_transform(seeds.phase2_augment(spec.seed, index, epoch), device)
        lr, epoch_started = optimizer.param_groups[0]["lr"], time.perf_counter()
        progress.start_epoch(epoch)
        try:
            stats = train_epoch(model, batches, optimizer, scheduler, device, precision,
                                stop_on_nonfinite=True, prepare=prepare,
                                after_step=after_step)  # fmt: skip
        except DivergenceError as exc:
            raise DivergenceError(f"phase-2 worker {index}: epoch {epoch}, {exc}") from None
        history.append(epoch_record(epoch, stats, lr, time.perf_counter() - epoch_started))
        state = resumable_state(optimizer, scheduler, precision, history)
        if swag is not None:
            state["swag"] = swag.state_dict()
        save_resume_point(directory, epoch, {"model": model.state_dict(), **state})
        progress.end_epoch(history[-1], epoch_line(f"phase 2  worker {index}", history[-1],
                                                   p2.epochs))  # fmt: skip
        if events:
            events.epoch(history[-1], len(batches))

    result = finish(spec, index, model, splits, precision, directory, events)
    if swag is not None:
        saved = save_state_dict(swag.state_dict(), join(directory, SWAG_FILE))
        result.update(swag=saved.location, swag_sha256=saved.sha256, swag_snapshots=swag.count)
    progress.finish(test_accuracy=result["test_accuracy"])
    return {
        **result,
        "train_accuracy": history[-1]["train_accuracy"],
        "seconds": time.perf_counter() - started,
        "resumed_from_epoch": resumed_from,
        "resume_fallbacks": skipped,
        "history": history,
    }


def swag_hook(
    swag: SwagMoments | None, model: torch.nn.Module, every: int, tail: int, done: int
) -> Callable[[], None] | None:
    """What collects SWAG's snapshots after each step (None without SWAG): every `every` steps
    (once an epoch: training drops the partial last batch, so an epoch is `every` steps) once
    the first `tail` of the worker's steps are done, counting the `done` ones of earlier
    epochs: the steps swap.schedules.snapshot_steps lists."""
    if swag is None:
        return None
    steps = itertools.count(done)

    def collect() -> None:
        taken = next(steps) + 1
        if taken > tail and taken % every == 0:
            swag.collect(model)

    return collect


def finish(
    spec: Spec,
    index: int,
    model: torch.nn.Module,
    splits: Splits,
    precision: Precision,
    directory: str,
    events: WorkerEvents | None,
) -> dict[str, Any]:
    """Evaluate the trained worker on the held-out sets and save its weights."""
    bs, feed, device = spec.phase3.batch_size, loader_settings(spec), device_for(spec)
    test = evaluate(model, evaluation_feed(splits, "test", bs, feed), device, precision,
                    splits.batch_transform)  # fmt: skip
    val = evaluate(model, evaluation_feed(splits, "val", bs, feed), device, precision,
                   splits.batch_transform)  # fmt: skip
    saving = time.perf_counter()
    saved = save_state_dict(model.state_dict(), join(directory, MODEL_FILE))
    if events:
        events.checkpoint(saved, time.perf_counter() - saving)
    return {
        "index": index,
        "seed": seeds.worker_seed(spec.seed, index),
        "status": "finished",
        "val_accuracy": val.accuracy_if_any,
        "test_accuracy": test.accuracy,
        "test_loss": test.loss,
        "checkpoint": saved.location,
        "sha256": saved.sha256,
    }


def swag_moments(
    spec: Spec, model: torch.nn.Module, device: torch.device, committed: dict[str, Any] | None
) -> SwagMoments | None:
    """The worker's SWAG statistics with `phase2.swag_rank` (None without): its committed ones
    on a rerun, else new, once it is known that they fit in memory."""
    if not spec.phase2.swag_rank:
        return None
    if committed is not None and "swag" in committed:
        return SwagMoments.of(model, committed["swag"])
    check_memory(model, spec.phase2.swag_rank, device)
    return SwagMoments(model, spec.phase2.swag_rank)


def phase2_feed(splits: Splits, spec: Spec, index: int) -> EpochLoader | StreamEpochs:
    """Worker `index`'s batches of `phase2.batch_size`, a new order each epoch from its stream
    (a streamed set: the files in that order, then shuffled in a buffer)."""
    order_seed = partial(seeds.phase2_order, spec.seed, index)
    return training_feed(splits, spec.phase2.batch_size, order_seed, loader_settings(spec))


def resume(
    state: dict[str, Any] | None,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    precision: Precision,
) -> list[dict[str, Any]]:
    """Load the worker's last committed epoch (`load_resume_point`), if it has one; return the
    epochs' history."""
    if state is None:
        return []
    model.load_state_dict(state["model"])
    return load_resumable_state(state, optimizer, scheduler, precision)
