"""Run in a process of its own against a Ray cluster with logical GPUs: tasks built by swap's
own task builder (swap.phases.placement.remote_task) as phase 2 and phase 3 build them, each
reporting which GPU it was leased and which one its process would use.

Run: python -m tests.gpu_leases GCS_ADDRESS   (by tests/integration/test_gpu_leases.py)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import ray

from swap.phases.placement import remote_task

from .helpers import tiny_spec

FIRST = "SWAP_TEST_FIRST_VISIBLE_DEVICES"


def leased() -> dict:
    """Where this task runs. CUDA binds a process to the devices in CUDA_VISIBLE_DEVICES when it
    first initializes; the first value this process saw stands in for that binding (kept in
    the environment, which Ray resets only for CUDA_VISIBLE_DEVICES after a task)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ.setdefault(FIRST, str(visible))
    return {
        "pid": os.getpid(),
        "gpu_ids": ",".join(str(i) for i in ray.get_gpu_ids()),
        "visible": visible,
        "first": os.environ[FIRST],
    }


def main(address: str) -> None:
    ray.init(address=address, log_to_driver=False)
    with tempfile.TemporaryDirectory() as scratch:
        spec = tiny_spec(
            Path(scratch),
            resources={"use_gpu": True, "cpus_per_worker": 0.25, "gpus_per_worker": 1},
        )
    phase2 = remote_task(leased, spec, scheduling_strategy="SPREAD", max_retries=1,
                         retry_exceptions=[OSError])  # fmt: skip
    coordinator = remote_task(leased, spec)
    # Twice as many tasks as GPUs, in two waves each: a process reused by the second wave
    # would have first run the first wave's task, likely on another GPU.
    records = {
        "phase2": [
            *ray.get([phase2.remote() for _ in range(4)]),
            *ray.get([phase2.remote() for _ in range(4)]),
        ],  # fmt: skip
        "coordinator": [ray.get(coordinator.remote()) for _ in range(3)],
    }
    print(json.dumps(records))


if __name__ == "__main__":
    main(sys.argv[1])
