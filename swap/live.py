"""What a running job looks like: a snapshot of its phases and workers, read from what the run
directory records, shown live in a terminal, as plain lines elsewhere, and by `swap status`.

Run: swap status RUN_DIR   (or watch `swap run` in a terminal)

Everything comes from files the run writes anyway or cheaply (swap.progress): results.json
(the phase, the outcome), each process's progress.json and log, each worker's attempts.json,
result.json and failure.json. So `swap status RUN_DIR` shows the same as the live view, from
any machine that reaches the run's storage, while the job runs or after it ended.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from swap import storage
from swap.progress import read_progress
from swap.rundir import FAILURE, RESULT, attempts_record, phase2_dir, read_json
from swap.training import epoch_line

HEARTBEAT_SECONDS = 30  # plain lines: a running worker's line at least this often in an epoch


@dataclass
class Row:
    """One line of the view: a phase or a phase-2 worker."""

    name: str
    state: str  # queued, starting, running, retrying, finished, failed, waiting
    progress: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # the test accuracy, the last error, why it retries


@dataclass
class Snapshot:
    name: str
    run_id: str
    status: str  # running, finished, failed, interrupted
    phase: int | None
    rows: list[Row]


def snapshot(run_dir: str) -> Snapshot:
    """The run's state now, from its files alone."""
    results = read_json(storage.join(run_dir, "results.json"), missing_ok=True) or {}
    spec = results.get("spec", {})
    workers = spec.get("phase2", {}).get("workers", 0)
    rows = [phase_row(run_dir, 1, results), *(worker_row(run_dir, i) for i in range(workers))]
    rows.append(phase_row(run_dir, 3, results))
    return Snapshot(results.get("name", "?"), results.get("run_id", "?"),
                    results.get("status", "?"), results.get("current_phase"), rows)  # fmt: skip


def phase_row(run_dir: str, phase: int, results: dict[str, Any]) -> Row:
    progress = read_progress(storage.join(run_dir, f"phase{phase}")) or {}
    done = results.get(f"phase{phase}")
    if done is not None:
        return Row(f"phase {phase}", "finished", progress, _accuracy(done.get("test_accuracy")))
    if progress:
        return Row(f"phase {phase}", progress.get("state", "running"), progress)
    return Row(f"phase {phase}", "waiting")


def worker_row(run_dir: str, index: int) -> Row:
    """A phase-2 worker: finished (result.json), failed for good (failure.json), queued (no
    attempt yet), or running its n-th attempt (retrying from the second on)."""
    directory = phase2_dir(run_dir, index)
    name = f"worker {index}"
    progress = read_progress(directory) or {}  # a finished one's too: its last epochs' lines
    if (result := read_json(storage.join(directory, RESULT), missing_ok=True)) is not None:
        return Row(name, "finished", progress, _accuracy(result.get("test_accuracy")))
    if (failure := read_json(storage.join(directory, FAILURE), missing_ok=True)) is not None:
        return Row(name, "failed", progress, failure.get("error", ""))
    attempts = attempts_record(directory)
    count = attempts["attempts"]
    if count == 0:
        return Row(name, "queued")
    current = progress if progress.get("attempt") == count else {}
    if count <= 1:
        return Row(name, "running" if current else "starting", current)
    why = attempts.get("last_error") or "its process or node died"
    return Row(name, "retrying", current, f"attempt {count}: after {why}")


def table(shot: Snapshot) -> Group:
    """The snapshot as one table: a row per phase and per phase-2 worker, each with its state
    and, while it trains, where it is (epoch, step, loss, samples/s, time left)."""
    title = f"swap · {shot.name} · run {shot.run_id} · {shot.status}"
    if shot.phase and shot.status == "running":
        title += f" · phase {shot.phase}"
    view = Table(box=None, show_header=False, padding=(0, 3, 0, 0))
    view.add_column(no_wrap=True)
    view.add_column(no_wrap=True)
    view.add_column()  # wraps in a narrow terminal
    for row in shot.rows:
        view.add_row(row.name, _styled(row.state), detail(row))
    return Group(Text(title, style="bold"), view)


