"""The wheel the images install: what the Dockerfiles' first stage builds from the files they copy.

Run: pytest tests/integration/test_packaging.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import tomllib

from ..helpers import REPO as ROOT

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_the_builder_stage_builds_this_package_wheel(tmp_path):
    """What the image's first stage does: `pip wheel --no-deps .` on the COPYed files only."""
    for source in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / source, tmp_path / source)
    shutil.copytree(ROOT / "swap", tmp_path / "swap", ignore=shutil.ignore_patterns("__pycache__"))
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--wheel-dir", "out", "."]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = tmp_path / "out" / f"swap-{VERSION}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "swap").rglob("*.py")}
    assert sources <= set(names)
    entry_points = zipfile.ZipFile(wheel).read(f"swap-{VERSION}.dist-info/entry_points.txt")
    assert "swap = swap.cli:main" in entry_points.decode()
