"""Stopping a real `swap run` process with real signals, and resuming it: SIGINT (Ctrl-C, to the
whole process group as a terminal sends it), SIGTERM (to the driver alone, as `kill PID` does)
and SIGKILL (an out-of-memory kill), each in phase 1 after its first checkpoint and in phase 2,
and `swap run --resume RUN_DIR` after each, to the end, with no finished work done again.

Run: pytest tests/integration/test_interrupts.py
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from ..helpers import (
    checkpointed_epochs,
    committed_epoch,
    left_in_session,
    results,
    start_driver,
    wait_for,
)

# Phase-1 epochs of 40 steps and phase-2 epochs of 323: each slow enough (about half a second
# to a second) to be caught in the middle on 2 CPUs. Phase 2 has epochs enough that a worker
# cannot finish in the seconds Ray's workers train on after the driver is killed (below).
SLOW = [
    "phase1.batch_size=32",
    "phase1.max_epochs=6",
    "phase2.workers=2",
    "phase2.epochs=12",
    "phase2.batch_size=4",
]


def interrupt(driver, signum: int) -> None:
    if signum == signal.SIGTERM:
        os.kill(driver.pid, signum)  # `kill PID`: the driver alone
    else:
        os.killpg(driver.pid, signum)  # Ctrl-C in a terminal; SIGKILL: the driver and its Ray


def stopped(driver, log: Path, signum: int, phase: int, run: Path) -> None:
    """The driver stopped by `signum` in `phase`: exit status, its one line, nothing left."""
    try:
        driver.wait(timeout=60)  # promptly: seconds, not the rest of the phase
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    output = log.read_text()
    assert driver.returncode == (-9 if signum == signal.SIGKILL else 128 + signum), output[-3000:]
    assert left_in_session(driver.pid) == []  # the workers and the local Ray stopped too
    recorded = results(run)
    if signum == signal.SIGKILL:  # nothing ran after it: the record says it still runs
        assert recorded["status"] == "running"
        return
    name = signal.Signals(signum).name
    said = [line for line in output.splitlines() if line.startswith("swap: ")]
    assert said == [f"swap: interrupted by {name} in phase {phase}; resume it with: "
                    f"swap run --resume {run}"], output[-3000:]  # fmt: skip
    assert recorded["status"] == "interrupted" and recorded["interrupted_in_phase"] == phase


def phase1_run(tmp_path: Path):
    """A run directory whose phase 1 has persisted at least one checkpoint, and that epoch."""
    runs = list(tmp_path.glob("runs/digits-quickstart/*"))
    if not runs:
        return None
    epochs = checkpointed_epochs(runs[0])
    return (runs[0], epochs) if epochs >= 1 else None


@pytest.mark.parametrize(
    "in_phase1, in_phase2",
    [
        (signal.SIGINT, signal.SIGTERM),
        (signal.SIGTERM, signal.SIGKILL),
        (signal.SIGKILL, signal.SIGINT),
    ],  # fmt: skip
    ids=["INT-then-TERM", "TERM-then-KILL", "KILL-then-INT"],
)
def test_a_run_stopped_in_each_phase_resumes_to_the_end(tmp_path, in_phase1, in_phase2):
    # 1. Stopped in phase 1, after its first checkpoint.
    log = tmp_path / "first.log"
    driver = start_driver(log, *SLOW, f"output.dir={tmp_path / 'runs'}")
    run, epoch = wait_for(lambda: phase1_run(tmp_path), "phase 1's first checkpoint", driver)
    interrupt(driver, in_phase1)
    stopped(driver, log, in_phase1, phase=1, run=run)
    assert "phase1" not in results(run)

    # 2. Resumed (the run's own spec): phase 1 goes on from its checkpoint; stopped in phase 2.
    log = tmp_path / "second.log"
    driver = start_driver(log, "--resume", str(run), spec=None)
    wait_for(lambda: committed_epoch(tmp_path / "runs", 1), "worker 1's first epoch", driver)
    phase1 = results(run)["phase1"]
    assert phase1["resumed_from_epoch"] >= epoch  # not trained again from the start
    assert [h["epoch"] for h in phase1["history"]] == list(range(1, 7))
    weights = Path(phase1["checkpoint"]) / "model.pt"
    written = weights.stat().st_mtime_ns
    interrupt(driver, in_phase2)
    stopped(driver, log, in_phase2, phase=2, run=run)
    # What worker 1 committed once every process had ended, not before the signal: after a
    # SIGKILL its process trains on until it finds its raylet gone (with 6 epochs, 4 tries here:
    # 3 to 5 more epochs committed, twice to the end, the session empty after 3.3 to 4.2 s).
    stopped_at = committed_epoch(tmp_path / "runs", 1)
    assert stopped_at is not None, "worker 1 finished after the signal: give phase 2 more epochs"
    committed = stopped_at[2]

    # 3. Resumed again: to the end.
    log = tmp_path / "third.log"
    driver = start_driver(log, "--resume", str(run), spec=None)
    driver.wait(timeout=300)
    output = log.read_text()
    assert driver.returncode == 0, output[-3000:]
    assert "phase 1 finished in an earlier attempt: kept" in output
    assert weights.stat().st_mtime_ns == written  # phase 1 was not trained again
    final = results(run)
    assert final["status"] == "finished" and final["resumed"] == 2
    assert final["phase1"] == phase1
    worker = final["phase2"]["workers"][1]
    assert worker["resumed_from_epoch"] == committed  # from its last epoch, not the start
    assert [h["epoch"] for h in worker["history"]] == list(range(1, 13))
    assert final["phase3"]["averaged_workers"] == [0, 1]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["final/model.pt"] == final["phase3"]["sha256"] and len(manifest) == 4
