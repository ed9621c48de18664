"""Real faults: a phase-1 rank SIGKILLed mid-run; against a real driver process, a phase-2
worker SIGKILLed mid-epoch. (The driver itself stopped by signals and resumed:
tests/integration/test_interrupts.py.)

Run: pytest tests/integration/test_failures.py

Also divergence through run_job, and a resume with a different spec refused. The worker and
coordinator functions' own failures are unit tests (tests/unit/test_phase2_worker.py,
test_phase3_coordinator.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch

from swap.driver import run_job
from swap.errors import JobFailed
from swap.phases.phase1 import run_phase1
from swap.rundir import MODEL_FILE, new_run_dir

from ..helpers import (
    REPO,
    SLOW_PHASE2,
    SWAP,
    checkpointed_epochs,
    committed_epoch,
    results,
    shared_data,
    start_driver,
    tiny_spec,
    wait_for,
)


def test_a_killed_phase2_worker_is_rerun_from_its_last_epoch(tmp_path):
    log = tmp_path / "driver.log"
    driver = start_driver(log, *SLOW_PHASE2, f"output.dir={tmp_path}")
    try:
        run, attempts, epoch = wait_for(
            lambda: committed_epoch(tmp_path, 0), "worker 0's first epoch", driver
        )
        os.kill(attempts["pid"], signal.SIGKILL)
        driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 0, log.read_text()[-3000:]
    worker = results(run)["phase2"]["workers"][0]
    assert worker["status"] == "finished"
    assert worker["attempts"] == 2
    assert worker["resumed_from_epoch"] >= epoch  # not started over
    assert [h["epoch"] for h in worker["history"]] == list(range(1, 11))
    assert results(run)["phase3"]["averaged_workers"] == [0, 1]


def test_resume_with_a_different_spec_is_refused(tmp_path):
    run = tmp_path / "tiny" / "r1"
    run.mkdir(parents=True)
    (run / "spec.yaml").write_text((REPO / "configs" / "quickstart.yaml").read_text())
    proc = subprocess.run(
        [str(SWAP), "run", str(REPO / "configs" / "quickstart.yaml"), "phase2.workers=3",
         "--resume", str(run)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"--resume: the spec differs from {run}/spec.yaml at phase2.workers (4 there" in (
        proc.stderr
    )


def phase1_rank_pids() -> list[int]:
    import ray._private.state  # Ray's GCS actor table: no dashboard needed

    return [
        actor["Pid"]
        for actor in ray._private.state.actors().values()
        if "TrainWorker" in actor["ActorClassName"] and actor["State"] == "ALIVE"
    ]


def test_a_killed_phase1_rank_restarts_the_group_from_its_last_epoch_exactly(local_ray, tmp_path):
    spec = tiny_spec(tmp_path, phase1={"batch_size": 32, "max_epochs": 6, "max_failures": 1})
    whole = run_phase1(spec, new_run_dir(spec.output.dir, spec.name), shared_data(spec))
    expected = torch.load(Path(whole["checkpoint"]) / MODEL_FILE, weights_only=True)

    run_dir = new_run_dir(spec.output.dir, spec.name)
    outcome: dict = {}
    thread = threading.Thread(
        target=lambda: outcome.update(result=run_phase1(spec, run_dir, shared_data(spec)))
    )
    thread.start()
    deadline = time.monotonic() + 120
    while checkpointed_epochs(run_dir) < 2:
        assert thread.is_alive() and time.monotonic() < deadline, "no second epoch to kill after"
        time.sleep(0.05)
    pids = phase1_rank_pids()
    assert len(pids) == 2
    os.kill(pids[1], signal.SIGKILL)
    thread.join(timeout=300)
    assert "result" in outcome, "phase 1 did not finish after the restart"
    resumed = outcome["result"]

    # Epoch 2's checkpoint was on disk; Ray Train counts one once its controller has taken the
    # report, which it has done for epoch 1 before epoch 2's report could return.
    assert 1 <= resumed["resumed_from_epoch"] < 6 and whole["resumed_from_epoch"] == 0
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3, 4, 5, 6]
    weights = torch.load(Path(resumed["checkpoint"]) / MODEL_FILE, weights_only=True)
    for key in expected:
        assert torch.equal(weights[key], expected[key]), key  # as if never interrupted
    losses = [(h["train_loss"], h["train_accuracy"]) for h in resumed["history"]]
    assert losses == [(h["train_loss"], h["train_accuracy"]) for h in whole["history"]]


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
        assert w["attempts"] == 1 and w["failure"] == "diverged"  # not retried, nor resumed
