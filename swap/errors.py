"""Errors a user can cause: a bad spec, a missing file, an unreachable cluster.

The CLI prints them as one line each and exits with status 2; anything else is a bug.
"""

from __future__ import annotations


class SwapError(Exception):
    """A problem the user can fix; the message names the file or field and what to do."""


class SpecError(SwapError):
    """One or more problems in a job spec, each naming the file, the field and the value."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class JobFailed(Exception):
    """The job ran but cannot produce a model: phase 1 diverged, too few phase-2 workers
    finished. `results.json` says the same; the CLI exits with status 1."""


class DivergenceError(Exception):
    """A non-finite training loss: more steps will not bring the weights back."""


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached `swap run`: the run stops where it is, resumable. A
    KeyboardInterrupt, so code that lets Ctrl-C through lets this through too."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(self.signal_name)

    @property
    def signal_name(self) -> str:
        import signal

        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def system_failure(exc: BaseException) -> bool:
    """A failure of Ray itself under the code that ran, not of that code: a task's or an
    actor's process or node died (a node lost mid-epoch took one of Ray Data's tasks, or one of
    the actors Ray Data keeps one of per cluster), an object lost with it. A rerun can fix it."""
    import ray.exceptions

    return isinstance(exc, ray.exceptions.RayError) and not isinstance(
        exc, ray.exceptions.RayTaskError
    )


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:limit]


def ray_failure_in(exc: BaseException) -> BaseException | None:
    """The first of Ray's own failures (`system_failure`) in `exc`'s chain (Ray's task errors'
    `cause`, then `__cause__`), or None. Not only the innermost: an exception Ray could not
    deserialize arrives as Ray's UnserializableException caused by the unpickling error."""
    seen = set()
    while isinstance(exc, BaseException) and id(exc) not in seen:
        if system_failure(exc):
            return exc
        seen.add(id(exc))
        exc = getattr(exc, "cause", None) or exc.__cause__
    return None


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain: Ray's task errors (`cause`), then `__cause__`."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return exc
