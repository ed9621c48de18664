"""GPU placement on this CPU machine: a Ray node with logical GPUs leases them per task
(CUDA_VISIBLE_DEVICES) with no GPU present, enough to check that every GPU task swap builds
runs in a process of its own, on the GPU it was leased; and that GPUs torch cannot use are
named, exit 2, before any run directory exists.

Run: pytest tests/integration/test_gpu_leases.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from ..helpers import REPO, SWAP
from ..ray_cluster import ray_head

QUICKSTART = str(REPO / "configs" / "quickstart.yaml")


def swap_run(env: dict[str, str], *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SWAP), "run", QUICKSTART, "resources.use_gpu=true", *overrides],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def swap_lines(done: subprocess.CompletedProcess) -> list[str]:
    """What swap itself printed on stderr (Ray's own start-up lines aside), with no traceback."""
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    return [line for line in done.stderr.splitlines() if line.startswith("swap")]


def test_a_gpu_run_on_a_machine_without_gpus_exits_2_naming_the_field(tmp_path):
    """A local Ray (no RAY_ADDRESS) on this GPU-less machine: one line, no run directory."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = swap_run(env, f"output.dir={tmp_path / 'runs'}")
    assert done.returncode == 2, done.stderr[-3000:]
    assert swap_lines(done) == [
        "swap: error: resources.use_gpu: this machine has no GPU Ray can use (set "
        "resources.use_gpu: false, or run on a cluster with GPUs: RAY_ADDRESS)"
    ]
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def gpu_cluster():
    """A head node that offers Ray 4 GPUs that torch cannot see."""
    with ray_head(num_cpus=2, num_gpus=4) as head:
        yield head


def test_every_gpu_task_runs_in_a_fresh_process_on_the_gpu_it_was_leased(gpu_cluster):
    done = subprocess.run(
        [sys.executable, "-m", "tests.gpu_leases", gpu_cluster.gcs_address],
        env={**gpu_cluster.env, "PYTHONPATH": str(REPO)}, cwd=REPO, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    records = json.loads(done.stdout)
    for kind, tasks in records.items():
        pids = [task["pid"] for task in tasks]
        assert len(set(pids)) == len(pids), f"{kind}: a process ran two GPU tasks: {tasks}"
        for task in tasks:  # one GPU each, the one the process was started for
            assert task["gpu_ids"] in {"0", "1", "2", "3"}, task
            assert task["visible"] == task["first"] == task["gpu_ids"], task
    assert {task["gpu_ids"] for task in records["phase2"]} == {"0", "1", "2", "3"}


def test_gpus_torch_cannot_use_exit_2_naming_the_field_and_the_node(gpu_cluster, tmp_path):
    env = {**gpu_cluster.env, "RAY_ADDRESS": gpu_cluster.gcs_address}
    done = swap_run(env, f"output.dir={tmp_path / 'runs'}")
    assert done.returncode == 2, done.stderr[-3000:]
    [line] = swap_lines(done)
    assert re.fullmatch(
        r"swap: error: resources.use_gpu: node \S+ \([0-9a-f]{12}\) offers Ray 4 GPU\(s\), but "
        r"torch there sees no CUDA device \(a CPU build of torch, or no NVIDIA driver\?\)",
        line,
    ), line
    assert not (tmp_path / "runs").exists()
