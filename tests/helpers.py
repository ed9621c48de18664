"""What the tests share: tiny specs, phase-1 weights to fork, a hook that interrupts a worker,
and a `swap run` driver in a process of its own to kill.

Run: imported by the tests in tests/unit/ and tests/integration/.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

import swap
from swap.data.registry import load_splits
from swap.phases.placement import share_data
from swap.rundir import MODEL_FILE, save_state_dict
from swap.spec import Spec, spec_from_dict

REPO = Path(__file__).resolve().parent.parent


def tiny_spec(output_dir: Path, **sections) -> Spec:
    """A spec that trains the digits CNN through all three phases in seconds on 2 CPUs."""
    raw = {
        "name": "tiny",
        "seed": 0,
        "phase1": {"workers": 2, "batch_size": 128, "lr": 0.2, "max_epochs": 3},
        "phase2": {"workers": 3, "batch_size": 64, "lr": 0.05, "epochs": 1},
        "resources": {"cpus_per_worker": 0.5},
        "output": {"dir": str(output_dir)},
    }
    for section, fields in sections.items():
        raw[section] = {**raw.get(section, {}), **fields} if isinstance(fields, dict) else fields
    return spec_from_dict(raw)


def shared_data(spec: Spec):
    """The spec's data in Ray's object store, as the driver shares it with the phases."""
    return share_data(load_splits(spec.data))


def phase1_weights(spec: Spec, directory: Path) -> tuple[str, str]:
    """Untrained weights saved where phase 1 would leave them: (their file, their SHA-256)."""
    torch.manual_seed(0)
    saved = save_state_dict(swap.build_model(spec).state_dict(), directory / MODEL_FILE)
    return saved.location, saved.sha256


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


SWAP = Path(sys.executable).parent / "swap"
# Phase-2 epochs of a second or so on 2 CPUs: slow enough to be caught in the middle.
SLOW_PHASE2 = [
    "phase1.max_epochs=2",
    "phase2.workers=2",
    "phase2.epochs=10",
    "phase2.batch_size=4",
    "phase2.max_retries=1",
]


QUICKSTART = str(REPO / "configs" / "quickstart.yaml")


def start_driver(log: Path, *args: str, spec: str | None = QUICKSTART) -> subprocess.Popen:
    """`swap run` on the quickstart (or `spec`; None: `swap run --resume RUN_DIR` alone) in its
    own session (its local Ray is in its process group, so killing the group kills them both);
    output to `log`, never a pipe nobody drains."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with log.open("w") as out:
        return subprocess.Popen(
            [str(SWAP), "run", *([spec] if spec else []), *args],
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
    """(run, attempts.json, epoch) once `worker` has committed an epoch and not finished,
    else None."""
    for run in run_root.glob("digits-quickstart/*"):
        directory = run / "phase2" / f"worker-{worker}"
        try:
            progress = json.loads((directory / "resume.json").read_text())
            attempts = json.loads((directory / "attempts.json").read_text())
        except (OSError, ValueError):
            return None
        if progress["epoch"] >= 1 and not (directory / "result.json").exists():
            return run, attempts, progress["epoch"]
    return None


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def checkpointed_epochs(run_dir: str | Path) -> int:
    """The epochs in the newest phase-1 checkpoint Ray Train has persisted (0 if none yet)."""
    done = 0
    for state in Path(run_dir, "phase1").glob("checkpoint_*/train_state.pt"):
        with contextlib.suppress(Exception):  # still being copied into place
            done = max(done, len(torch.load(state, weights_only=True)["history"]))
    return done


def left_in_session(session: int, seconds: float = 10) -> list[str]:
    """The processes still running in session `session` (a driver started by start_driver
    leads its own) after up to `seconds` for them to end, by command line: what a stopped run
    left behind. Zombies (ended, not yet reaped by a parent that is gone) do not count."""
    deadline = time.monotonic() + seconds
    while True:
        left = []
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError, ValueError):
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
                if state != "Z" and os.getsid(int(entry.name)) == session:
                    left.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        if not left or time.monotonic() > deadline:
            return [command[:120] for command in left]
        time.sleep(0.1)
