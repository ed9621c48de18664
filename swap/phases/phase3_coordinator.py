"""Phase 3: average the phase-2 workers' weights, refresh BatchNorm statistics, evaluate, save.

Run: placed by swap.phases.phase3.run_phase3 as one Ray task (the coordinator). No Ray here.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from swap import seeds
from swap.averaging import average_state_dicts
from swap.bn import refresh_bn
from swap.calibration import quality
from swap.data.common import Splits
from swap.data.feeds import evaluation_feed
from swap.data.loaders import loader_settings
from swap.errors import JobFailed, SwapError
from swap.models.registry import build_model
from swap.progress import Progress
from swap.rundir import MODEL_FILE, load_state_dict, save_state_dict, verify
from swap.spec import Spec
from swap.storage import join
from swap.swag import SwagMoments, load_sample
from swap.training import (
    EpochStats,
    Precision,
    device_for,
    precision_for,
    predict,
    ready_inputs,
    to_memory_format,
)


def phase3_coordinator(
    spec: Spec,
    splits: Splits,
    checkpoints: dict[int, tuple[str, str]],
    run_dir: str,
    phase1: str | None = None,
    swag: dict[int, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Combine the workers' `checkpoints` (index -> (path, sha256)) as `phase3.combine` says,
    refresh BN on the training set of `splits`, evaluate, and save the final model; `phase1`
    (its weights) is evaluated beside them, and with `phase3.swag_samples` the workers' SWAG
    posteriors (`swag`: index -> (path, sha256) of their statistics).

    Every checkpoint is checked against the SHA-256 its worker recorded before anything is
    averaged: a missing, truncated or corrupted one is dropped (and named in `dropped`), never
    averaged. Fewer than `phase2.min_workers` left fails the job.
    """
    started = time.perf_counter()
    progress = Progress(join(run_dir, "phase3"), {"phase": 3}, epochs=0, steps=0, batch=0)
    progress.stage("checking the workers' checkpoints", 0, len(checkpoints))
    good, dropped = check_checkpoints(checkpoints)
    if len(good) < spec.phase2.min_workers:
        raise JobFailed(
            f"phase 2: {len(good)} of {spec.phase2.workers} workers finished with a readable "
            f"checkpoint; phase2.min_workers is {spec.phase2.min_workers}"
        )
    combined = combine(spec, splits, good, join(run_dir, "final", MODEL_FILE), phase1,
                       progress.stage)  # fmt: skip
    if spec.phase3.swag_samples and swag:
        posterior = multiswag(spec, splits, good, swag, progress.stage)
        combined["models"] += posterior.pop("models")
        combined.update(posterior)
    progress.finish(test_accuracy=combined["test_accuracy"])
    return {"dropped": dropped, **combined, "seconds": time.perf_counter() - started}


Stage = Callable[[str, int, int], None]  # (what phase 3 is doing, how many done, of how many)


def no_stage(name: str, done: int, total: int) -> None:
    return None


def multiswag(
    spec: Spec,
    splits: Splits,
    checkpoints: dict[int, str],
    swag: dict[int, tuple[str, str]],
    stage: Stage = no_stage,
) -> dict[str, Any]:
    """SWAG and MultiSWAG (Wilson & Izmailov 2020): `phase3.swag_samples` models drawn from each
    worker's posterior (swap.swag, scale 0.5), each BN-refreshed and scored; a worker's SWAG is
    its draws' averaged predictions, MultiSWAG every worker's draws averaged. A worker whose
    statistics do not match their SHA-256 is left out (named in `swag_dropped`)."""
    started, device = time.perf_counter(), device_for(spec)
    precision = precision_for(spec, device)
    evaluation = Evaluation(spec, splits, device, precision)
    models, dropped, everyone = [], {}, Ensemble()
    for index in sorted(set(checkpoints) & set(swag)):
        path, sha256 = swag[index]
        try:
            statistics = load_state_dict(path, sha256)
        except SwapError as exc:
            dropped[index] = str(exc)
            continue
        # The worker's own weights: its BN buffers stand when phase3.bn_refresh is off.
        model = model_of(spec, splits, load_state_dict(checkpoints[index]), device, precision)
        moments = SwagMoments.of(model, statistics)
        alone = Ensemble()
        for draw in range(spec.phase3.swag_samples):
            stage("SWAG draws", everyone.members, len(swag) * spec.phase3.swag_samples)
            generator = torch.Generator().manual_seed(
                seeds.stream_seed(spec.seed, "phase3", "swag", index, draw)
            )
            load_sample(model, moments.sample(generator))
            if spec.phase3.bn_refresh:
                refresh(model, spec, splits, device, precision)
            scores = evaluation.score(model)
            alone.add(scores)
            everyone.add(scores)
        models.append(alone.record(f"swag worker {index}"))
    if everyone.members:
        models.append(everyone.record("multiswag"))
    return {
        "models": models,
        "swag_samples": spec.phase3.swag_samples,
        "swag_dropped": dropped,
        "swag_seconds": time.perf_counter() - started,
    }


