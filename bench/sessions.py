"""Commands run in sessions of their own under a time limit, ended with every process they
started, and what nvidia-smi saw meanwhile: the machinery of bench/gpu_check.py's steps.

Run: imported by bench/gpu_check.py (standard library only, like it)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


TIMED_OUT = 124


def run_command(
    argv: list[str], sink: Any, seconds: float, env: dict[str, str], facts_at: Path
) -> tuple[int, dict[str, Any]]:
    """One command in a session of its own, its output into `sink`; after it (or at its time
    limit) every process of the session is ended. Returns its exit status and the facts it
    wrote to $GPU_CHECK_FACTS (bench/gpu_verify.py's checks do)."""
    facts_file = facts_at.with_suffix(".facts.json")
    facts_file.unlink(missing_ok=True)
    environment = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    environment.update(env, GPU_CHECK_FACTS=str(facts_file), PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    sink.write(f"$ {' '.join(argv)}\n")
    sink.flush()
    process = subprocess.Popen(
        argv,
        cwd=REPO,
        env=environment,
        stdout=sink,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        rc = process.wait(timeout=max(1.0, seconds))
    except subprocess.TimeoutExpired:
        sink.write(f"\ngpu_check: time limit reached after {seconds:.0f} s; ending the step\n")
        rc = TIMED_OUT
    end_session(process.pid, grace=2 if rc == TIMED_OUT else 10)
    process.wait()
    sink.flush()
    facts = json.loads(facts_file.read_text()) if facts_file.exists() else {}
    facts_file.unlink(missing_ok=True)
    return rc, facts


def end_session(session: int, grace: float) -> None:
    """Wait up to `grace` seconds for the processes of `session` to end (a local Ray shutting
    down), then SIGTERM them, then SIGKILL whatever is left 5 s later."""
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + (grace if sig is None else 5)
        for pid in in_session(session) if sig else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        while in_session(session) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not in_session(session):
            return


def in_session(session: int) -> list[int]:
    """The live processes of `session` (zombies waiting for their parent do not count)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            if state != "Z" and os.getsid(int(entry.name)) == session:
                found.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return found


class GpuSampler:
    """nvidia-smi once a second while a step runs: the most processes on the GPU at once, its
    peak memory and utilization, and the mean utilization (nothing if nvidia-smi is absent)."""

    def __init__(self) -> None:
        self.samples: list[tuple[int, int, int]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        if shutil.which("nvidia-smi"):
            self.thread.start()

    def sample(self) -> None:
        query = ["nvidia-smi", "--format=csv,noheader,nounits"]
        while not self.stopping.wait(1.0):
            try:
                gpu = subprocess.run(
                    [*query, "--query-gpu=utilization.gpu,memory.used"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout
                apps = subprocess.run(
                    [*query, "--query-compute-apps=pid"], capture_output=True, text=True, timeout=5
                ).stdout
                utilization, memory = (int(float(x)) for x in gpu.splitlines()[0].split(","))
                self.samples.append((len(apps.split()), utilization, memory))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                continue

    def stop(self) -> dict[str, Any]:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=10)
        if not self.samples:
            return {}
        processes, utilization, memory = zip(*self.samples, strict=True)
        return {
            "samples": len(self.samples),
            "max_processes": max(processes),
            "max_utilization_pct": max(utilization),
            "mean_utilization_pct": round(sum(utilization) / len(utilization), 1),
            "max_memory_mib": max(memory),
        }
