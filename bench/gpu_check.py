"""The GPU check in one command: install the bundle, then each step under its own time limit,
with a log and a JSON summary per step written as soon as it ends, a PASS/FAIL line and a total.

Run: bash bench/gpu_check.sh OUT_DIR [--steps a,b] [--skip a,b]   (on the GPU host)
     bash bench/gpu_check.sh --cpu OUT_DIR   (the same steps on this machine; docs/development.md)

Standard library only: it runs under the host's python3, which has no Ray and no swap yet. Each
step runs in a session of its own; when it ends or runs out of time, whatever it left running
(a local Ray, a driver) is ended with it, so the next step starts on an idle GPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sessions import TIMED_OUT, GpuSampler, run_command

REPO = Path(__file__).resolve().parent.parent
VERIFY = str(REPO / "bench" / "gpu_verify.py")
BUNDLE = str(REPO / "bench" / "gpu_bundle.py")  # its `install` and `host-like` commands
RECIPE = "configs/fashion_mnist_cnn_gpu.yaml"
HOST_ONLY = "torch,torchvision,matplotlib,sklearn,scipy"  # absent from the 3.12 rehearsal


@dataclass
class Context:
    args: argparse.Namespace
    gpu: bool
    python: str  # the environment's interpreter, once `install` built it
    swap: str
    started: float = field(default_factory=time.monotonic)
    began: float = field(default_factory=time.time)  # wall clock: what files it wrote are newer
    records: list[dict[str, Any]] = field(default_factory=list)

    def left(self) -> float:
        budget = self.args.budget
        return budget - (time.monotonic() - self.started) if budget else float("inf")


@dataclass
class Step:
    name: str
    what: str
    limits: tuple[int, int]  # seconds on the GPU host, on the CPU rehearsal
    commands: Callable[[Context, float], list[list[str]]]  # given the step's time limit
    env: dict[str, str] = field(default_factory=dict)
    junit: bool = False
    collect: Callable[[Context], dict[str, Any]] | None = None  # facts from its files, after it
    least: int = 20  # seconds: not started with less of the budget left


def main() -> None:
    args = arguments()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work
    ctx = Context(args, not args.cpu, str(work / "venv/bin/python"), str(work / "venv/bin/swap"))
    mode = "CPU rehearsal" if args.cpu else "GPU"
    print(
        f"gpu_check ({mode}): {len(selected(args))} steps, logs and JSON in {args.out}"
        + (f", budget {args.budget} s" if args.budget else ""),
        flush=True,
    )
    for step in selected(args):
        record = run_step(ctx, step)
        if step.name == "install" and blocking(record) and not args.keep_going:
            print("gpu_check: the environment cannot run the steps; stopping (--keep-going "
                  "runs them anyway)")  # fmt: skip
            break
    failed = [r for r in ctx.records if r["status"] in ("FAIL", "TIMEOUT")]
    counts = {s: sum(r["status"] == s for r in ctx.records) for s in STATUSES}
    total = time.monotonic() - ctx.started
    print(
        f"gpu_check: {', '.join(f'{n} {s}' for s, n in counts.items() if n)} in {total:.1f} s"
        f" ({'FAILED' if failed else 'passed'})"
    )
    write_summary(ctx, done=True)
    sys.exit(1 if failed or not ctx.records else 0)


STATUSES = ("PASS", "SKIP", "FAIL", "TIMEOUT", "NOT RUN")


def blocking(install: dict[str, Any]) -> bool:
    """Whether the install step failed in a way no other step can survive: no environment, or
    a module the steps import missing (Ray Jobs or the dashboard missing is reported, and
    the steps go on: `swap run` starts Ray without them)."""
    if install["status"] == "PASS":
        return False
    commands = install["commands"]
    if not commands or commands[0]["rc"] != 0:
        return True
    imports = commands[1]["facts"] if len(commands) > 1 else {}
    return not imports or bool(imports.get("blocking"))


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where each step's log and JSON go")
    parser.add_argument("--cpu", action="store_true", help="rehearse the steps on this machine")
    parser.add_argument("--steps", default="", help=f"only these (and install): {','.join(NAMES)}")
    parser.add_argument("--skip", default="", help="all but these")
    parser.add_argument(
        "--budget",
        type=int,
        default=None,
        help="seconds for the whole check (GPU default 540, CPU none)",
    )
    parser.add_argument("--bundle", type=Path, default=REPO / "gpu-bundle")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/swap-gpu-check"),
        help="the environment and the runs (not copied back)",
    )
    parser.add_argument(
        "--python",
        default=None,
        help="the host's interpreter (default: this one; --cpu: .venv/bin/python)",
    )
    parser.add_argument(
        "--rehearse-python",
        default=None,
        help="--cpu: a Python 3.12 to rehearse the bundle's own packages with",
    )
    parser.add_argument("--keep-going", action="store_true", help="go on after a failed install")
    args = parser.parse_args()
    args.out, args.work = args.out.resolve(), args.work.resolve()
    args.bundle = args.bundle.resolve()
    if args.budget is None:
        args.budget = 0 if args.cpu else 540
    if args.python is None:
        args.python = str(REPO / ".venv/bin/python") if args.cpu else sys.executable
    unknown = {*filter(None, f"{args.steps},{args.skip}".split(","))} - set(NAMES)
    if unknown:
        parser.error(f"unknown steps {', '.join(sorted(unknown))} (steps: {', '.join(NAMES)})")
    return args


def selected(args: argparse.Namespace) -> list[Step]:
    """The steps asked for, `install` always first: every other step runs in what it builds."""
    only = [s for s in args.steps.split(",") if s]
    skip = {s for s in args.skip.split(",") if s}
    return [
        s
        for s in STEPS
        if s.name == "install" or (s.name in only or not only) and s.name not in skip
    ]


# The steps --------------------------------------------------------------------------------


def install(ctx: Context, limit: float) -> list[list[str]]:
    """The environment from the bundle and the repository, then the checks that it imports
    everything, that its Ray runs, and that the workload's data reads. The rehearsal also builds
    a Python 3.12 environment from the bundle's own packages (the host's binaries)."""
    args, here = ctx.args, sys.executable
    bundle = ["--bundle", str(args.bundle)]
    commands = [
        [here, BUNDLE, "install", *bundle, "--work", str(args.work), "--python", args.python,
         *(["--no-site"] if args.cpu else [])],
        [ctx.python, VERIFY, "imports"],
        [ctx.python, VERIFY, "data", RECIPE, str(args.bundle / "fashion-mnist")],
    ]  # fmt: skip
    if not args.cpu:
        return [*commands, [ctx.python, VERIFY, "ray"]]
    base = args.rehearse_python or find_python312()
    if base is None:
        print("install: no Python 3.12 here: the bundle's own packages are not rehearsed")
        return commands
    host = str(REPO / ".gpu-bundle-build" / "host312" / "bin" / "python")
    py312 = str(args.work / "py312/venv/bin/python")
    return [
        *commands,
        [here, BUNDLE, "host-like", base],
        [here, BUNDLE, "install", *bundle, "--work", str(args.work / "py312"), "--python", host],
        [py312, VERIFY, "imports", "--absent-ok", HOST_ONLY],
        [py312, VERIFY, "ray"],
    ]


def quickstart(ctx: Context, limit: float) -> list[list[str]]:
    """The quickstart as a user runs it, on one GPU: one NCCL rank, then 4 workers at 0.25 GPU
    each, all at once (on the rehearsal, 0.5 CPU each)."""
    where = [f"output.dir={ctx.args.work / 'runs'}", "name=gpu-quickstart"]
    device = (
        ["resources.use_gpu=true", "resources.gpus_per_worker=0.25", "resources.cpus_per_worker=1"]
        if ctx.gpu
        else ["resources.use_gpu=false", "resources.cpus_per_worker=0.5"]
    )
    runs = ctx.args.work / "runs" / "gpu-quickstart"
    gpu = ["--gpu"] if ctx.gpu else []
    return [
        [ctx.swap, "run", "configs/quickstart.yaml", *where, "phase1.workers=1",
         "phase2.workers=4", *device],
        [ctx.python, VERIFY, "quickstart", str(runs), "--workers", "4", *gpu],
    ]  # fmt: skip


def average(ctx: Context, limit: float) -> list[list[str]]:
    """`swap average` of the quickstart's run, on the GPU: the run's final model again."""
    found = sorted(
        (ctx.args.work / "runs" / "gpu-quickstart").glob("*/results.json"),
        key=lambda p: p.stat().st_mtime,
    )
    if not found or found[-1].stat().st_mtime < ctx.began:
        raise StepError("no quickstart run of this check to average (its step failed or was "
                        "not asked for)")  # fmt: skip
    run = str(found[-1].parent)
    return [[ctx.swap, "average", run], [ctx.python, VERIFY, "average", run]]


def pytest(name: str, selection: str) -> Callable[[Context, float], list[list[str]]]:
    """tests/integration/test_gpu.py's tests that `selection` (pytest -k) picks."""

    def commands(ctx: Context, limit: float) -> list[list[str]]:
        junit = f"--junitxml={ctx.args.out / f'{name}.junit.xml'}"
        test = ["-m", "pytest", "-m", "gpu", "tests/integration/test_gpu.py", "-rs",
                "-p", "no:cacheprovider"]  # fmt: skip
        return [[ctx.python, *test, "-k", selection, junit]]

    return commands


