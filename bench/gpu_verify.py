"""The checks bench/gpu_check.sh runs inside the environment it built: imports, Ray itself, the
workload's data, and what a quickstart run and its `swap average` left.

Run: python bench/gpu_verify.py imports|ray|data|quickstart|average ...   (gpu_check.sh does)

Each check prints what it found and exits 1 if it failed; it writes the facts a step's JSON
summary keeps to the file in $GPU_CHECK_FACTS, when that is set.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]  # swap, tests.* and the bench scripts

HOST_MODULES = [  # what the host's python3 provides
    "torch", "torchvision", "numpy", "yaml", "rich", "matplotlib", "prometheus_client",
    "pyarrow", "pandas", "aiohttp", "grpc", "google.protobuf", "requests", "sklearn", "scipy",
    "filelock", "pytest",
]  # fmt: skip
BUNDLE_MODULES = ["pydantic", "ray", "ray.train", "ray.train.torch", "ray.tune"]
# Ray Jobs and metrics (the dashboard and its agent): `swap run` goes on without them (Ray starts
# without its dashboard), so the check goes on too, and says what is missing.
SERVICE_MODULES = [
    "ray.job_submission", "ray.util.metrics", "ray.dashboard.optional_deps",
    "ray.dashboard.modules.job.job_head", "ray._private.metrics_agent",
    "ray.dashboard.modules.reporter.reporter_agent", "opencensus.stats.stats",
    "opentelemetry.exporter.prometheus",
]  # fmt: skip
OTHER_MODULES = [
    "tests.conftest", "tests.helpers", "tests.custom_code", "tests.integration.test_gpu",
    "measure", "plain_pytorch", "time_to_accuracy", "gpu_throughput",
]  # fmt: skip
VERSIONS = ["torch", "torchvision", "ray", "pydantic", "numpy", "protobuf", "aiohttp", "grpcio"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    imports = commands.add_parser("imports", help="every module the check needs, at once")
    imports.add_argument("--absent-ok", default="", help="modules this rehearsal lacks: a,b")
    commands.add_parser("ray", help="a local Ray with its dashboard: a task, a Train run, a job")
    data = commands.add_parser("data", help="the workload's data through swap")
    data.add_argument("config")
    data.add_argument("root")
    quickstart = commands.add_parser("quickstart", help="the quickstart run's results")
    quickstart.add_argument("runs", type=Path, help="its output.dir/<name>")
    quickstart.add_argument("--workers", type=int, required=True)
    quickstart.add_argument("--gpu", action="store_true")
    average = commands.add_parser("average", help="`swap average RUN_DIR` against the run")
    average.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    facts = CHECKS[args.command](args)
    if os.environ.get("GPU_CHECK_FACTS"):
        Path(os.environ["GPU_CHECK_FACTS"]).write_text(json.dumps(facts, indent=1) + "\n")
    if not facts.get("ok", True):
        sys.exit(1)


def check_imports(args: argparse.Namespace) -> dict[str, Any]:
    """Import every module at once and name every one that fails, in one line. `swap` goes
    first, as everywhere: Ray reads swap's settings when it is imported."""
    absent_ok = {m for m in args.absent_ok.split(",") if m}
    names = ["swap", *HOST_MODULES, *BUNDLE_MODULES, *SERVICE_MODULES, *OTHER_MODULES]
    failed: dict[str, str] = {}
    expected: dict[str, str] = {}
    for name in names:
        attempt(name, absent_ok, failed, expected)
    if "swap" not in failed:
        for name in swap_modules():
            names.append(name)
            attempt(name, absent_ok, failed, expected)
    print(f"imports: {len(names) - len(failed) - len(expected)} of {len(names)} modules import")
    if expected:
        print(
            f"imports: absent in this rehearsal, as expected ({len(expected)}): "
            + ", ".join(sorted(expected))
        )
    if failed:
        print(
            f"imports: FAILED ({len(failed)}): "
            + "; ".join(f"{k} ({v})" for k, v in failed.items())
        )
    versions = installed_versions()
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    unmet = unmet_requirements()
    if unmet:
        print(f"requirements not met (warning; {len(unmet)}): " + "; ".join(unmet))
    facts = {"ok": not failed, "modules": len(names), "failed": failed, "absent_ok": expected}
    facts["blocking"] = sorted(set(failed) - set(SERVICE_MODULES))  # the steps cannot run
    return {**facts, "versions": versions, "unmet_requirements": unmet, **cuda_facts()}


def attempt(name: str, absent_ok: set[str], failed: dict, expected: dict) -> None:
    """Import `name`; a failure goes to `expected` if what is missing is in `absent_ok`."""
    try:
        importlib.import_module(name)
    except Exception as exc:  # any failure to import is what this check reports
        missing = (getattr(exc, "name", None) or "").split(".")[0]
        said = str(exc).lower()  # Ray's "PyTorch isn't installed" names no module
        absent = missing in absent_ok or (not missing and any(m in said for m in absent_ok))
        where = expected if absent else failed
        where[name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]


