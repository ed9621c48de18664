"""The `swap` command: run, validate, submit and manage job specs.

Run: swap --help
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback

from rich.console import Console

from swap.errors import JobFailed, RunInterrupted, SwapError
from swap.ray_session import metrics_export_port
from swap.spec import Spec, load_spec, parse_spec
from swap.spec.defaults import commented_defaults

EXIT_USER_ERROR = 2
VERBOSE_ENV = "SWAP_VERBOSE"


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
        if getattr(args, "verbose", False) and exc.__cause__ is not None:
            traceback.print_exception(exc.__cause__)  # the user's code's own traceback
        for line in str(exc).splitlines():
            print(f"swap: error: {line}", file=sys.stderr)
        return EXIT_USER_ERROR
    except RunInterrupted as exc:
        where = f" in phase {exc.phase}" if getattr(exc, "phase", None) else ""
        run_dir = getattr(exc, "run_dir", None)
        resume = f"; resume it with: swap run --resume {run_dir}" if run_dir else ""
        print(f"swap: interrupted by {exc.signal_name}{where}{resume}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:  # Ctrl-C before a run opened, or in a command that runs none
        print("swap: interrupted by SIGINT", file=sys.stderr)
        return 128 + signal.SIGINT


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
    _spec_arguments(run, optional=True)
    run.add_argument(
        "--spec-env", metavar="VAR", help="read the spec's YAML from environment variable VAR"
    )
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run that stopped: finished phases and workers are kept (the spec: "
        "the run's own spec.yaml, unless given)",
    )
    run.add_argument(
        "--verbose",
        action="store_true",
        default=os.environ.get(VERBOSE_ENV, "") not in ("", "0"),
        help="the training processes' own output as Ray forwards it (instead of the live view), "
        f"and the whole traceback of an error in your code (also: {VERBOSE_ENV}=1)",
    )
    run.set_defaults(command=run_command)

    validate = commands.add_parser("validate", help="check a job spec without running it")
    _spec_arguments(validate, optional=True)
    validate.add_argument("--show", action="store_true", help="print the resolved spec")
    validate.add_argument(
        "--defaults",
        action="store_true",
        help="print every field with its default and what it means (no spec needed)",
    )
    validate.set_defaults(command=validate_command)

    submit = commands.add_parser(
        "submit",
        help="submit a job spec to a Ray cluster as a Ray job",
        description="Validate the spec here, then submit it with the Ray Jobs API; the resolved "
        "spec travels with the job.",
    )
    _spec_arguments(submit)
    _address_argument(submit)
    submit.add_argument("--wait", action="store_true", help="follow the logs until the job ends")
    submit.add_argument("--name", help="submission id (unique on the cluster; default: Ray's)")
    submit.set_defaults(command=submit_command)

    for name, help_text, command in [
        ("status", "show a run's progress (RUN_DIR) or a submitted job's status", status_command),
        ("logs", "print a submitted job's logs", logs_command),
        ("stop", "stop a submitted job", stop_command),
    ]:
        sub = commands.add_parser(name, help=help_text)
        what = "a run directory (path or URI), or " if name == "status" else ""
        sub.add_argument("job_id", metavar="ID", help=f"{what}the submission id `swap submit` "
                         "printed")  # fmt: skip
        _address_argument(sub)
        sub.set_defaults(command=command)
        if name == "logs":
            sub.add_argument("--follow", action="store_true", help="stream until the job ends")

    listing = commands.add_parser("list", help="list the cluster's jobs")
    _address_argument(listing)
    listing.set_defaults(command=list_command)

    average = commands.add_parser(
        "average",
        help="average checkpoints after the fact (a run's workers, or any files)",
        description="Average checkpoints with equal weights as phase 3 does: refresh BatchNorm "
        "(phase3.bn_refresh), evaluate, save. `swap average RUN_DIR` repeats a run's phase 3 "
        "(its final/model.pt, bit for bit); with --spec, average any checkpoints of that "
        "spec's architecture.",
    )
    average.add_argument(
        "inputs", nargs="+", metavar="RUN_DIR | CHECKPOINT.pt", help="a run directory, or "
        "with --spec the checkpoints (paths or URIs) and any key=value overrides of the spec",
    )  # fmt: skip
    average.add_argument("--spec", metavar="SPEC.yaml", help="the model and data of the files")
    average.add_argument(
        "-o", "--output", metavar="OUT.pt", help="where to save the average "
        "(default for a run: RUN_DIR/average/model.pt; with --spec: required)",
    )  # fmt: skip
    average.set_defaults(command=average_command)

    report = commands.add_parser("report", help="print a run's results and write its plots")
    report.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (it has results.json)")
    report.set_defaults(command=report_command)
    return top


def _spec_arguments(command: argparse.ArgumentParser, optional: bool = False) -> None:
    command.add_argument(
        "spec", metavar="SPEC.yaml", nargs="?" if optional else None, help="job spec file"
    )
    command.add_argument(
        "overrides", nargs="*", metavar="key=value", help="override fields (phase2.workers=8)"
    )


def _address_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--address", help="Ray dashboard address, e.g. http://127.0.0.1:8265 (default: RAY_ADDRESS)"
    )


def run_command(args: argparse.Namespace) -> int:
    spec = _spec_from_args(args)  # every spec error surfaces before Ray starts
    metrics_export_port()  # and a bad SWAP_METRICS_EXPORT_PORT
    from swap.driver import run_job  # Ray and torch: only `swap run` loads them

    try:
        results = run_job(spec, Console(), resume=args.resume, verbose=args.verbose)
    except JobFailed as exc:
        print(f"swap: job failed: {exc}", file=sys.stderr)
        return 1
    return 0 if results["status"] == "finished" else 1


def _spec_from_args(args: argparse.Namespace) -> Spec:
    if not getattr(args, "spec_env", None):
        if args.spec is None and getattr(args, "resume", None):
            from swap.rundir import read_run_spec  # torch: `swap run` loads it anyway

            return read_run_spec(args.resume, "--resume: ")
        if args.spec is None:
            raise SwapError("swap run: give a spec file (or --spec-env VAR, or --resume RUN_DIR)")
        return load_spec(args.spec, args.overrides)
    if args.spec is not None:  # with --spec-env, every positional is an override
        args.overrides.insert(0, args.spec)
    text = os.environ.get(args.spec_env)
    if text is None:
        raise SwapError(f"--spec-env: environment variable {args.spec_env} is not set")
    return parse_spec(text, f"${args.spec_env}", args.overrides)


def validate_command(args: argparse.Namespace) -> int:
    if args.defaults:
        print(commented_defaults(), end="")
        return 0
    if args.spec is None:
        raise SwapError("swap validate: give a spec file (or --defaults)")
    spec = load_spec(args.spec, args.overrides)
    if args.show:
        print(spec.to_yaml(), end="")
    print(f"{args.spec}: valid", file=sys.stderr)
    return 0


def submit_command(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, args.overrides)  # nothing is submitted if the spec is bad
    submit = ray_jobs()
    job_id, dashboard = submit.submit(spec, args.address, args.name)
    print(f"submitted {spec.name} as Ray job {job_id}")
    print(f"dashboard: {dashboard}/#/jobs/{job_id}")
    if not args.wait:
        print(f"follow it: swap logs {job_id} --follow")
        return 0
    return _follow(job_id, args.address)


def _follow(job_id: str, address: str | None) -> int:
    """Stream the job's logs until it ends; exit status 0 if it succeeded, else 1."""
    submit = ray_jobs()
    status = submit.follow(job_id, address)
    print(f"Ray job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def status_command(args: argparse.Namespace) -> int:
    if _looks_like_a_path(args.job_id):  # submission ids have no "/"
        from swap.live import snapshot, table  # the run's own files, as the live view reads

        if not _is_run_dir(args.job_id):
            raise SwapError(f"{args.job_id}: not a run directory (no results.json there)")
        Console().print(table(snapshot(args.job_id)))
        return 0
    submit = ray_jobs()
    info = submit.job_info(args.job_id, args.address)
    print(f"{args.job_id}: {info.status.value}")
    name = (info.metadata or {}).get("swap_name")
    for label, value in [
        ("name", name),
        ("started", _time(info.start_time)),
        ("ended", _time(info.end_time)),
        ("message", info.message),
        ("entrypoint", info.entrypoint),
    ]:
        if value:
            print(f"  {label}: {value}")
    return 0


def _looks_like_a_path(value: str) -> bool:
    return "/" in value or os.path.isdir(value)


def _is_run_dir(value: str) -> bool:
    """A run directory (it has results.json), local or in storage."""
    from swap import storage  # pyarrow: only for a path or URI

    try:
        return storage.exists(storage.join(storage.absolute(value), "results.json"))
    except SwapError:
        return False


def logs_command(args: argparse.Namespace) -> int:
    submit = ray_jobs()
    if args.follow:
        return _follow(args.job_id, args.address)
    print(submit.job_logs(args.job_id, args.address), end="")
    return 0


def stop_command(args: argparse.Namespace) -> int:
    submit = ray_jobs()
    submit.stop(args.job_id, args.address)
    print(f"stop requested for Ray job {args.job_id}")
    return 0


def list_command(args: argparse.Namespace) -> int:
    submit = ray_jobs()
    # Plain columns, not a boxed table: this output gets piped to grep and awk.
    listed = submit.list_jobs(args.address)  # before the header: an error prints alone
    print(f"{'SUBMISSION ID':<30} {'STATUS':<10} {'STARTED':<19}  NAME / ENTRYPOINT")
    for job in listed:
        name = (job.metadata or {}).get("swap_name") or job.entrypoint
        job_id = job.submission_id or job.job_id or "-"
        started = _time(job.start_time) or "-"
        print(f"{job_id:<30} {job.status.value:<10} {started:<19}  {name}")
    return 0


def report_command(args: argparse.Namespace) -> int:
    from swap.report import load_results, print_summary, write_report  # matplotlib

    results = load_results(args.run_dir)
    console = Console()
    print_summary(results, console)
    write_report(results, args.run_dir, console)  # where the run is now, moved or not
    return 0


def average_command(args: argparse.Namespace) -> int:
    from swap import average  # torch

    console = Console()
    if args.spec is None:
        if len(args.inputs) != 1:
            raise SwapError("swap average: one RUN_DIR, or --spec SPEC.yaml and checkpoints")
        result = average.average_run(args.inputs[0], args.output)
        same = "the same as" if result["same_as_final"] else "NOT the same as"
        what, note = "the run's workers", f"; {same} the run's final/model.pt"
    else:
        overrides = [x for x in args.inputs if "=" in x and not x.endswith(".pt")]
        checkpoints = [x for x in args.inputs if x not in overrides]
        if args.output is None:
            raise SwapError("swap average --spec: -o OUT.pt is required")
        spec = load_spec(args.spec, overrides)
        files = dict(enumerate(checkpoints))
        result = average.average_checkpoints(spec, files, args.output)
        what, note = f"{len(checkpoints)} checkpoints", ""
    val = result["val_accuracy"]
    before = result["test_accuracy_before_bn"] if result["bn_batches"] else None
    console.print(
        f"averaged {what}: test acc {result['test_accuracy']:.2%}"
        + (f", val acc {val:.2%}" if val is not None else "")
        + (f" (before the BN refresh {before:.2%})" if before is not None else "")
        + f"; saved {result['model']} (sha256 {result['sha256'][:12]}...){note}",
        soft_wrap=True,
    )
    return 0


def ray_jobs():
    """swap.submit, Ray's Jobs client: imported only by the commands that reach a cluster."""
    from swap import submit

    return submit


def _time(milliseconds: int | None) -> str | None:
    if not milliseconds:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(milliseconds / 1000))
