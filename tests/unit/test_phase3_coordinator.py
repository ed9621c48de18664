"""The coordinator function on its own, without Ray: it drops what it cannot trust.

Run: pytest tests/unit/test_phase3_coordinator.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import swap
from swap.data.registry import load_splits
from swap.errors import JobFailed
from swap.phases.phase3_coordinator import phase3_coordinator
from swap.rundir import MODEL_FILE, load_state_dict, save_state_dict

from ..helpers import tiny_spec


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

    result = phase3_coordinator(spec, load_splits(spec.data), checkpoints, str(tmp_path))
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
        phase3_coordinator(spec, load_splits(spec.data), checkpoints, str(tmp_path))
    assert not (tmp_path / "final").exists()
