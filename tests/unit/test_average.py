"""`swap average --spec`: any checkpoints of a spec's architecture averaged after the fact; bad
input exits 2 naming the file. A run's phase 3 again, bit for bit: tests/integration/test_run.py.

Run: pytest tests/unit/test_average.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import swap
from swap.cli import main
from swap.rundir import MODEL_FILE, load_state_dict, save_state_dict

from ..helpers import tiny_spec


@pytest.fixture
def spec_file(tmp_path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(tiny_spec(tmp_path / "runs").to_yaml())
    return path


def checkpoints(spec_file: Path, count: int = 2) -> list[str]:
    paths = []
    for index in range(count):
        torch.manual_seed(100 + index)
        model = swap.build_model(swap.load_spec(spec_file))
        path = spec_file.parent / f"w{index}" / MODEL_FILE
        paths.append(save_state_dict(model.state_dict(), path).location)
    return paths


def test_average_with_a_spec_is_the_mean_of_the_files(spec_file, tmp_path, capsys):
    a, b = checkpoints(spec_file)
    out = tmp_path / "out" / "avg.pt"
    argv = ["average", "--spec", str(spec_file), a, b, "phase3.bn_refresh=false", "-o", str(out)]
    assert main(argv) == 0
    averaged, first, second = (load_state_dict(str(p)) for p in (out, a, b))
    for key, value in averaged.items():
        if value.is_floating_point():
            mean = ((first[key].double() + second[key].double()) / 2).float()
            assert torch.equal(value, mean), key
    printed = capsys.readouterr().out
    assert "averaged 2 checkpoints: test acc" in printed and str(out) in printed
    assert "BN refresh" not in printed  # phase3.bn_refresh=false: there is no "before" it


def test_a_gpu_run_is_averaged_on_the_cpu_of_a_machine_without_one(
    spec_file, tmp_path, capsys, monkeypatch
):
    """A run made with resources.use_gpu (and fp16) is averaged here in float32, saying so in
    one line: the same model as a CPU spec gives, not a crash on a missing CUDA."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    a, b = checkpoints(spec_file)
    gpu, cpu = tmp_path / "gpu.pt", tmp_path / "cpu.pt"
    common = ["average", "--spec", str(spec_file), a, b]
    assert main([*common, "resources.use_gpu=true", "resources.amp=fp16", "-o", str(gpu)]) == 0
    said = capsys.readouterr().out.splitlines()
    assert main([*common, "-o", str(cpu)]) == 0
    notes = [line for line in said if "resources.use_gpu" in line]
    assert len(notes) == 1 and "averaging on the CPU in float32" in notes[0], said
    assert gpu.read_bytes() == cpu.read_bytes()


def test_the_bn_refresh_changes_only_batchnorm_statistics(spec_file, tmp_path):
    a, b = checkpoints(spec_file)
    plain, refreshed = tmp_path / "plain.pt", tmp_path / "refreshed.pt"
    spec = str(spec_file)
    assert main(["average", "--spec", spec, a, b, "phase3.bn_refresh=false", "-o", str(plain)]) == 0
    assert main(["average", "--spec", spec, a, b, "-o", str(refreshed)]) == 0
    plain, refreshed = load_state_dict(str(plain)), load_state_dict(str(refreshed))
    changed = {key for key in plain if not torch.equal(plain[key], refreshed[key])}
    assert changed and all("running" in key or "num_batches" in key for key in changed)


def bad_input(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("swap: error: ") and err.count("\n") == 1
    return err


def test_a_missing_checkpoint_is_named(spec_file, tmp_path, capsys):
    (a,) = checkpoints(spec_file, 1)
    missing = str(tmp_path / "nope.pt")
    out = tmp_path / "out.pt"
    err = bad_input(["average", "--spec", str(spec_file), a, missing, "-o", str(out)], capsys)
    assert f"{missing}: checkpoint not found" in err
    assert not out.exists()


def test_checkpoints_of_different_shapes_are_named(spec_file, tmp_path, capsys):
    a, b = checkpoints(spec_file)
    state = load_state_dict(b)
    state["0.weight"] = torch.zeros(3, 3)
    save_state_dict(state, b)
    out = tmp_path / "out.pt"
    err = bad_input(["average", "--spec", str(spec_file), a, b, "-o", str(out)], capsys)
    assert f"{b}: 0.weight has shape (3, 3), {a} has" in err
    assert not out.exists()


def test_checkpoints_of_another_architecture_are_refused(spec_file, tmp_path, capsys):
    a, b = checkpoints(spec_file)
    argv = ["average", "--spec", str(spec_file), a, b, "model.arch=mlp", "-o", str(tmp_path / "o")]
    assert "checkpoints do not fit model.arch mlp: " in bad_input(argv, capsys)


def test_the_output_must_not_be_an_input_and_is_required(spec_file, capsys):
    a, b = checkpoints(spec_file)
    before = Path(a).read_bytes()
    err = bad_input(["average", "--spec", str(spec_file), a, b, "-o", a], capsys)
    assert "is one of the checkpoints; it would be overwritten" in err
    assert Path(a).read_bytes() == before
    assert "-o OUT.pt is required" in bad_input(["average", "--spec", str(spec_file), a], capsys)


def test_a_folder_that_is_no_run_is_named(tmp_path, capsys):
    err = bad_input(["average", str(tmp_path)], capsys)
    assert f"{tmp_path}: not a run directory (it has no spec.yaml)" in err
