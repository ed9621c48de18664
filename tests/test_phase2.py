"""The phase-2 worker function on its own, without Ray: seeds, forking, determinism.

Run: pytest tests/test_phase2.py
"""

from __future__ import annotations

import torch

import swap
from swap.checkpoints import MODEL_FILE, save_state_dict
from swap.phase2 import phase2_worker
from swap.seeds import worker_seed

from .conftest import tiny_spec


def test_worker_is_a_function_of_its_seed(tmp_path):
    spec = tiny_spec(tmp_path, phase2={"epochs": 1, "workers": 2})
    torch.manual_seed(0)
    start = swap.build_model(spec).state_dict()
    save_state_dict(start, tmp_path / "phase1" / MODEL_FILE)

    runs = [phase2_worker(spec, i, tmp_path / "phase1", tmp_path / f"r{n}") for n, i in
            enumerate([0, 0, 1])]  # fmt: skip
    weights = [torch.load(r["checkpoint"], weights_only=True) for r in runs]
    assert [r["seed"] for r in runs] == [worker_seed(0, 0), worker_seed(0, 0), worker_seed(0, 1)]
    assert torch.equal(weights[0]["0.weight"], weights[1]["0.weight"])  # same seed, same model
    assert not torch.equal(weights[0]["0.weight"], weights[2]["0.weight"])
    assert not torch.equal(weights[0]["0.weight"], start["0.weight"])
    # Full batches only: 1,293 training images make 20 batches of 64 (13 dropped each epoch).
    assert runs[0]["history"][0]["samples"] == 20 * 64