def combine(
    spec: Spec,
    splits: Splits,
    checkpoints: dict[int, str],
    out: str,
    phase1: str | None = None,
    stage: Stage = no_stage,
) -> dict[str, Any]:
    """Phase 3's work, and `swap average`'s: the workers' `checkpoints` (index -> path or URI)
    combined into one model saved to `out`, with

    - `phase3.combine: uniform`: the equal-weight average of them all;
    - `greedy`: the greedy soup (Wortsman et al. 2022): workers ordered by validation accuracy,
      the best first, each next one kept only if the soup's validation accuracy (after its BN
      refresh) does not drop;
    - `phase3.ensemble`: also the ensemble, the workers' softmax outputs averaged.

    `models` holds accuracy, NLL, ECE and Brier score (swap.calibration) on the test set and the
    validation split for every model evaluated: phase 1, each worker (when the soup or the
    ensemble needs them), the uniform average, the soup, the ensemble. The other fields describe
    the saved model.
    """
    started, device = time.perf_counter(), device_for(spec)
    precision = precision_for(spec, device)
    evaluation = Evaluation(spec, splits, device, precision)
    models: list[dict[str, Any]] = []

    def build(state: dict[str, Any]) -> torch.nn.Module:
        return model_of(spec, splits, state, device, precision)

    def averaged(
        indices: list[int], score: bool = True
    ) -> tuple[torch.nn.Module, Scores | None, int]:
        """The average of `indices` (in index order), its scores before the BN refresh (with
        `score`), and the refresh's batches (0: none)."""
        stage(f"averaging {len(indices)} workers", 0, 1)
        average_started = time.perf_counter()
        # A generator, so only one worker's weights are loaded at a time.
        model = build(average_state_dicts(load_state_dict(checkpoints[i]) for i in sorted(indices)))
        evaluation.average_seconds += time.perf_counter() - average_started
        before = evaluation.score(model) if score else None
        if not spec.phase3.bn_refresh:
            return model, before, 0
        stage("refreshing BatchNorm statistics", 0, 1)
        refresh_started = time.perf_counter()
        refreshed = refresh(model, spec, splits, device, precision)
        evaluation.bn_seconds += time.perf_counter() - refresh_started
        return model, before, refreshed

    def soup_accuracy(indices: list[int]) -> float:
        """A candidate soup's validation accuracy, after its BN refresh."""
        stage("greedy soup: trying each worker", len(indices) - 1, len(checkpoints))
        return evaluation.val_accuracy(averaged(indices, score=False)[0])

    if phase1 is not None:
        stage("evaluating phase 1's model", 0, 1)
        models.append(evaluation.score(build(load_state_dict(phase1))).record("phase 1"))
    alone: dict[int, float] = {}  # each worker's own validation accuracy, for the soup
    ensemble = Ensemble() if spec.phase3.ensemble else None
    extra = {}  # seconds the greedy soup and the ensemble added
    if spec.phase3.combine == "greedy" or ensemble is not None:
        scoring = time.perf_counter()
        for done, (index, path) in enumerate(checkpoints.items()):
            stage("evaluating each worker", done, len(checkpoints))
            scores = evaluation.score(build(load_state_dict(path)))
            models.append(scores.record(f"worker {index}"))
            alone[index] = scores.val.accuracy
            if ensemble is not None:
                ensemble.add(scores)
        extra["score_workers_seconds"] = time.perf_counter() - scoring

    model, before, bn_batches = averaged(list(checkpoints))
    chosen, soup = sorted(checkpoints), None
    stage("evaluating the average", 0, 1)
    after = evaluation.score(model) if bn_batches else before
    models.append(after.record("uniform average"))
    if spec.phase3.combine == "greedy":
        searching = time.perf_counter()
        soup = greedy_soup(alone, soup_accuracy)
        chosen = sorted(soup["chosen"])
        if chosen != sorted(checkpoints):
            model, before, bn_batches = averaged(chosen)
            after = evaluation.score(model) if bn_batches else before
        models.append(after.record("greedy soup"))
        extra["greedy_seconds"] = time.perf_counter() - searching
    if ensemble is not None:
        models.append(ensemble.record("ensemble"))

    saving = time.perf_counter()
    final = save_state_dict(model.state_dict(), out)
    return {
        "combine": spec.phase3.combine,
        "candidates": sorted(checkpoints),
        "averaged_workers": chosen,
        **({"greedy": soup} if soup is not None else {}),
        "test_accuracy_before_bn": before.test.accuracy,
        "val_accuracy_before_bn": before.val.accuracy_if_any,
        "test_accuracy": after.test.accuracy,
        "test_loss": after.test.loss,
        "val_accuracy": after.val.accuracy_if_any,
        "models": models,
        "bn_batches": bn_batches,
        "average_seconds": evaluation.average_seconds,
        "bn_refresh_seconds": evaluation.bn_seconds,
        "evaluation_seconds": evaluation.seconds,
        **extra,
        "combine_seconds": time.perf_counter() - started,
        "model": final.location,
        "sha256": final.sha256,
        "model_bytes": final.size,
        "model_write_seconds": time.perf_counter() - saving,
    }


