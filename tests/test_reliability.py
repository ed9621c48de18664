"""Failures that must cost little: divergence, corrupted checkpoints, a worker interrupted and
resumed, without Ray (the worker and coordinator functions) and through run_job on Ray.

Run: pytest tests/test_reliability.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import swap
from swap.checkpoints import MODEL_FILE, load_state_dict, save_state_dict
from swap.errors import DivergenceError, JobFailed
from swap.job import run_job
from swap.phase2 import phase2_worker
from swap.phase3 import phase3_coordinator

from .conftest import tiny_spec


def phase1_weights(spec, directory: Path) -> str:
    torch.manual_seed(0)
    return save_state_dict(swap.build_model(spec).state_dict(), directory / MODEL_FILE).sha256


class Interrupt(Exception):
    pass


class StopAfter:
    """A progress hook that kills the worker right after epoch `epoch` was committed."""

    def __init__(self, epoch: int) -> None:
        self.stop_at = epoch

    def epoch(self, record, steps):
        if record["epoch"] == self.stop_at:
            raise Interrupt

    def checkpoint(self, saved, seconds):
        pass


def test_an_interrupted_worker_resumes_exactly(tmp_path):
    spec = tiny_spec(tmp_path, phase2={"epochs": 3})
    digest = phase1_weights(spec, tmp_path / "p1")
    whole = phase2_worker(spec, 0, tmp_path / "p1", str(tmp_path / "a"), phase1_sha256=digest)

    with pytest.raises(Interrupt):
        phase2_worker(spec, 0, tmp_path / "p1", str(tmp_path / "b"), StopAfter(2), digest)
    resumed = phase2_worker(spec, 0, tmp_path / "p1", str(tmp_path / "b"), phase1_sha256=digest)

    assert resumed["resumed_from_epoch"] == 2 and whole["resumed_from_epoch"] == 0
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    a, b = load_state_dict(whole["checkpoint"]), load_state_dict(resumed["checkpoint"])
    for key in a:
        assert torch.equal(a[key], b[key]), key  # the same model as if never interrupted
    # Only the last committed epoch is kept on disk.
    files = sorted(p.name for p in (tmp_path / "b" / "phase2" / "worker-0").iterdir())
    assert files == ["model.pt", "progress-epoch3.pt", "progress.json"]


def test_a_worker_resumes_exactly_with_random_augmentation_in_loader_processes(tmp_path):
    # The noise is drawn per example in a persistent loader process: its draws must not depend
    # on how many epochs that process has served (a resumed run's processes are new).
    spec = tiny_spec(
        tmp_path,
        data={"dataset": "tests.custom_code:noisy_digits", "loader_workers": 1},
        phase2={"epochs": 3, "batch_size": 128},
    )
    digest = phase1_weights(spec, tmp_path / "p1")
    whole = phase2_worker(spec, 0, tmp_path / "p1", str(tmp_path / "a"), phase1_sha256=digest)
    with pytest.raises(Interrupt):
        phase2_worker(spec, 0, tmp_path / "p1", str(tmp_path / "b"), StopAfter(1), digest)
    resumed = phase2_worker(spec, 0, tmp_path / "p1", str(tmp_path / "b"), phase1_sha256=digest)
    assert resumed["resumed_from_epoch"] == 1
    a, b = load_state_dict(whole["checkpoint"]), load_state_dict(resumed["checkpoint"])
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_corrupted_phase1_checkpoint_is_not_loaded(tmp_path):
    spec = tiny_spec(tmp_path)
    digest = phase1_weights(spec, tmp_path / "p1")
    weights = tmp_path / "p1" / MODEL_FILE
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(swap.SwapError, match=f"{weights}: checksum mismatch"):
        phase2_worker(spec, 0, tmp_path / "p1", str(tmp_path), phase1_sha256=digest)


def test_divergence_in_a_worker_names_worker_epoch_and_step(tmp_path):
    spec = tiny_spec(tmp_path, phase2={"lr": 1e6})
    digest = phase1_weights(spec, tmp_path / "p1")
    with pytest.raises(
        DivergenceError, match=r"phase-2 worker 1: epoch 1, non-finite loss at step \d+$"
    ):
        phase2_worker(spec, 1, tmp_path / "p1", str(tmp_path), phase1_sha256=digest)


def worker_checkpoints(spec, run_dir: Path) -> dict[int, tuple[str, str]]:
    checkpoints = {}
    for index in range(3):
        torch.manual_seed(100 + index)
        saved = save_state_dict(
            swap.build_model(spec).state_dict(), run_dir / f"w{index}" / MODEL_FILE
        )
        checkpoints[index] = (saved.location, saved.sha256)
    return checkpoints


def test_the_coordinator_drops_a_truncated_checkpoint_and_averages_the_rest(tmp_path):
    spec = tiny_spec(tmp_path, phase3={"bn_refresh": False})
    checkpoints = worker_checkpoints(spec, tmp_path)
    bad = Path(checkpoints[1][0])
    bad.write_bytes(bad.read_bytes()[:1000])

    result = phase3_coordinator(spec, checkpoints, str(tmp_path))
    assert result["averaged_workers"] == [0, 2]
    assert result["dropped"][1].startswith(f"{bad}: checksum mismatch")
    final = load_state_dict(result["model"])
    w0, w2 = (load_state_dict(checkpoints[i][0]) for i in (0, 2))
    torch.testing.assert_close(final["0.weight"], (w0["0.weight"] + w2["0.weight"]) / 2)


def test_the_coordinator_fails_below_min_workers(tmp_path):
    spec = tiny_spec(tmp_path, phase2={"min_workers": 3})
    checkpoints = worker_checkpoints(spec, tmp_path)
    Path(checkpoints[2][0]).unlink()
    with pytest.raises(JobFailed, match="2 of 3 workers finished .*; phase2.min_workers is 3"):
        phase3_coordinator(spec, checkpoints, str(tmp_path))
    assert not (tmp_path / "final").exists()


def results_of(tmp_path: Path) -> dict:
    [path] = tmp_path.glob("tiny/*/results.json")
    return json.loads(path.read_text())


def test_phase1_divergence_fails_fast_with_epoch_and_step(local_ray, tmp_path):
    spec = tiny_spec(tmp_path, phase1={"lr": 1e6, "max_epochs": 5})
    with pytest.raises(
        JobFailed, match=r"phase 1 diverged: non-finite training loss at epoch 1, st"
    ):
        run_job(spec)
    results = results_of(tmp_path)
    assert results["status"] == "failed" and "phase 1 diverged" in results["error"]
    assert "phase2" not in results


def test_phase2_divergence_drops_workers_and_fails_below_min(local_ray, tmp_path):
    spec = tiny_spec(tmp_path, phase2={"lr": 1e6, "workers": 2})
    with pytest.raises(JobFailed, match="0 of 2 workers finished"):
        run_job(spec)
    workers = results_of(tmp_path)["phase2"]["workers"]
    assert [w["status"] for w in workers] == ["failed", "failed"]
    for w in workers:
        assert "DivergenceError" in w["error"] and "non-finite loss" in w["error"]
        assert w["attempts"] == 1  # divergence is not retried