def time_to_accuracy(ctx: Context, limit: float) -> list[list[str]]:
    """SWAP's trade on one device (bench/time_to_accuracy.py): small- and large-batch SGD in
    plain PyTorch and SWAP with 4 and 8 workers sharing it, seeds interleaved, within the
    step's limit (the bench starts no seed it cannot finish by --deadline)."""
    bench = [ctx.python, "bench/time_to_accuracy.py", "--config", RECIPE]
    out = ["--out", str(ctx.args.out / "tta"), "--deadline", str(int(limit - 30))]
    if ctx.gpu:
        data = f"data.root={ctx.args.bundle / 'fashion-mnist'}"
        return [[*bench, "--device", "cuda", "--set", data, *out]]
    # The same arms on the CPU, on the digits (Fashion-MNIST's small CNN takes minutes an
    # epoch on 2 cores): what runs is rehearsed, not what it measures.
    small = ["data.dataset=digits", "data.root=null", "phase1.batch_size=256",
             "phase2.batch_size=32"]  # fmt: skip
    budgets = ["--small-epochs", "3", "--large-epochs", "3,6", "--swap-epochs", "3+1",
               "--swap-workers", "4,8", "--seeds", "3", "--no-references"]  # fmt: skip
    return [[*bench, "--device", "cpu", "--set", *small, *budgets, *out]]