def swap_modules() -> list[str]:
    import swap

    found = pkgutil.walk_packages(swap.__path__, "swap.")
    return sorted(m.name for m in found if not m.name.endswith("__main__"))


def installed_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in [*VERSIONS, "swap"]:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


def unmet_requirements() -> list[str]:
    """Requirements of Ray (with the extras swap uses) and pydantic that this environment does
    not meet, the packages the bundle leaves out on purpose aside: a host package older than
    Ray wants shows here before it shows as a failure."""
    from importlib.metadata import PackageNotFoundError, requires, version

    try:
        from packaging.requirements import Requirement
    except ImportError:
        return ["packaging is absent: requirements not checked"]

    left_out = {"virtualenv", "py-spy", "google-api-core"}  # gpu_bundle.LEFT_OUT
    unmet = []
    for package, extras in (("ray", ("", "default", "train")), ("pydantic", ("",))):
        try:
            listed = requires(package) or []
        except PackageNotFoundError:
            continue  # reported as a failed import
        for requirement in map(Requirement, listed):
            marker = requirement.marker
            if marker and not any(marker.evaluate({"extra": e}) for e in extras):
                continue
            if requirement.name.lower() in left_out:
                continue
            try:
                have = version(requirement.name)
            except PackageNotFoundError:
                unmet.append(f"{package} needs {requirement} (absent)")
                continue
            if not requirement.specifier.contains(have, prereleases=True):
                unmet.append(f"{package} needs {requirement} ({have} here)")
    return sorted(set(unmet))


def cuda_facts() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"cuda": None}
    if not torch.cuda.is_available():
        print("cuda: not available to torch here")
        return {"cuda": False}
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    bf16 = torch.cuda.is_bf16_supported()
    print(f"cuda: {len(names)} x {names[0]}, CUDA {torch.version.cuda}, bf16 {bf16}")
    return {"cuda": True, "gpus": names, "cuda_version": torch.version.cuda, "bf16": bf16}


def check_ray(args: argparse.Namespace) -> dict[str, Any]:
    """A local Ray as swap starts one: a task, a Ray Train run of two workers (TorchTrainer over
    gloo, as phase 1 on CPUs; without torch, its base class), and a Ray job through the
    dashboard, so that a part pruned from the bundle shows in seconds, not in the long steps."""
    importlib.import_module("swap")  # swap's Ray settings, before Ray is imported
    import ray
    from ray.job_submission import JobSubmissionClient
    from ray.train import RunConfig, ScalingConfig

    started = time.perf_counter()
    agent_port_taken = port_taken(AGENT_PORT)
    context = ray.init(num_cpus=2, num_gpus=0, include_dashboard=True)
    facts: dict[str, Any] = {"dashboard": context.dashboard_url}
    facts["task"] = ray.get(ray.remote(lambda: "ran").remote())
    with tempfile.TemporaryDirectory(prefix="swap-ray-check-") as storage:
        trainer = trainer_class()(
            lambda: ray.train.report({"rank": ray.train.get_context().get_world_rank()}),
            scaling_config=ScalingConfig(num_workers=2),
            run_config=RunConfig(storage_path=storage),
        )
        facts["train"] = trainer.fit().error is None
    if agent_port_taken:  # the job agent of another Ray on this machine has its port
        facts["job"] = f"not checked: port {AGENT_PORT} is taken by another Ray here"
    else:
        facts.update(run_job(JobSubmissionClient(f"http://{context.dashboard_url}")))
    session = Path(context.address_info["session_dir"])
    ray.shutdown()
    facts["import_errors_in_logs"] = import_errors(session / "logs")
    facts["seconds"] = round(time.perf_counter() - started, 1)
    facts["ok"] = (
        bool(facts["dashboard"])
        and facts["train"]
        and (agent_port_taken or facts["job_output"] == ["42"])
        and not facts["import_errors_in_logs"]
    )
    print(f"ray: {json.dumps(facts)}")
    return facts


AGENT_PORT = 52365  # Ray's dashboard agent (ray_constants.DEFAULT_DASHBOARD_AGENT_LISTEN_PORT)


def port_taken(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("", port))
        except OSError:
            return True
    return False


def run_job(client: Any) -> dict[str, Any]:
    """A Ray job that prints 42, submitted once the node's job agent is up (it starts after
    Ray does), and what it printed."""
    deadline = time.monotonic() + 30
    while True:
        try:
            job = client.submit_job(entrypoint="python -c 'print(6 * 7)'")
            break
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    deadline = time.monotonic() + 60
    while not (status := client.get_job_status(job)).is_terminal():
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return {"job": str(status), "job_output": client.get_job_logs(job).strip().splitlines()[-1:]}


