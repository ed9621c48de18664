"""Phase 3: average the phase-2 workers' weights, refresh BatchNorm statistics, evaluate, save.

Run: placed by swap.phases.phase3.run_phase3 as one Ray task (the coordinator). No Ray here.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from swap import seeds
from swap.averaging import average_state_dicts
from swap.bn import refresh_bn
from swap.data.common import Splits
from swap.data.loaders import eval_loader, loader_settings
from swap.errors import JobFailed, SwapError
from swap.models.registry import build_model
from swap.rundir import MODEL_FILE, load_state_dict, save_state_dict, verify
from swap.spec import Spec
from swap.storage import join
from swap.training import (
    EpochStats,
    Precision,
    device_for,
    evaluate,
    precision_for,
    ready_inputs,
    to_memory_format,
)


def phase3_coordinator(
    spec: Spec, splits: Splits, checkpoints: dict[int, tuple[str, str]], run_dir: str
) -> dict[str, Any]:
    """Average the workers' `checkpoints` (index -> (path, sha256)) with equal weights, refresh
    BN on the training set of `splits`, evaluate, and save the final model.

    Every checkpoint is checked against the SHA-256 its worker recorded before anything is
    averaged: a missing, truncated or corrupted one is dropped (and named in `dropped`), never
    averaged. Fewer than `phase2.min_workers` left fails the job.
    """
    started, device = time.perf_counter(), device_for(spec)
    precision = precision_for(spec, device)
    model = build_model(spec.model, splits.info)

    good, dropped = check_checkpoints(checkpoints)
    if len(good) < spec.phase2.min_workers:
        raise JobFailed(
            f"phase 2: {len(good)} of {spec.phase2.workers} workers finished with a readable "
            f"checkpoint; phase2.min_workers is {spec.phase2.min_workers}"
        )
    # A generator, so only one worker's weights are loaded at a time.
    model.load_state_dict(average_state_dicts(load_state_dict(p) for p in good.values()))
    average_seconds = time.perf_counter() - started
    model = to_memory_format(model.to(device), precision)

    evaluation = Evaluation(spec, splits, device, precision)
    before, val_before = evaluation.test(model), evaluation.val(model)
    bn_started = time.perf_counter()
    bn_batches = refresh(model, spec, splits, device, precision) if spec.phase3.bn_refresh else 0
    bn_seconds = time.perf_counter() - bn_started
    # The same weights as before, unless the BN refresh changed them.
    test, val = (
        (evaluation.test(model), evaluation.val(model)) if bn_batches else (before, val_before)
    )
    saving = time.perf_counter()
    final = save_state_dict(model.state_dict(), join(run_dir, "final", MODEL_FILE))
    return {
        "averaged_workers": sorted(good),
        "dropped": dropped,
        "test_accuracy_before_bn": before.accuracy,
        "val_accuracy_before_bn": val_before.accuracy_if_any,
        "test_accuracy": test.accuracy,
        "test_loss": test.loss,
        "val_accuracy": val.accuracy_if_any,
        "bn_batches": bn_batches,
        "average_seconds": average_seconds,
        "bn_refresh_seconds": bn_seconds,
        "evaluation_seconds": evaluation.seconds,
        "seconds": time.perf_counter() - started,
        "model": final.location,
        "sha256": final.sha256,
        "model_bytes": final.size,
        "model_write_seconds": time.perf_counter() - saving,
    }


@dataclass
class Evaluation:
    """The held-out sets' loaders, built once, and a model's statistics on each."""

    spec: Spec
    splits: Splits
    device: torch.device
    precision: Precision

    seconds: float = 0.0  # spent evaluating so far

    def __post_init__(self) -> None:
        bs, feed = self.spec.phase3.batch_size, loader_settings(self.spec)
        self.test_batches = eval_loader(self.splits.test, bs, feed)
        self.val_batches = eval_loader(self.splits.val, bs, feed)

    def test(self, model: torch.nn.Module) -> EpochStats:
        return self._on(model, self.test_batches)

    def val(self, model: torch.nn.Module) -> EpochStats:
        return self._on(model, self.val_batches)

    def _on(self, model: torch.nn.Module, batches: Iterable) -> EpochStats:
        started = time.perf_counter()
        stats = evaluate(model, batches, self.device, self.precision, self.splits.batch_transform)
        self.seconds += time.perf_counter() - started
        return stats


def refresh(
    model: torch.nn.Module, spec: Spec, splits: Splits, device: torch.device, precision: Precision
) -> int:
    """Recompute the BatchNorm statistics on the training examples without augmentation (the
    statistics should match what the model sees at test time); return the batches used.
    `phase3.bn_batches` caps it at that many batches of a fixed (seeded) shuffle; null uses
    every training example once."""
    shuffle = seeds.stream_seed(spec.seed, "phase3", seeds.BN)
    loader = eval_loader(splits.train_plain, spec.phase3.batch_size, loader_settings(spec),
                         shuffle_seed=shuffle)  # fmt: skip
    batches = ready_inputs(loader, device, precision, splits.batch_transform)
    if spec.phase3.bn_batches is not None:
        batches = itertools.islice(batches, spec.phase3.bn_batches)
    return refresh_bn(model, batches, device=device, autocast_dtype=precision.autocast_dtype)


def check_checkpoints(
    checkpoints: dict[int, tuple[str, str]],
) -> tuple[dict[int, str], dict[int, str]]:
    """Split workers into those whose checkpoint matches its SHA-256 (index -> path) and those
    dropped (index -> why)."""
    good, dropped = {}, {}
    for index, (path, sha256) in sorted(checkpoints.items()):
        try:
            verify(path, sha256)
        except SwapError as exc:
            dropped[index] = str(exc)
            continue
        good[index] = path
    return good, dropped
