"""Phase 3: average the phase-2 workers' weights, refresh BatchNorm statistics, evaluate, save.

Run: launched by swap.job.run_phase3 as one Ray task (the coordinator). No Ray here.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import torch

from swap.averaging import average_state_dicts
from swap.bn import refresh_bn
from swap.checkpoints import MODEL_FILE, load_state_dict, save_state_dict
from swap.data import load_splits, loader
from swap.models import build_model
from swap.spec import Spec
from swap.training import evaluate


def phase3_coordinator(spec: Spec, checkpoints: dict[int, str], run_dir: Path) -> dict[str, Any]:
    """Average the workers' `checkpoints` (index -> path) with equal weights, refresh BN on
    the training set, evaluate, and save the final model.

    The refresh uses the training examples without augmentation: the statistics should match
    what the model sees at test time. `phase3.bn_batches` caps it at that many batches of a
    fixed (seeded) shuffle; null uses every training example once.
    """
    started = time.perf_counter()
    device = torch.device("cuda" if spec.resources.use_gpu else "cpu")
    splits = load_splits(spec.data.dataset, spec.data.augment, spec.data.val_fraction)
    model = build_model(spec.model.arch, splits.info)

    average_started = time.perf_counter()
    # A generator, so only one worker's weights are loaded at a time.
    model.load_state_dict(average_state_dicts(load_state_dict(p) for p in checkpoints.values()))
    average_seconds = time.perf_counter() - average_started
    model.to(device)

    bs = spec.phase3.batch_size
    before = evaluate(model, loader(splits.test, bs), device)
    val_before = evaluate(model, loader(splits.val, bs), device)

    bn_seconds, bn_batches = 0.0, 0
    if spec.phase3.bn_refresh:
        bn_started = time.perf_counter()
        batches = loader(splits.train_plain, bs, shuffle_seed=spec.seed)
        if spec.phase3.bn_batches is not None:
            batches = itertools.islice(batches, spec.phase3.bn_batches)
        bn_batches = refresh_bn(model, batches, device=device)
        bn_seconds = time.perf_counter() - bn_started

    test = evaluate(model, loader(splits.test, bs), device)
    val = evaluate(model, loader(splits.val, bs), device)
    final = save_state_dict(model.state_dict(), Path(run_dir) / "final" / MODEL_FILE)
    return {
        "averaged_workers": sorted(checkpoints),
        "test_accuracy_before_bn": before.accuracy,
        "val_accuracy_before_bn": val_before.accuracy if val_before.count else None,
        "test_accuracy": test.accuracy,
        "test_loss": test.loss,
        "val_accuracy": val.accuracy if val.count else None,
        "bn_batches": bn_batches,
        "average_seconds": average_seconds,
        "bn_refresh_seconds": bn_seconds,
        "seconds": time.perf_counter() - started,
        "model": str(final),
    }
