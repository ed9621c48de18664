"""Ctrl-C and SIGTERM for `swap run`: the first one stops the run where it is, resumable.

Run: imported by swap.driver (`with stop_on_signals(): ...` around the phases)

The first SIGINT or SIGTERM raises RunInterrupted in the main thread, wherever it waits (Ray's
waits check for signals); the driver then cancels what runs, records the run as interrupted and
exits 130 or 143. A second signal while that happens exits at once. Ray Train would install a
SIGINT handler of its own for the whole of phase 1 and never restore ours; swap.phases.phase1
runs the trainer in a thread, where Ray Train installs none.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from swap.errors import RunInterrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)
T = TypeVar("T")


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise RunInterrupted (once); outside it, the
    handlers that were there. Does nothing outside the main thread (Python delivers signals
    to the main thread only; a caller there installed its own)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def again(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        print(f"swap: {name} again: exiting now", file=sys.stderr, flush=True)
        os._exit(128 + signum)

    received: list[int] = []

    def first(signum: int, frame: Any) -> None:
        received.append(signum)
        for each in SIGNALS:
            signal.signal(each, again)
        raise RunInterrupted(signum)

    previous = {each: signal.signal(each, first) for each in SIGNALS}
    try:
        yield
    except KeyboardInterrupt as exc:
        # Ray's waits turn whatever a signal handler raised into a plain KeyboardInterrupt.
        if received and not isinstance(exc, RunInterrupted):
            raise RunInterrupted(received[0]) from None
        raise
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)


def in_thread(function: Callable[[], T], name: str) -> T:
    """`function()` run in a daemon thread while this one waits, interruptibly: its result,
    or its exception re-raised here. A signal's RunInterrupted leaves the thread behind; it
    ends with the process."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as exc:  # handed to the waiting thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join()  # interruptible: a signal handler's exception is raised here
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