def model_of(
    spec: Spec,
    splits: Splits,
    state: dict[str, Any],
    device: torch.device,
    precision: Precision,
) -> torch.nn.Module:
    """The spec's model with the weights `state`, on `device` in `precision`'s memory format."""
    model = build_model(spec.model, splits.info)
    model.load_state_dict(state)
    return to_memory_format(model.to(device), precision)


def greedy_soup(
    alone: dict[int, float], soup_accuracy: Callable[[list[int]], float]
) -> dict[str, Any]:
    """The greedy soup's choice: the workers (index -> its own validation accuracy) best first
    (ties: the lower index), each added while `soup_accuracy` of the soup with it (its
    validation accuracy, after its BN refresh) does not drop below the soup's without."""
    order = sorted(alone, key=lambda i: (-alone[i], i))
    chosen: list[int] = []
    best = -1.0
    candidates = []
    for index in order:
        accuracy = soup_accuracy([*chosen, index])
        added = accuracy >= best
        candidates.append(
            {
                "worker": index,
                "val_accuracy": alone[index],
                "soup_val_accuracy": accuracy,
                "added": added,
            }
        )
        if added:
            chosen.append(index)
            best = accuracy
    return {"order": order, "candidates": candidates, "chosen": chosen, "val_accuracy": best}


@dataclass
class Score:
    """One model on one split: evaluate's statistics and the predicted log-probabilities."""

    stats: EpochStats
    log_probabilities: torch.Tensor  # N x classes, float64 on the CPU (a log-softmax)
    targets: torch.Tensor

    @property
    def accuracy(self) -> float:
        return self.stats.accuracy

    @property
    def accuracy_if_any(self) -> float | None:
        return self.stats.accuracy_if_any

    @property
    def loss(self) -> float:
        return self.stats.loss


@dataclass
class Scores:
    """One model on the test set and on the validation split."""

    test: Score
    val: Score

    def record(self, name: str) -> dict[str, Any]:
        """results.json's entry for this model: its quality on each split."""
        return {
            "model": name,
            "test": quality(self.test.log_probabilities, self.test.targets),
            "val": quality(self.val.log_probabilities, self.val.targets),
        }


class Ensemble:
    """The workers' predicted probabilities summed example by example, one worker at a time
    (never all W held), then averaged: the ensemble's scores. Summed as log-probabilities
    (log-sum-exp), so the ensemble's NLL is exact however small a member's probability."""

    def __init__(self) -> None:
        self.log_sums: dict[str, torch.Tensor] = {}
        self.targets: dict[str, torch.Tensor] = {}
        self.members = 0

    def add(self, scores: Scores) -> None:
        self.members += 1
        for split, score in (("test", scores.test), ("val", scores.val)):
            if split in self.log_sums:
                self.log_sums[split] = torch.logaddexp(self.log_sums[split],
                                                       score.log_probabilities)  # fmt: skip
            else:
                self.log_sums[split] = score.log_probabilities.clone()
                self.targets[split] = score.targets

    def record(self, name: str) -> dict[str, Any]:
        """results.json's entry for the ensemble: the averaged probabilities' quality."""
        log_members = math.log(self.members)
        return {
            "model": name,
            **{
                split: quality(self.log_sums[split] - log_members, self.targets[split])
                for split in ("test", "val")
            },
        }


@dataclass
class Evaluation:
    """The held-out sets' loaders, built once, and a model's scores on each."""

    spec: Spec
    splits: Splits
    device: torch.device
    precision: Precision

    seconds: float = 0.0  # spent evaluating so far
    bn_seconds: float = 0.0  # spent refreshing BatchNorm statistics so far
    average_seconds: float = 0.0  # spent averaging weights so far

    def __post_init__(self) -> None:
        bs, feed = self.spec.phase3.batch_size, loader_settings(self.spec)
        self.test_batches = evaluation_feed(self.splits, "test", bs, feed)
        self.val_batches = evaluation_feed(self.splits, "val", bs, feed)

    def score(self, model: torch.nn.Module) -> Scores:
        return Scores(self._on(model, self.test_batches), self._on(model, self.val_batches))

    def val_accuracy(self, model: torch.nn.Module) -> float:
        return self._on(model, self.val_batches).accuracy

    def _on(self, model: torch.nn.Module, batches: Iterable) -> Score:
        started = time.perf_counter()
        stats, logits, targets = predict(
            model, batches, self.device, self.precision, self.splits.batch_transform
        )
        self.seconds += time.perf_counter() - started
        logits = logits.double()
        return Score(stats, torch.log_softmax(logits, dim=1) if len(targets) else logits, targets)


def refresh(
    model: torch.nn.Module, spec: Spec, splits: Splits, device: torch.device, precision: Precision
) -> int:
    """Recompute the BatchNorm statistics on the training examples without augmentation (the
    statistics should match what the model sees at test time); return the batches used.
    `phase3.bn_batches` caps it at that many batches of a fixed (seeded) shuffle; null uses
    every training example once."""
    shuffle = seeds.stream_seed(spec.seed, "phase3", seeds.BN)
    loader = evaluation_feed(splits, "train", spec.phase3.batch_size, loader_settings(spec),
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
