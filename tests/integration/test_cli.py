"""The `swap` command as a user's shell runs it: a fresh interpreter each time, so what it
imports and how fast it answers are what a user gets.

Run: pytest tests/integration/test_cli.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..helpers import REPO

SWAP = Path(sys.executable).parent / "swap"
HEAVY = ("torch", "ray", "torchvision")
PRINT_IMPORTED = f"print(sorted(m for m in {HEAVY} if m in sys.modules))"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def imports_after(*argv: str) -> tuple[int, str, str]:
    """The CLI's main in a fresh interpreter: (exit status, heavy modules imported, stderr)."""
    script = "\n".join([
        "import sys",
        "from swap.cli import main",
        "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as stop:\n    code = stop.code",
        PRINT_IMPORTED,
        "sys.exit(code)",
    ])  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True)
    return proc.returncode, proc.stdout.strip().splitlines()[-1], proc.stderr


def test_validate_and_help_import_neither_torch_nor_ray():
    # What keeps them quick (bench/cli_latency.py times them): the spec validates against
    # swap.catalog, and the commands import the driver, Ray and torch only when they run a job.
    code, imported, err = imports_after("validate", str(REPO / "configs" / "quickstart.yaml"))
    assert code == 0 and imported == "[]", err
    code, imported, _ = imports_after("validate", "--defaults")
    assert code == 0 and imported == "[]"
    code, imported, _ = imports_after("--help")
    assert code == 0 and imported == "[]"


def test_every_shipped_config_validates_without_torch():
    for config in sorted((REPO / "configs").glob("*.yaml")):
        code, imported, err = imports_after("validate", str(config))
        assert code == 0 and imported == "[]", (config.name, err)


def test_bad_spec_in_run_imports_no_ray_and_creates_no_run_dir(tmp_path):
    out = tmp_path / "runs"
    path = write(tmp_path / "s.yaml", f"name: x\noutput: {{dir: {out}}}\nphase2: {{workers: -1}}\n")
    code, imported, err = imports_after("run", str(path))
    assert code == 2
    assert "phase2.workers: must be greater than 0 (got -1)" in err
    assert imported == "[]"
    assert not out.exists()


def test_python_dash_m_swap_exits_2_on_a_bad_spec(tmp_path):
    path = write(tmp_path / "s.yaml", "name: x\nphase1: {batch_size: 7}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "swap", "run", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"swap: error: {path}: phase1.batch_size: must be divisible by phase1.workers (2) (got 7)"
    )


def test_swap_status_names_a_path_that_is_no_run_and_a_damaged_record(tmp_path):
    def status(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([str(SWAP), "status", str(path)], capture_output=True, text=True)

    missing = status(tmp_path / "no-run")
    assert missing.returncode == 2, missing.stderr
    assert (
        missing.stderr
        == f"swap: error: {tmp_path}/no-run: not a run directory (no results.json there)\n"
    )
    (tmp_path / "run").mkdir()
    record = write(tmp_path / "run" / "results.json", '{"name": "x", "spec": {"phase2": {"wo')
    damaged = status(record.parent)
    assert damaged.returncode == 2
    assert damaged.stderr == (
        f"swap: error: {record}: not valid JSON at line 1: the file is truncated or damaged\n"
    )
