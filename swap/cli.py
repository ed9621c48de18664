"""The `swap` command: run and validate job specs.

Run: swap --help
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from swap.cluster import apply_ray_defaults
from swap.errors import SwapError
from swap.spec import load_spec

EXIT_USER_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    top = parser()
    # Overrides may come before or after options (`validate s.yaml --show a=1`); argparse
    # alone stops collecting positionals at the first option.
    args, extra = top.parse_known_args(argv)
    if extra and (not hasattr(args, "overrides") or any(x.startswith("-") for x in extra)):
        top.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides += extra
    try:
        return args.command(args)
    except SwapError as exc:
        for line in str(exc).splitlines():
            print(f"swap: error: {line}", file=sys.stderr)
        return EXIT_USER_ERROR


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="swap", description="SWAP (Stochastic Weight Averaging in Parallel) on Ray."
    )
    commands = top.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run a job spec on Ray (local, or the cluster in RAY_ADDRESS)",
        description="Run the three SWAP phases of a job spec. Ray: the cluster in RAY_ADDRESS, "
        "else a local one started for this job.",
    )
    _spec_arguments(run)
    run.set_defaults(command=run_command)

    validate = commands.add_parser("validate", help="check a job spec without running it")
    _spec_arguments(validate)
    validate.add_argument("--show", action="store_true", help="print the resolved spec")
    validate.set_defaults(command=validate_command)
    return top


def _spec_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("spec", metavar="SPEC.yaml", help="job spec file")
    command.add_argument(
        "overrides", nargs="*", metavar="key=value", help="override fields (phase2.workers=8)"
    )


def run_command(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, args.overrides)  # every spec error surfaces before Ray starts
    apply_ray_defaults()
    from swap.job import run_job  # imports Ray and torch: keep `swap validate` fast

    results = run_job(spec, Console())
    return 0 if results["status"] == "finished" else 1


def validate_command(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, args.overrides)
    if args.show:
        print(spec.to_yaml(), end="")
    print(f"{args.spec}: valid", file=sys.stderr)
    return 0