def detail(row: Row) -> str:
    """What a row says besides its state."""
    p = row.progress
    if row.name == "phase 3" and p.get("stage") and row.state not in ("finished", "waiting"):
        return f"{p['stage']} {p['done']}/{p['total']}" if p.get("total") else p["stage"]
    where = ""
    if row.state in ("running", "retrying") and p:
        where = "  ".join(_progress_cells(p))
    return "  ·  ".join(part for part in (row.note, where) if part)


def _progress_cells(p: dict[str, Any]) -> list[str]:
    rate, left, loss = p.get("samples_per_second"), p.get("eta_seconds"), p.get("loss")
    cells = [f"epoch {p.get('epoch', 0)}/{p.get('epochs', '?')}",
             f"step {p.get('step', 0)}/{p.get('steps', '?')}"]  # fmt: skip
    if loss is not None:
        cells.append(f"loss {loss:.4f}")
    if rate:
        cells.append(f"{rate:,.0f} samples/s")
    if left is not None:
        cells.append(f"{duration(left)} left")
    return cells


STYLES = {"running": "cyan", "retrying": "yellow", "finished": "green", "failed": "red"}


def _styled(state: str) -> Text:
    return Text(state, style=STYLES.get(state, "dim"))


def duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _accuracy(value: float | None) -> str:
    return f"test acc {value:.2%}" if value is not None else ""


class RunView:
    """The driver's view of its run while it runs: a live table in a terminal (refreshed every
    `every` seconds), elsewhere plain lines in order (each finished epoch of phase 1 and of
    every worker, and a heartbeat of each running worker at least every HEARTBEAT_SECONDS).
    Reads the run directory from a thread of its own; `flush()` prints what is pending before
    the driver prints its own lines."""

    def __init__(self, run_dir: str, console: Console, every: float = 1.0):
        self.run_dir, self.console, self.every = run_dir, console, every
        self.live = console.is_terminal
        self.printed: dict[str, int] = {}  # per phase-1 group or worker: epochs printed
        self.heard: dict[str, float] = {}  # ... when a line about it was last printed
        self.lock, self.stopping = threading.Lock(), threading.Event()
        self.thread: threading.Thread | None = None
        self.display: Live | None = None

    def __enter__(self) -> RunView:
        try:  # a resumed run: what its earlier attempts did is not news
            for row in snapshot(self.run_dir).rows:
                self.printed[row.name] = len(row.progress.get("epochs_done", []))
        except Exception:
            pass
        if self.live:
            self.display = Live(self._render(), console=self.console, auto_refresh=False,
                                transient=True)  # fmt: skip
            self.display.start()
        self.thread = threading.Thread(target=self._watch, name="swap-view", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join()
        self.flush()
        if self.display is not None:
            self.display.stop()

    def _watch(self) -> None:
        while not self.stopping.wait(self.every):
            self.flush()

    def flush(self) -> None:
        """Bring the view up to date now: the live table redrawn, or pending lines printed."""
        with self.lock:
            try:
                shot = snapshot(self.run_dir)
            except Exception:  # a view must never stop a run
                return
            if self.display is not None:
                self.display.update(self._render(shot), refresh=True)
            else:
                self._print_lines(shot)

    def _render(self, shot: Snapshot | None = None) -> Any:
        if shot is None:
            return Group()
        return table(shot)

    def _print_lines(self, shot: Snapshot) -> None:
        now = time.monotonic()
        for row in shot.rows:
            p = row.progress
            who = "phase 1" if row.name == "phase 1" else f"phase 2  {row.name}"
            for record in p.get("epochs_done", [])[self.printed.get(row.name, 0) :]:
                self.console.print(epoch_line(who, record, p.get("epochs", 0)), soft_wrap=True,
                                   highlight=False)  # fmt: skip
                self.heard[row.name] = now
            if p.get("epochs_done") is not None:
                self.printed[row.name] = len(p["epochs_done"])
            running = row.state in ("running", "retrying") and p.get("step")
            if running and now - self.heard.setdefault(row.name, now) >= HEARTBEAT_SECONDS:
                self.console.print(f"{who}  {'  '.join(_progress_cells(p))}", soft_wrap=True,
                                   highlight=False)  # fmt: skip
                self.heard[row.name] = now