def throughput(ctx: Context, limit: float) -> list[list[str]]:
    """Images/s of each phase against plain PyTorch on the same device (gpu_throughput.py)."""
    bench = [ctx.python, "bench/gpu_throughput.py", "--out", str(ctx.args.out / "throughput")]
    if ctx.gpu:
        return [bench]
    return [[*bench, "--device", "cpu", "--epochs", "2", "--examples", "1000"]]


STEPS = [
    Step("install", "the bundle installed; imports, Ray, data", (90, 600), install),
    Step("quickstart", "swap run on 1 GPU: 1 NCCL rank, 4 workers x 0.25 GPU", (120, 300),
         quickstart, env={"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT"},
         collect=lambda ctx: quickstart_files(ctx)),
    Step("average", "swap average of that run, against its final model", (60, 180), average),
    Step("gpu-tests", "pytest -m gpu: float32 end to end, averaging, checkpoints", (150, 300),
         pytest("gpu-tests", "not bf16 and not fp16 and not killed"), junit=True),
    Step("precision", "pytest -m gpu: bf16 + channels_last, fp16 with loss scaling",
         (120, 300), pytest("precision", "bf16 or fp16"), junit=True),
    Step("killed-worker", "pytest -m gpu: a phase-2 worker SIGKILLed on the GPU, rerun",
         (120, 300), pytest("killed-worker", "killed"), junit=True),
    Step("tta", "time to accuracy: SGD small/large vs SWAP W=4, 8", (270, 900), time_to_accuracy,
         least=120,
         collect=lambda ctx: bench_facts(ctx, "tta/time_to_accuracy.json", "summary")),
    Step("throughput", "images/s per phase vs plain PyTorch", (120, 600), throughput, least=60,
         collect=lambda ctx: bench_facts(ctx, "throughput/gpu_throughput.json", "summary")),
]  # fmt: skip
NAMES = [s.name for s in STEPS]


