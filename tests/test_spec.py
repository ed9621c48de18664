"""Job specs: defaults, overrides, and every kind of bad input, through the CLI (exit status 2).

Run: pytest tests/test_spec.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from swap.cli import main
from swap.errors import SpecError
from swap.spec import apply_overrides, load_spec

from .conftest import REPO


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_minimal_spec_gets_documented_defaults(tmp_path):
    spec = load_spec(write(tmp_path / "s.yaml", "name: x\n"))
    assert spec.phase1.workers == 2 and spec.phase1.batch_size == 512
    assert spec.phase2.schedule == "cosine" and spec.data.dataset == "digits"
    assert spec.phase2_momentum == spec.phase1.momentum == 0.9
    assert spec.phase2_weight_decay == spec.phase1.weight_decay == 5e-4


def test_overrides_use_dotted_names_and_yaml_values(tmp_path):
    path = write(tmp_path / "s.yaml", "name: x\nphase2: {workers: 2}\n")
    spec = load_spec(path, ["phase2.workers=8", "phase1.weight_decay=1e-4", "phase3.bn_batches=3"])
    assert spec.phase2.workers == 8
    assert spec.phase1.weight_decay == pytest.approx(1e-4)  # "1e-4" is text to YAML 1.1
    assert spec.phase3.bn_batches == 3


def test_override_does_not_modify_its_input():
    raw = {"name": "x", "phase2": {"workers": 2}}
    apply_overrides(raw, ["phase2.workers=8"], "s.yaml")
    assert raw["phase2"]["workers"] == 2


def test_resolved_spec_round_trips(tmp_path):
    spec = load_spec(REPO / "configs" / "quickstart.yaml", ["seed=7"])
    again = load_spec(write(tmp_path / "resolved.yaml", spec.to_yaml()))
    assert again == spec


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        ("name: x\nbogus: 1\n", [], "s.yaml: bogus: unknown field (got 1)"),
        ("name: x\nphase2: {wokers: 4}\n", [], "s.yaml: phase2.wokers: unknown field"),
        ("name: x\n", ["phase2.workers=0"], "s.yaml: phase2.workers: must be greater than 0"),
        ("name: x\n", ["phase1.lr=-0.1"], "s.yaml: phase1.lr: must be greater than 0 (got -0.1)"),
        ("name: x\n", ["phase1.lr=fast"], "s.yaml: phase1.lr: expected a number (got 'fast')"),
        ("name: x\n", ["phase1.lr=true"], "s.yaml: phase1.lr: expected a number, not a boolean"),
        ("name: x\n", ["phase2.workers=2.5"], "s.yaml: phase2.workers: must be a valid integer"),
        ("name: x\n", ["phase2.schedule=step"], "phase2.schedule: must be 'cosine' or 'constant'"),
        ("name: x\n", ["phase1.workers=3"], "phase1.batch_size: must be divisible by phase1.wor"),
        ("name: ../etc\n", [], "s.yaml: name: must be a safe file name"),
        ("seed: 1\n", [], "s.yaml: name: required field is missing"),
        ("name: x\nphase1: 3\n", [], "s.yaml: phase1: must be a section"),
        ("name: x\n", ["data.dataset=imagenet"], "s.yaml: data.dataset: unknown data set"),
        ("name: x\n", ["model.arch=resnet9000"], "s.yaml: model.arch: unknown architecture"),
        ("name: x\n", ["data.val_fraction=1"], "s.yaml: data.val_fraction: must be less than 1"),
        ("name: x\n", ["phase1.stop_train_accuracy=1.5"], "stop_train_accuracy: must be less"),
        ("name: x\n", ["phase1"], "s.yaml: override 'phase1': expected dotted.key=value"),
        ("name: x\n", ["name.first=a"], "s.yaml: override 'name.first=a': name is not a section"),
        ("- a\n- b\n", [], "s.yaml: a spec is a mapping of sections, not a list"),
        ("name: [x\n", [], "s.yaml: invalid YAML at line 2, column 1"),
    ],
)
def test_bad_specs_exit_2_with_one_line_naming_file_and_field(
    tmp_path, capsys, text, overrides, expected
):
    path = write(tmp_path / "s.yaml", text)
    code, err = run_cli(capsys, "validate", str(path), *overrides)
    assert code == 2
    assert expected in err
    assert all(line.startswith("swap: error: ") for line in err.splitlines())


def test_all_errors_are_reported_at_once(tmp_path, capsys):
    path = write(tmp_path / "s.yaml", "name: 'a b'\nphase1: {workers: 0, lr: x}\nextra: 1\n")
    code, err = run_cli(capsys, "validate", str(path), "phase2.epochs=-1")
    assert code == 2
    fields = [line.split(": ")[3] for line in err.splitlines()]
    assert sorted(fields) == ["extra", "name", "phase1.lr", "phase1.workers", "phase2.epochs"]


def test_missing_spec_file(tmp_path, capsys):
    code, err = run_cli(capsys, "validate", str(tmp_path / "nope.yaml"))
    assert code == 2
    missing = tmp_path / "nope.yaml"
    assert err == f"swap: error: {missing}: cannot read the spec: No such file or directory\n"


def test_bad_spec_in_run_imports_no_ray_and_creates_no_run_dir(tmp_path):
    out = tmp_path / "runs"
    path = write(tmp_path / "s.yaml", f"name: x\noutput: {{dir: {out}}}\nphase2: {{workers: -1}}\n")
    script = (
        "import sys; from swap.cli import main; code = main(sys.argv[1:]); "
        "print('ray imported' if 'ray' in sys.modules else 'no ray'); sys.exit(code)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "run", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "phase2.workers: must be greater than 0 (got -1)" in proc.stderr
    assert proc.stdout.strip() == "no ray"
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


def test_validate_show_prints_the_resolved_spec(tmp_path, capsys):
    path = write(tmp_path / "s.yaml", "name: x\n")
    assert main(["validate", str(path), "--show", "phase2.workers=3"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)["phase2"]["workers"] == 3


def test_spec_error_lists_problems():
    error = SpecError(["a: b", "c: d"])
    assert error.problems == ["a: b", "c: d"] and str(error) == "a: b\nc: d"
