"""Shared fixtures: a small local Ray for the tests that need one, and tiny specs.

Run: pytest
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swap.cluster import apply_ray_defaults
from swap.spec import Spec, spec_from_dict

REPO = Path(__file__).resolve().parent.parent


def tiny_spec(output_dir: Path, **sections) -> Spec:
    """A spec that trains the digits CNN through all three phases in seconds on 2 CPUs."""
    raw = {
        "name": "tiny",
        "seed": 0,
        "phase1": {"workers": 2, "batch_size": 128, "lr": 0.2, "max_epochs": 3},
        "phase2": {"workers": 3, "batch_size": 64, "lr": 0.05, "epochs": 1},
        "resources": {"cpus_per_worker": 0.5},
        "output": {"dir": str(output_dir)},
    }
    for section, fields in sections.items():
        raw[section] = {**raw.get(section, {}), **fields} if isinstance(fields, dict) else fields
    return spec_from_dict(raw)


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray for the whole session: 2 CPUs, as on the machine this targets."""
    apply_ray_defaults()
    os.environ.pop("RAY_ADDRESS", None)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