class StepError(Exception):
    """A step that cannot start (what it needs is missing): FAIL, with this message."""


# Running a step ---------------------------------------------------------------------------


def run_step(ctx: Context, step: Step) -> dict[str, Any]:
    """Run `step`'s commands in order until one fails or time runs out; record and print it."""
    limit = min(step.limits[1 if ctx.args.cpu else 0], ctx.left() - 5)
    record = {"step": step.name, "what": step.what, "limit_s": round(limit), "commands": []}
    log = ctx.args.out / f"{step.name}.log"
    started = time.monotonic()
    if limit < step.least:
        return finish(ctx, record, "NOT RUN", started, f"{limit:.0f} s of --budget left")
    try:
        commands = step.commands(ctx, limit)
    except StepError as exc:
        log.write_text(f"{exc}\n")
        return finish(ctx, record, "FAIL", started, str(exc))
    sampler = GpuSampler() if ctx.gpu else None
    status, facts = "PASS", {}
    with log.open("w") as sink:
        for argv in commands:
            left = limit - (time.monotonic() - started)
            rc, facts_of_it = run_command(argv, sink, left, step.env, ctx.args.out / step.name)
            record["commands"].append({"argv": argv, "rc": rc, "facts": facts_of_it})
            facts.update(facts_of_it)
            if rc != 0:
                status = "TIMEOUT" if rc == TIMED_OUT else "FAIL"
                break
    if sampler:
        facts["gpu"] = sampler.stop()
    if step.collect:
        facts.update(step.collect(ctx))
    record["facts"] = facts
    if step.junit:
        status = pytest_status(ctx.args.out / f"{step.name}.junit.xml", record, status)
    return finish(ctx, record, status, started, detail(step.name, status, facts, record))


def finish(
    ctx: Context, record: dict[str, Any], status: str, started: float, note: str
) -> dict[str, Any]:
    """Record the step in its JSON and the summary at once, and print its line."""
    record.update(status=status, seconds=round(time.monotonic() - started, 1), note=note)
    ctx.records.append(record)
    (ctx.args.out / f"{record['step']}.json").write_text(json.dumps(record, indent=1) + "\n")
    write_summary(ctx, done=False)
    print(f"{status:<8}{record['step']:<15}{record['seconds']:7.1f} s  {note}", flush=True)
    return record