def import_errors(logs: Path) -> list[str]:
    """Lines of Ray's own logs (dashboard modules, agents) that say an import failed: a
    process that logs it and goes on would otherwise go unseen."""
    found = []
    for log in sorted(logs.glob("*.log")) + sorted(logs.glob("*.err")):
        for line in log.read_text(errors="replace").splitlines():
            if "ModuleNotFoundError" in line or "ImportError" in line:
                found.append(f"{log.name}: {line.strip()[:200]}")
    return found


def trainer_class() -> type:
    try:
        from ray.train.torch import TorchTrainer
    except ImportError:  # a rehearsal without torch
        from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

        return DataParallelTrainer
    return TorchTrainer


def check_data(args: argparse.Namespace) -> dict[str, Any]:
    """The workload's data as swap reads it, from the bundle's folder."""
    from swap.data.registry import prepare_data
    from swap.spec import load_spec

    spec, splits = prepare_data(load_spec(args.config, [f"data.root={args.root}"]))
    sizes = {s: len(getattr(splits, s)) for s in ("train", "val", "test")}
    print(f"data: {spec.data.dataset} from {args.root}: {sizes}")
    return {"ok": sizes["train"] > 0 and sizes["test"] > 0, **sizes}


def check_quickstart(args: argparse.Namespace) -> dict[str, Any]:
    """The run finished with one phase-1 rank and every phase-2 worker, the workers ran all at
    once (each one's first file was written before any wrote its last), and it learned."""
    import yaml

    run = newest_run(args.runs)
    results = json.loads((run / "results.json").read_text())
    spec = yaml.safe_load((run / "spec.yaml").read_text())
    workers = results["phase2"]["workers"]
    spans = [worker_span(run / "phase2" / f"worker-{w['index']}") for w in workers]
    overlap = min(end for _, end in spans) - max(start for start, _ in spans)
    busy = sum(w.get("seconds", 0.0) for w in workers)
    facts = {
        "run": str(run),
        "status": results["status"],
        "phase1_epochs": results["phase1"].get("epochs"),
        "finished_workers": sum(w["status"] == "finished" for w in workers),
        "all_workers_overlap_seconds": round(overlap, 2),
        "phase2_seconds": round(results["phase2"]["seconds"], 2),
        "concurrency": round(busy / results["phase2"]["seconds"], 2),
        "test_accuracy": round(results["phase3"]["test_accuracy"], 4),
        "use_gpu": spec["resources"]["use_gpu"],
        "phase1_ranks": spec["phase1"]["workers"],
        "gpus_per_worker": spec["resources"]["gpus_per_worker"] if args.gpu else None,
    }
    facts["ok"] = (
        facts["status"] == "finished"
        and facts["use_gpu"] == args.gpu
        and facts["phase1_ranks"] == 1
        and facts["finished_workers"] == args.workers
        and overlap > 0
        and facts["test_accuracy"] > 0.8  # chance is 0.1
    )
    print(f"quickstart: {json.dumps(facts)}")
    return facts


def newest_run(runs: Path) -> Path:
    found = sorted(runs.glob("*/results.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no run under {runs}")
    return found[-1].parent


def worker_span(directory: Path) -> tuple[float, float]:
    """When a worker's files were first and last written (modification times)."""
    times = [p.stat().st_mtime for p in directory.iterdir() if p.is_file()]
    attempts = directory / "attempts.json"
    start = attempts.stat().st_mtime if attempts.exists() else min(times)
    return start, max(times)


def check_average(args: argparse.Namespace) -> dict[str, Any]:
    """`swap average RUN_DIR` (run just before) equals the run's final model: bit for bit, as
    swap promises, and if not, by how much it differs."""
    import torch

    from swap.average import AVERAGE_DIR
    from swap.rundir import MODEL_FILE

    def load(path: Path) -> dict[str, torch.Tensor]:
        return torch.load(path, map_location="cpu", weights_only=True)

    final = load(args.run_dir / "final" / MODEL_FILE)
    again = load(args.run_dir / AVERAGE_DIR / MODEL_FILE)
    differences = {
        key: (value.double() - again[key].double()).abs().max().item()
        for key, value in final.items()
        if value.is_floating_point() and value.numel()
    }
    facts = {
        "same_keys": set(final) == set(again),
        "bitwise_equal": set(final) == set(again)
        and all(torch.equal(final[k], again[k]) for k in final),
        "max_abs_difference": max(differences.values(), default=0.0),
        "worst_tensor": max(differences, key=differences.get, default=None)
        if any(differences.values())
        else None,
    }
    facts["ok"] = facts["bitwise_equal"]
    print(f"average: {json.dumps(facts)}")
    return facts


CHECKS = {
    "imports": check_imports,
    "ray": check_ray,
    "data": check_data,
    "quickstart": check_quickstart,
    "average": check_average,
}


if __name__ == "__main__":
    main()
