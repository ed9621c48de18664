"""Phase 2: one independent small-batch worker, forked from the phase-1 weights. No Ray here.

Run: launched by swap.job.run_phase2, one Ray task per worker; each fails alone.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from swap.checkpoints import MODEL_FILE, load_state_dict, phase2_dir, save_state_dict
from swap.data import load_splits, loader
from swap.models import build_model
from swap.schedules import PHASE2_SCHEDULES, lambda_lr
from swap.spec import Spec
from swap.training import epoch_record, evaluate, progress_line, sgd, train_epoch


def worker_seed(spec: Spec, index: int) -> int:
    return spec.seed + 1 + index


def phase2_worker(spec: Spec, index: int, phase1_dir: Path, run_dir: Path) -> dict[str, Any]:
    """Train worker `index` from the phase-1 weights in `phase1_dir` and save its own.

    Its seed (`seed + 1 + index`) drives its data order and augmentation. The optimizer starts
    fresh: phase 1's momentum belongs to a different batch size and learning rate.
    """
    p2 = spec.phase2
    seed = worker_seed(spec, index)
    started = time.perf_counter()
    device = torch.device("cuda" if spec.resources.use_gpu else "cpu")
    torch.manual_seed(seed)

    splits = load_splits(spec.data.dataset, spec.data.augment, spec.data.val_fraction)
    model = build_model(spec.model.arch, splits.info)
    model.load_state_dict(load_state_dict(Path(phase1_dir) / MODEL_FILE))
    model.to(device)

    batches = loader(splits.train, p2.batch_size, shuffle_seed=seed)
    optimizer = sgd(model, p2.lr, spec.phase2_momentum, spec.phase2_weight_decay)
    schedule = partial(PHASE2_SCHEDULES[p2.schedule], total_steps=p2.epochs * len(batches))
    scheduler = lambda_lr(optimizer, schedule)

    history = []
    for epoch in range(1, p2.epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        epoch_started = time.perf_counter()
        stats = train_epoch(model, batches, optimizer, scheduler, device)
        history.append(epoch_record(epoch, stats, lr, time.perf_counter() - epoch_started))
        print(progress_line(f"phase 2  worker {index}", history[-1], p2.epochs), flush=True)

    test = evaluate(model, loader(splits.test, spec.phase3.batch_size), device)
    val = evaluate(model, loader(splits.val, spec.phase3.batch_size), device)
    checkpoint = save_state_dict(model.state_dict(), phase2_dir(run_dir, index) / MODEL_FILE)
    return {
        "index": index,
        "seed": seed,
        "status": "finished",
        "train_accuracy": history[-1]["train_accuracy"],
        "val_accuracy": val.accuracy if val.count else None,
        "test_accuracy": test.accuracy,
        "test_loss": test.loss,
        "seconds": time.perf_counter() - started,
        "checkpoint": str(checkpoint),
        "history": history,
    }
