"""Resuming a real run after what goes wrong between runs: a worker that failed is run again, a
finished worker's checkpoint damaged by one byte is trained again from its last good epoch, a
finished intact run is left alone, and a damaged results.json is named in one line.

Run: pytest tests/integration/test_resume.py
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

from ..helpers import SWAP, committed_epoch, results, start_driver, wait_for

# Two workers, both needed, none retried: a killed worker fails the run.
STRICT = [
    "phase1.max_epochs=2",
    "phase2.workers=2",
    "phase2.min_workers=2",
    "phase2.max_retries=0",
    "phase2.epochs=3",
    "phase2.batch_size=4",
]


def resume(tmp_path: Path, run: Path, name: str) -> tuple[int, str]:
    log = tmp_path / f"{name}.log"
    driver = start_driver(log, "--resume", str(run), spec=None)
    driver.wait(timeout=300)
    return driver.returncode, log.read_text()


def swap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SWAP), *args], capture_output=True, text=True, timeout=300)


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_failed_and_damaged_workers_are_run_again_and_nothing_saved_is_lost(tmp_path):
    # 1. Worker 0's process is killed: with no retries it fails, and so does the run.
    log = tmp_path / "first.log"
    driver = start_driver(log, *STRICT, f"output.dir={tmp_path / 'runs'}")
    run, attempts, _ = wait_for(
        lambda: committed_epoch(tmp_path / "runs", 0), "worker 0's first epoch", driver
    )
    os.kill(attempts["pid"], signal.SIGKILL)
    driver.wait(timeout=300)
    assert driver.returncode == 1, log.read_text()[-3000:]
    failed = results(run)["phase2"]["workers"][0]
    assert failed["status"] == "failed" and failed["failure"] == "process"

    # 2. --resume runs it again, from its last epoch; the run finishes.
    code, output = resume(tmp_path, run, "second")
    assert code == 0, output[-3000:]
    assert "phase 2  worker 0 failed in an earlier attempt" in output
    assert "phase 2  worker 1 finished in an earlier attempt: kept" in output
    workers = results(run)["phase2"]["workers"]
    assert [w["status"] for w in workers] == ["finished", "finished"]
    assert workers[0]["attempts"] == 2 and workers[0]["resumed_from_epoch"] >= 1
    assert workers[1]["attempts"] == 1
    final = results(run)["phase3"]

    # 3. One byte of worker 1's model.pt changes: the next --resume names it and trains the
    # worker again from its last resume point (its last epoch: nothing left to train).
    checkpoint = run / "phase2" / "worker-1" / "model.pt"
    flip_a_byte(checkpoint)
    code, output = resume(tmp_path, run, "third")
    assert code == 0, output[-3000:]
    said = " ".join(output.split())  # rich wraps long lines
    assert (
        f"phase 2 worker 1: {checkpoint}: checksum mismatch, the file is truncated or corrupted"
    ) in said and "training it again from its last good resume point" in said
    after = results(run)
    assert after["phase2"]["workers"][1]["attempts"] == 2
    assert after["phase2"]["workers"][1]["resumed_from_epoch"] == 3
    assert after["phase3"]["averaged_workers"] == [0, 1]
    assert after["phase3"]["sha256"] == final["sha256"]  # the same workers, the same average

    # 4. A finished, intact run: --resume says so and changes nothing.
    before = {p: p.read_bytes() for p in (run / "results.json", run / "manifest.json")}
    code, output = resume(tmp_path, run, "fourth")
    assert code == 0, output[-3000:]
    assert "every checkpoint in its manifest matches its SHA-256: nothing to do" in output
    assert {p: p.read_bytes() for p in before} == before

    # 5. A truncated results.json: report, average and --resume each name it, exit 2.
    record = run / "results.json"
    record.write_bytes(record.read_bytes()[:500])
    for args in (["report", str(run)], ["average", str(run)], ["run", "--resume", str(run)]):
        done = swap(*args)
        assert done.returncode == 2, (args, done.stderr[-2000:])
        assert "Traceback" not in done.stderr
        lines = [line for line in done.stderr.splitlines() if line.startswith("swap")]
        assert len(lines) == 1 and re.fullmatch(
            f"swap: error: {re.escape(str(record))}: not valid JSON at line \\d+: the file is "
            "truncated or damaged",
            lines[0],
        ), (args, lines)
