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
import re
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
        # What `swap status` says of it meanwhile: its second attempt, and why.
        retrying = wait_for(lambda: status_line(run, 0, "retrying"), "a retry in swap status",
                            driver)  # fmt: skip
        driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 0, log.read_text()[-3000:]
    assert "attempt 2: after its process or node died" in retrying
    assert "finished" in status_line(run, 0, "finished")
    worker = results(run)["phase2"]["workers"][0]
    assert worker["status"] == "finished"
    assert worker["attempts"] == 2
    assert worker["resumed_from_epoch"] >= epoch  # not started over
    assert [h["epoch"] for h in worker["history"]] == list(range(1, 11))
    assert results(run)["phase3"]["averaged_workers"] == [0, 1]
    plain_lines_in_order(log.read_text(), phase1_epochs=2, epochs=10)


def plain_lines_in_order(text: str, phase1_epochs: int, epochs: int) -> None:
    """The output of a run whose output is a file, not a terminal: no escape codes, none of
    Ray's per-process lines, phase 1's epochs in order before any of phase 2's, each worker's
    epochs in order (a rerun one's continue where it resumed) and its last line that it
    finished, then the table."""
    assert "\x1b" not in text  # no escape codes
    assert not RAY_PREFIX.search(text), RAY_PREFIX.search(text)
    lines = text.splitlines()
    phase1 = rf"phase 1  epoch +(\d+)/{phase1_epochs}"
    first = [int(m[1]) for x in lines if (m := re.match(phase1, x))]
    assert first == list(range(1, phase1_epochs + 1)), text[-3000:]
    mine = {i: [x for x in lines if x.startswith(f"phase 2  worker {i}")] for i in (0, 1)}
    for said in mine.values():
        numbers = [int(m[1]) for x in said if (m := re.search(rf"epoch +(\d+)/{epochs}", x))]
        assert numbers == sorted(numbers) and numbers[-1] == epochs, said
        assert said[-1].startswith(("phase 2  worker 0 finished", "phase 2  worker 1 finished"))
    assert set(re.search(rf"epoch +(\d+)/{epochs}", x)[1] for x in mine[1][:-1]) == {
        str(n) for n in range(1, epochs + 1)
    }  # the worker nobody killed: every epoch once
    last_phase1 = max(n for n, x in enumerate(lines) if x.startswith("phase 1  epoch"))
    assert lines.index(next(x for x in lines if x.startswith("phase 2  worker"))) > last_phase1
    table = next(n for n, x in enumerate(lines) if "SWAP model" in x)
    assert table > max(n for n, x in enumerate(lines) if x.startswith("phase 2  worker"))


RAY_PREFIX = re.compile(r"\((\w+ )?pid=\d+|RayTrainWorker|phase2_task")


def status_line(run: Path, worker: int, state: str) -> str | None:
    """Worker `worker`'s row in `swap status RUN_DIR`, once it is in `state`."""
    out = subprocess.run([str(SWAP), "status", str(run)], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if re.match(rf" *worker {worker} +{state} ", line):
            return " ".join(line.split())
    return None


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


def test_a_killed_phase1_rank_restarts_the_group_from_its_last_checkpoint_exactly(
    local_ray, tmp_path
):
    spec = tiny_spec(tmp_path, phase1={"batch_size": 32, "max_epochs": 8, "max_failures": 1,
                                       "checkpoint_every": 2})  # fmt: skip
    whole = run_phase1(spec, new_run_dir(spec.output.dir, spec.name), shared_data(spec))
    expected = torch.load(Path(whole["checkpoint"]) / MODEL_FILE, weights_only=True)

    run_dir = new_run_dir(spec.output.dir, spec.name)
    outcome: dict = {}
    thread = threading.Thread(
        target=lambda: outcome.update(result=run_phase1(spec, run_dir, shared_data(spec)))
    )
    thread.start()
    deadline = time.monotonic() + 120
    while checkpointed_epochs(run_dir) < 4:  # epoch 4's on disk: epoch 2's taken by Ray Train
        assert thread.is_alive() and time.monotonic() < deadline, "no 4th epoch to kill after"
        time.sleep(0.05)
    pids = phase1_rank_pids()
    assert len(pids) == 2
    os.kill(pids[1], signal.SIGKILL)
    thread.join(timeout=300)
    assert "result" in outcome, "phase 1 did not finish after the restart"
    resumed = outcome["result"]

    # Ray Train counts a checkpoint once its controller has taken the report, which it has
    # done for epoch 2's before epoch 4's could return: the group restarted from epoch 2's or a
    # later one, the last written, not from the epoch it was in.
    assert resumed["resumed_from_epoch"] in (2, 4, 6) and whole["resumed_from_epoch"] == 0
    assert [h["epoch"] for h in resumed["history"]] == list(range(1, 9))
    checkpointed = [h["epoch"] for h in whole["history"] if "checkpoint_seconds" in h]
    assert checkpointed == [2, 4, 6, 8]
    assert all(h["after_training_seconds"] >= 0 for h in whole["history"])
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
