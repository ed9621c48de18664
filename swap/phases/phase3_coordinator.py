"""Phase 3: average the phase-2 workers' weights, refresh BatchNorm statistics, evaluate, save.

Run: placed by swap.phases.phase3.run_phase3 as one Ray task (the coordinator). No Ray here.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from swap import seeds
from swap.averaging import average_state_dicts
from swap.bn import refresh_bn
from swap.data.loaders import eval_loader, loader_settings
from swap.data.registry import load_splits
from swap.errors import JobFailed, SwapError
from swap.models.registry import build_model
from swap.rundir import MODEL_FILE, load_state_dict, save_state_dict, verify
from swap.spec import Spec
from swap.storage import join
from swap.training import device_for, evaluate, precision_for, to_memory_format


def phase3_coordinator(
    spec: Spec, checkpoints: dict[int, tuple[str, str]], run_dir: str
) -> dict[str, Any]:
    """Average the workers' `checkpoints` (index -> (path, sha256)) with equal weights, refresh
    BN on the training set, evaluate, and save the final model.

    Every checkpoint is checked against the SHA-256 its worker recorded before anything is
    averaged: a missing, truncated or corrupted one is dropped (and named in `dropped`), never
    averaged. Fewer than `phase2.min_workers` left fails the job.

    The refresh uses the training examples without augmentation: the statistics should match
    what the model sees at test time. `phase3.bn_batches` caps it at that many batches of a
    fixed (seeded) shuffle; null uses every training example once.
    """
    started = time.perf_counter()
    device = device_for(spec)
    splits = load_splits(spec.data)
    precision, feed = precision_for(spec, device), loader_settings(spec)
    model = build_model(spec.model, splits.info)

    average_started = time.perf_counter()
    good, dropped = check_checkpoints(checkpoints)
    if len(good) < spec.phase2.min_workers:
        raise JobFailed(
            f"phase 2: {len(good)} of {spec.phase2.workers} workers finished with a readable "
            f"checkpoint; phase2.min_workers is {spec.phase2.min_workers}"
        )
    # A generator, so only one worker's weights are loaded at a time.
    model.load_state_dict(average_state_dicts(load_state_dict(p) for p in good.values()))
    average_seconds = time.perf_counter() - average_started
    model = to_memory_format(model.to(device), precision)

    bs = spec.phase3.batch_size
    test_batches = eval_loader(splits.test, bs, feed)
    val_batches = eval_loader(splits.val, bs, feed)
    before = evaluate(model, test_batches, device, precision)
    val_before = evaluate(model, val_batches, device, precision)

    bn_seconds, bn_batches = 0.0, 0
    if spec.phase3.bn_refresh:
        bn_started = time.perf_counter()
        shuffle = seeds.stream_seed(spec.seed, "phase3", seeds.BN)
        batches = eval_loader(splits.train_plain, bs, feed, shuffle_seed=shuffle)
        if spec.phase3.bn_batches is not None:
            batches = itertools.islice(batches, spec.phase3.bn_batches)
        bn_batches = refresh_bn(
            model,
            batches,
            device=device,
            autocast_dtype=precision.autocast_dtype,
            channels_last=precision.channels_last,
        )
        bn_seconds = time.perf_counter() - bn_started

    test, val = before, val_before  # the same weights, unless the BN refresh changed them
    if spec.phase3.bn_refresh:
        test = evaluate(model, test_batches, device, precision)
        val = evaluate(model, val_batches, device, precision)
    saving = time.perf_counter()
    final = save_state_dict(model.state_dict(), join(run_dir, "final", MODEL_FILE))
    write_seconds = time.perf_counter() - saving
    return {
        "averaged_workers": sorted(good),
        "dropped": dropped,
        "test_accuracy_before_bn": before.accuracy,
        "val_accuracy_before_bn": val_before.accuracy if val_before.count else None,
        "test_accuracy": test.accuracy,
        "test_loss": test.loss,
        "val_accuracy": val.accuracy if val.count else None,
        "bn_batches": bn_batches,
        "average_seconds": average_seconds,
        "bn_refresh_seconds": bn_seconds,
        "seconds": time.perf_counter() - started,
        "model": final.location,
        "sha256": final.sha256,
        "model_bytes": final.size,
        "model_write_seconds": write_seconds,
    }


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
