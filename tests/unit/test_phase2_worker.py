"""The phase-2 worker function on its own, without Ray: a function of its index and the phase-1
weights, resumable exactly, and refusing weights it cannot trust.

Run: pytest tests/unit/test_phase2_worker.py
"""

from __future__ import annotations

import json
import re

import pytest
import torch

import swap
from swap.data.registry import load_splits
from swap.errors import DivergenceError
from swap.phases.phase2_worker import phase2_worker
from swap.rundir import load_state_dict
from swap.seeds import worker_seed

from ..helpers import Interrupt, StopAfter, phase1_weights, tiny_spec


def test_worker_is_a_function_of_its_seed(tmp_path):
    spec = tiny_spec(tmp_path, phase2={"epochs": 1, "workers": 2})
    weights, _ = phase1_weights(spec, tmp_path / "phase1")
    splits = load_splits(spec.data)
    start = load_state_dict(weights)
    runs = [phase2_worker(spec, i, splits, weights, str(tmp_path / f"r{n}")) for n, i in
            enumerate([0, 0, 1])]  # fmt: skip
    trained = [load_state_dict(r["checkpoint"]) for r in runs]
    assert [r["seed"] for r in runs] == [worker_seed(0, 0), worker_seed(0, 0), worker_seed(0, 1)]
    assert torch.equal(trained[0]["0.weight"], trained[1]["0.weight"])  # same index, same model
    assert not torch.equal(trained[0]["0.weight"], trained[2]["0.weight"])
    assert not torch.equal(trained[0]["0.weight"], start["0.weight"])
    # Full batches only: 1,293 training images make 20 batches of 64 (13 dropped each epoch).
    assert runs[0]["history"][0]["samples"] == 20 * 64


def whole_and_resumed(spec, tmp_path) -> tuple[dict, dict]:
    """Worker 0 run through (in tmp_path/a), and killed after epoch 2 then rerun (in b)."""
    weights, digest = phase1_weights(spec, tmp_path / "p1")
    splits = load_splits(spec.data)
    whole = phase2_worker(spec, 0, splits, weights, str(tmp_path / "a"), phase1_sha256=digest)
    with pytest.raises(Interrupt):
        phase2_worker(spec, 0, splits, weights, str(tmp_path / "b"), StopAfter(2), digest)
    resumed = phase2_worker(spec, 0, splits, weights, str(tmp_path / "b"), phase1_sha256=digest)
    return whole, resumed


def test_an_interrupted_worker_resumes_exactly(tmp_path):
    whole, resumed = whole_and_resumed(tiny_spec(tmp_path, phase2={"epochs": 3}), tmp_path)

    assert resumed["resumed_from_epoch"] == 2 and whole["resumed_from_epoch"] == 0
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    a, b = load_state_dict(whole["checkpoint"]), load_state_dict(resumed["checkpoint"])
    for key in a:
        assert torch.equal(a[key], b[key]), key  # the same model as if never interrupted
    # The last two committed epochs are kept on disk: the one before is the fallback.
    files = sorted(p.name for p in (tmp_path / "b" / "phase2" / "worker-0").iterdir())
    assert files == ["log.txt", "model.pt", "progress.json", "resume-epoch2.pt",
                     "resume-epoch3.pt", "resume.json"]  # fmt: skip
    log = (tmp_path / "b" / "phase2" / "worker-0" / "log.txt").read_text().splitlines()
    assert [line.split("  loss")[0] for line in log] == [
        "phase 2  worker 0  epoch   1/3", "phase 2  worker 0  epoch   2/3",
        "phase 2  worker 0  resuming after epoch 2", "phase 2  worker 0  epoch   3/3",
    ]  # fmt: skip


def flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damaged", [["resume-epoch2.pt"], ["resume-epoch2.pt", "resume-epoch1.pt"]]
)
def test_a_damaged_resume_point_falls_back_to_the_one_before_or_to_phase1(tmp_path, damaged):
    """Killed after epoch 2, its newest resume point (or both kept) then damaged by one byte:
    the rerun resumes after epoch 1 (or starts from the phase-1 weights), says so in
    attempts.json, and ends with the same weights as a run never interrupted."""
    spec = tiny_spec(tmp_path, phase2={"epochs": 3})
    weights, digest = phase1_weights(spec, tmp_path / "p1")
    splits = load_splits(spec.data)
    whole = phase2_worker(spec, 0, splits, weights, str(tmp_path / "a"), phase1_sha256=digest)
    directory = tmp_path / "b" / "phase2" / "worker-0"
    with pytest.raises(Interrupt):
        phase2_worker(spec, 0, splits, weights, str(tmp_path / "b"), StopAfter(2), digest)
    for name in damaged:
        flip_a_byte(directory / name)
    (directory / "attempts.json").write_text('{"attempts": 1, "nodes": ["n"]}')
    resumed = phase2_worker(spec, 0, splits, weights, str(tmp_path / "b"), phase1_sha256=digest)

    after = 1 if len(damaged) == 1 else 0
    assert resumed["resumed_from_epoch"] == after
    assert [f.split(":")[0] for f in resumed["resume_fallbacks"]] == [
        str(directory / name) for name in damaged
    ]
    assert all("checksum mismatch" in f for f in resumed["resume_fallbacks"])
    [fallback] = json.loads((directory / "attempts.json").read_text())["fallbacks"]
    assert fallback["resumed_after"] == after and len(fallback["skipped"]) == len(damaged)
    a, b = load_state_dict(whole["checkpoint"]), load_state_dict(resumed["checkpoint"])
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_a_damaged_pointer_file_starts_from_the_phase1_weights(tmp_path):
    spec = tiny_spec(tmp_path, phase2={"epochs": 2})
    weights, digest = phase1_weights(spec, tmp_path / "p1")
    splits = load_splits(spec.data)
    with pytest.raises(Interrupt):
        phase2_worker(spec, 0, splits, weights, str(tmp_path), StopAfter(1), digest)
    pointer = tmp_path / "phase2" / "worker-0" / "resume.json"
    pointer.write_text(pointer.read_text()[:20])  # truncated
    resumed = phase2_worker(spec, 0, splits, weights, str(tmp_path), phase1_sha256=digest)
    assert resumed["resumed_from_epoch"] == 0
    [skipped] = resumed["resume_fallbacks"]
    assert re.fullmatch(f"{pointer}: not valid JSON at line \\d+: the file is truncated or damaged",
                        skipped)  # fmt: skip


def test_a_corrupted_phase1_checkpoint_is_not_loaded(tmp_path):
    spec = tiny_spec(tmp_path)
    weights, digest = phase1_weights(spec, tmp_path / "p1")
    splits = load_splits(spec.data)
    with open(weights, "r+b") as file:
        file.truncate(len(file.read()) - 100)
    with pytest.raises(swap.SwapError, match=f"{weights}: checksum mismatch"):
        phase2_worker(spec, 0, splits, weights, str(tmp_path), phase1_sha256=digest)


def test_divergence_in_a_worker_names_worker_epoch_and_step(tmp_path):
    spec = tiny_spec(tmp_path, phase2={"lr": 1e6})
    weights, digest = phase1_weights(spec, tmp_path / "p1")
    splits = load_splits(spec.data)
    with pytest.raises(
        DivergenceError, match=r"phase-2 worker 1: epoch 1, non-finite loss at step \d+$"
    ):
        phase2_worker(spec, 1, splits, weights, str(tmp_path), phase1_sha256=digest)


@pytest.mark.parametrize("every", [None, 7])
def test_swag_statistics_resume_exactly_and_sit_beside_the_weights(tmp_path, every):
    """Snapshots once per epoch, or every 7 steps (20 a epoch: across epoch ends), collected
    from the worker's own weights and the same whether or not it was interrupted."""
    spec = tiny_spec(tmp_path, phase2={"epochs": 3, "swag_rank": 2, "swag_every": every})
    whole, resumed = whole_and_resumed(spec, tmp_path)

    snapshots = 3 if every is None else 3 * 20 // 7
    assert whole["swag_snapshots"] == resumed["swag_snapshots"] == snapshots
    a, b = load_state_dict(whole["swag"], whole["swag_sha256"]), load_state_dict(resumed["swag"])
    for key in a:
        assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key
    assert a["deviations"].shape == (2, a["mean"].numel())
    if every is None:  # the last snapshot is the final weights: its deviation is final - mean
        final = swap.build_model(spec)
        final.load_state_dict(load_state_dict(whole["checkpoint"]))
        flat = torch.nn.utils.parameters_to_vector(final.parameters()).detach()
        torch.testing.assert_close(a["deviations"][-1], flat - a["mean"])
    assert (tmp_path / "b" / "phase2" / "worker-0" / "swag.pt").exists()
