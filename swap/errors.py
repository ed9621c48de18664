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
