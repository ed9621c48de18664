"""Every shipped job spec loads, validates, and opens with the command that runs it.

Run: pytest tests/test_configs.py
"""

from __future__ import annotations

import pytest

from swap.spec import load_spec

from .conftest import REPO

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert any(path.name == "quickstart.yaml" for path in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates_and_says_how_to_run_it(path):
    spec = load_spec(path)
    assert spec.name
    first_line = path.read_text().splitlines()[0]
    assert first_line == f"# swap run configs/{path.name}"
