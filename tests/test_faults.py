"""Real faults against a real driver process: a phase-2 worker SIGKILLed mid-epoch, and the
driver itself SIGKILLed during phase 2 and then resumed. Run: pytest tests/test_faults.py
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import REPO

SWAP = Path(sys.executable).parent / "swap"
# Phase-2 epochs of a second or so on 2 CPUs: slow enough to be caught in the middle.
SLOW_PHASE2 = [
    "phase1.max_epochs=2",
    "phase2.workers=2",
    "phase2.epochs=10",
    "phase2.batch_size=4",
    "phase2.max_retries=1",
]


def start_driver(log: Path, *args: str) -> subprocess.Popen:
    """`swap run` on the quickstart in its own session (its local Ray is in its process group,
    so killing the group kills them both); output to `log`, never a pipe nobody drains."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with log.open("w") as out:
        return subprocess.Popen(
            [str(SWAP), "run", str(REPO / "configs" / "quickstart.yaml"), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for(condition, what: str, process: subprocess.Popen, seconds: float = 180):
    """Poll a file-system condition another process will make true (it cannot be awaited)."""
    deadline = time.monotonic() + seconds
    while (value := condition()) is None:
        assert process.poll() is None, f"the driver exited before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def committed_epoch(run_root: Path, worker: int):
    """(attempts.json, epoch) once `worker` has committed an epoch, else None."""
    for run in run_root.glob("digits-quickstart/*"):
        directory = run / "phase2" / f"worker-{worker}"
        try:
            progress = json.loads((directory / "progress.json").read_text())
            attempts = json.loads((directory / "attempts.json").read_text())
        except (OSError, ValueError):
            return None
        if progress["epoch"] >= 1 and not (directory / "result.json").exists():
            return run, attempts, progress["epoch"]
    return None


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


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


def test_a_killed_driver_resumes_without_training_phase1_again(tmp_path):
    overrides = [*SLOW_PHASE2, f"output.dir={tmp_path}"]
    driver = start_driver(tmp_path / "killed.log", *overrides)
    try:
        run, _, _ = wait_for(lambda: committed_epoch(tmp_path, 1), "phase 2 under way", driver)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    before = results(run)
    assert before["status"] == "running" and "phase2" not in before
    phase1_weights = Path(before["phase1"]["checkpoint"]) / "model.pt"
    mtime = phase1_weights.stat().st_mtime_ns

    log = tmp_path / "resumed.log"
    resumed = start_driver(log, *overrides, "--resume", str(run))
    resumed.wait(timeout=300)
    output = log.read_text()
    assert resumed.returncode == 0, output[-3000:]
    assert "phase 1 finished in an earlier attempt: kept" in output
    assert phase1_weights.stat().st_mtime_ns == mtime  # phase 1 was not trained again
    after = results(run)
    assert after["status"] == "finished" and after["resumed"] == 1
    assert after["phase1"] == before["phase1"]
    assert after["phase3"]["averaged_workers"] == [0, 1]
    assert after["total_seconds"] > before["total_seconds"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["final/model.pt"] == after["phase3"]["sha256"]
    assert len(manifest) == 4  # phase 1, two workers, the final model


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
