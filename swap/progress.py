"""A training process's progress, as it trains: written to its directory in the run at most once a
second, and read by the driver's live view and by `swap status RUN_DIR`.

Run: python -c "from swap.progress import Progress; help(Progress)"

Each phase-1 group (rank 0), phase-2 worker and the coordinator keeps one `progress.json`
(atomic, small) and one `log.txt` (its own lines: epochs, resumes; what Ray would otherwise
forward with its process prefix), neither fsynced: a crash may leave them stale, never torn.
The cost per training step is one clock read and one addition on the device; the loss is read
back only when a second has passed (bench/progress.py). No Ray here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import torch

from swap import storage

PROGRESS_FILE = "progress.json"
LOG_FILE = "log.txt"
EVERY_SECONDS = 1.0  # at most one write a second a process, whatever the step rate


class Progress:
    """Where one training run of a phase stands: epoch, step, loss since the last report,
    samples per second, time left; its finished epochs' records; its lines.

    `who`: what names it ({"phase": 2, "worker": 3}); `epochs` and `steps` (per epoch) bound
    the run; `batch`: examples per step (the group's, in phase 1)."""

    def __init__(
        self,
        directory: str,
        who: dict[str, Any],
        epochs: int,
        steps: int,
        batch: int,
        attempt: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.location = storage.join(directory, PROGRESS_FILE)
        self.log_location = storage.join(directory, LOG_FILE)
        self.epochs, self.steps, self.batch, self.clock = epochs, steps, batch, clock
        self.state: dict[str, Any] = {**who, "attempt": attempt, "state": "running",
                                      "epochs": epochs, "steps": steps, "epoch": 0, "step": 0,
                                      "epochs_done": [], "started_at": time.time()}  # fmt: skip
        self.lines = earlier_lines(self.log_location)  # an earlier attempt's, continued
        self.last = clock()
        self.steps_since, self.loss_sum = 0, None

    def resumed(self, history: list[dict[str, Any]], line: str | None = None) -> None:
        """Epochs done in earlier attempts (a resumed run): they count toward its progress."""
        self.state["epochs_done"] = [_short(r) for r in history]
        self.state["epoch"] = len(history)
        if line:
            self.say(line)
        self.write()

    def start_epoch(self, epoch: int) -> None:
        self.state.update(epoch=epoch, step=0)
        self.last, self.steps_since, self.loss_sum = self.clock(), 0, None
        self.write()  # running from the first step on, however long the first second takes

    def step(self, step: int, loss: torch.Tensor) -> None:
        """After each optimizer step: cheap, unless a second has passed since the last report."""
        self.steps_since += 1
        detached = loss.detach()
        self.loss_sum = detached if self.loss_sum is None else self.loss_sum + detached
        now = self.clock()
        if now - self.last < EVERY_SECONDS:
            return
        rate = self.steps_since * self.batch / (now - self.last)
        left = (self.epochs - self.state["epoch"]) * self.steps + self.steps - step
        self.state.update(
            step=step,
            loss=float(self.loss_sum) / self.steps_since,  # the one read-back a second
            samples_per_second=rate,
            eta_seconds=left * self.batch / rate if rate else None,
        )
        self.last, self.steps_since, self.loss_sum = now, 0, None
        self.write()

    def end_epoch(self, record: dict[str, Any], line: str) -> None:
        self.state["epochs_done"].append(_short(record))
        self.state.update(step=self.steps, loss=record["train_loss"])
        self.say(line)
        self.write()

    def stage(self, name: str, done: int, total: int) -> None:
        """The coordinator's progress: which stage (averaging, BN refresh, evaluating, SWAG
        draws) and how far."""
        self.state.update(stage=name, done=done, total=total)
        if done == 0 or done == total or self.clock() - self.last >= EVERY_SECONDS:
            self.last = self.clock()
            self.write()

    def finish(self, **outcome: Any) -> None:
        self.state.update(state="finished", **outcome)
        self.write()

    def say(self, line: str) -> None:
        """One line of this run's log: printed (Ray keeps it with the process's logs) and kept
        in the run directory's log.txt."""
        print(line, flush=True)
        self.lines.append(line)
        storage.write_bytes(self.log_location, ("\n".join(self.lines) + "\n").encode(),
                            durable=False)  # fmt: skip

    def write(self) -> None:
        self.state["updated_at"] = time.time()
        storage.write_bytes(self.location, json.dumps(self.state).encode(), durable=False)


def earlier_lines(location: str) -> list[str]:
    try:
        return storage.read_bytes(location).decode().splitlines()
    except Exception:  # none yet (the first attempt), or unreadable: start anew
        return []


def _short(record: dict[str, Any]) -> dict[str, Any]:
    """What a view prints of an epoch record."""
    keys = ("epoch", "train_loss", "train_accuracy", "lr", "seconds", "samples", "ended_at")
    return {k: record[k] for k in keys if k in record}


def read_progress(directory: str) -> dict[str, Any] | None:
    """A process's last progress report in `directory`, or None (none yet, or unreadable)."""
    location = storage.join(directory, PROGRESS_FILE)
    try:
        return json.loads(storage.read_bytes(location))
    except Exception:  # not written yet, or being replaced on a store without renames
        return None
