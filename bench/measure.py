"""What every benchmark here records: the machine and its load, summary statistics, the JSON file.

Run: imported by the scripts in bench/ (swap_vs_baselines, overhead, averaging, loading).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = RESULTS.parent.parent
SWAP = str(Path(sys.executable).parent / "swap")  # the CLI of the venv running the bench


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory, versions, and the load average when the benchmark ran."""
    from swap.rundir import versions

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": round(memory, 1),
        **versions(),  # python, torch, ray, swap
        "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],
    }


def local_ray() -> tuple[dict[str, Any], str]:
    """The machine (printed), then a local Ray of every core for `swap run`s to join: returns
    (the machine, the Ray's address for RAY_ADDRESS). swap is imported first, which applies its
    Ray settings: Ray reads them when it is imported."""
    host = machine()
    print(describe_machine(host))
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    return host, ray.get_runtime_context().gcs_address


def run_swap(argv: list[str], scratch: str, address: str | None) -> tuple[dict[str, Any], float]:
    """`argv` (a `swap run` command line) with `output.dir` a fresh folder in `scratch`, against
    the Ray at `address` (None: a cold run, which starts its own), from the repository: its
    results.json and the Unix time it was launched."""
    out = Path(tempfile.mkdtemp(dir=scratch))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if address:
        env["RAY_ADDRESS"] = address
    launched = time.time()
    done = subprocess.run([*argv, f"output.dir={out}"], env=env, cwd=REPO, capture_output=True,
                          text=True)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    [path] = out.glob("*/*/results.json")
    return json.loads(path.read_text()), launched


def describe_machine(info: dict[str, Any]) -> str:
    load = ", ".join(f"{x:.1f}" for x in info["load_average_1_5_15min"])
    return (
        f"machine: {info['cores']} cores ({info['cpu_model']}), {info['memory_gib']} GiB; "
        f"torch {info['torch']}, ray {info['ray']}, python {info['python']}; "
        f"load average (1, 5, 15 min) at start: {load}"
    )


def summary(values: Sequence[float]) -> dict[str, float]:
    """n, mean, sample standard deviation (0 for one value), median, min, max."""
    values = list(values)
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def medians(rows: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each measured key of `rows` (one dict a run, the same keys) summarised over the runs."""
    return {key: summary([row[key] for row in rows]) for key in rows[0]}


def step_began(epoch: dict[str, Any]) -> float:
    """The Unix time an epoch record of results.json began its first step."""
    return epoch["ended_at"] - epoch["seconds"]


def mean_std(stats: dict[str, float], scale: float = 1.0, digits: int = 2) -> str:
    return f"{stats['mean'] * scale:.{digits}f} ± {stats['std'] * scale:.{digits}f}"


def command_line() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])


def write_results(path: Path, host: dict[str, Any], **results: Any) -> None:
    """The JSON a benchmark leaves: its command, the machine, the load at the end, `results`."""
    end = {"load_average_at_end": [round(x, 2) for x in os.getloadavg()]}
    payload = {"command": command_line(), "machine": host, **end, **results}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {path}")
