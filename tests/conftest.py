"""The fixture tests share: one small local Ray for the tests that need one.

Run: pytest   (make test-unit: the tests without Ray; make test: all)
"""

from __future__ import annotations

import os

import pytest

import swap  # noqa: F401  first: it applies swap's Ray settings, read as Ray is imported


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray for the whole session: 2 CPUs, as on the machine this targets."""
    os.environ.pop("RAY_ADDRESS", None)
    import ray  # after swap's Ray settings (swap/ray_session.py)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