def write_summary(ctx: Context, done: bool) -> None:
    summary = {
        "mode": "cpu" if ctx.args.cpu else "gpu",
        "command": " ".join(sys.argv),
        "budget_s": ctx.args.budget,
        "done": done,
        "total_seconds": round(time.monotonic() - ctx.started, 1),
        "steps": [{k: r[k] for k in ("step", "status", "seconds", "note")} for r in ctx.records],
    }
    (ctx.args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


def pytest_status(junit: Path, record: dict[str, Any], status: str) -> str:
    """The step's status from pytest's report: SKIP when every test was skipped (no CUDA)."""
    if not junit.exists():
        return status
    suite = ElementTree.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [
        case.get("name")
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    record["facts"]["pytest"] = {**counts, "failed": failed}
    if status == "PASS" and counts["tests"] and counts["skipped"] == counts["tests"]:
        return "SKIP"
    return status


def detail(name: str, status: str, facts: dict[str, Any], record: dict[str, Any]) -> str:
    """The one-line note beside a step's status."""
    if "pytest" in facts:
        p = facts["pytest"]
        passed = p["tests"] - p["failures"] - p["errors"] - p["skipped"]
        note = f"{passed} passed, {p['failures'] + p['errors']} failed, {p['skipped']} skipped"
        return note + (f": {', '.join(p['failed'])}" if p["failed"] else "")
    if status == "PASS" and facts.get("summary"):
        return "; ".join(facts["summary"])
    if status != "PASS" and record["commands"]:
        return f"exit {record['commands'][-1]['rc']}: {' '.join(record['commands'][-1]['argv'])}"[
            :160
        ]
    if name == "install":
        return install_note(record)
    keys = {
        "quickstart": ("concurrency", "test_accuracy"),
        "average": ("bitwise_equal", "max_abs_difference"),
    }.get(name, ())
    return ", ".join(f"{k} {facts[k]}" for k in keys if k in facts)


def install_note(record: dict[str, Any]) -> str:
    """What each check of the install step found, in a few words each."""
    notes = []
    for command in record["commands"]:
        facts, where = command["facts"], "py312 " if "/py312/" in command["argv"][0] else ""
        if "modules" in facts:
            absent = f", {len(facts['absent_ok'])} absent as expected" if facts["absent_ok"] else ""
            imported = facts["modules"] - len(facts["failed"]) - len(facts["absent_ok"])
            notes.append(f"{where}imports {imported}/{facts['modules']}{absent}")
            if facts.get("gpus"):
                notes.append(f"{len(facts['gpus'])} x {facts['gpus'][0]}")
        elif "dashboard" in facts:
            notes.append(f"{where}ray {'ok' if facts['ok'] else 'FAILED'}")
        elif "test" in facts:
            notes.append(f"data {facts['train']}/{facts['val']}/{facts['test']}")
    return ", ".join(notes)


def quickstart_files(ctx: Context) -> dict[str, Any]:
    """The quickstart run's small files beside its log (its checkpoints stay in --work), and
    how many lines NCCL logged as its rank set up (NCCL_DEBUG=INFO; none on the CPU)."""
    found = sorted(
        (ctx.args.work / "runs" / "gpu-quickstart").glob("*/results.json"),
        key=lambda p: p.stat().st_mtime,
    )
    if found:
        target = ctx.args.out / "quickstart"
        target.mkdir(exist_ok=True)
        run = found[-1].parent
        for path in [*run.glob("*.json"), *run.glob("*.png"), run / "spec.yaml"]:
            if path.exists():
                shutil.copy(path, target / path.name)
    log = (ctx.args.out / "quickstart.log").read_text(errors="replace")
    return {"nccl_log_lines": log.count("NCCL INFO")}


def bench_facts(ctx: Context, path: str, *keys: str) -> dict[str, Any]:
    """`keys` of a benchmark's JSON result, if it wrote one."""
    try:
        saved = json.loads((ctx.args.out / path).read_text())
    except (OSError, ValueError):
        return {}
    return {key: saved[key] for key in keys if key in saved}


def find_python312() -> str | None:
    candidates = [
        shutil.which("python3.12"),
        *map(str, sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))),
    ]
    for candidate in filter(None, candidates):
        done = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
        )
        if done.returncode == 0 and done.stdout.strip() == "(3, 12)":
            return candidate
    return None


if __name__ == "__main__":
    main()
