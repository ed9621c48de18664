"""What a user sees of a running job: the live view in a real terminal (tmux, read back with
capture-pane), and `swap status RUN_DIR` of the run it showed.

Run: pytest tests/integration/test_view.py   (needs tmux)

Plain lines in order when the output is a file, and a killed and retried worker as `swap status`
shows it while the run goes on: tests/integration/test_failures.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ..helpers import QUICKSTART, SWAP

# Phase-2 epochs of a second or so, long enough to be seen running.
SLOWER = ["phase1.max_epochs=4", "phase2.epochs=3", "phase2.batch_size=8"]
RAY_PREFIX = re.compile(r"\((\w+ )?pid=\d+|RayTrainWorker|phase2_task")


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def terminal(tmp_path):
    """A tmux server of this test's own (its socket in tmp_path), 130 x 40."""
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed: .ci/run installs it")
    socket = str(tmp_path / "tmux.sock")
    yield lambda *args: tmux("-S", socket, *args)
    subprocess.run(["tmux", "-S", socket, "kill-server"], capture_output=True)


def test_the_live_view_shows_every_worker_and_ends_with_the_table(terminal, tmp_path):
    done = tmp_path / "exit"
    # The terminal's own size, not pytest's COLUMNS (rich reads it first).
    command = (f"env -u COLUMNS -u LINES {SWAP} run {QUICKSTART} {' '.join(SLOWER)} "
               f"output.dir={tmp_path}/runs; echo $? > {done}; sleep 300")  # fmt: skip
    terminal("new-session", "-d", "-s", "swap", "-x", "130", "-y", "40", command)
    seen_running, deadline, screens = set(), time.monotonic() + 300, []
    while not done.exists():
        assert time.monotonic() < deadline, "the run did not end"
        screen = terminal("capture-pane", "-p", "-t", "swap")
        screens.append(screen)
        seen_running |= set(re.findall(r"(worker \d) +running +epoch \d/3 +step \d+/161", screen))
        time.sleep(0.2)
    assert done.read_text().strip() == "0"
    everything = terminal("capture-pane", "-p", "-S", "-", "-t", "swap")  # with the scrollback
    assert seen_running, "\n=====\n".join(x for x in screens if "│ worker" in x)[-5000:]
    final = everything.split("phase 3: average")[-1]
    assert "average of 4 · SWAP model" in final and "total " in final
    for index in range(4):
        assert f"phase 2 · worker {index}" in final
    assert not RAY_PREFIX.search(everything), RAY_PREFIX.search(everything)

    # The run as `swap status` shows it afterwards, from its directory alone.
    [run] = Path(tmp_path, "runs").glob("*/*")
    status = subprocess.run([str(SWAP), "status", str(run)], capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert re.search(r"run \S+ · finished", status.stdout)
    for name in ("phase 1", *(f"worker {i}" for i in range(4)), "phase 3"):
        assert re.search(rf"{name} +finished +test acc \d+\.\d\d%", status.stdout), name
