"""`swap report RUN_DIR`: the results table and the PNGs, from a results.json alone.

Run: pytest tests/unit/test_report.py
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from swap.cli import main
from swap.report import ACCURACY_PLOT, RELIABILITY_PLOT, TRAINING_PLOT, accuracy_bars


def history(epochs: int, start_loss: float, start_accuracy: float) -> list[dict]:
    """Epoch records shaped as swap.training.epoch_record writes them."""
    return [
        {
            "epoch": e,
            "train_loss": start_loss / e,
            "train_accuracy": min(1.0, start_accuracy + 0.05 * e),
            "lr": 0.1,
            "seconds": 0.5,
            "samples": 1293,
            "ended_at": 1_700_000_000.0 + e,
        }
        for e in range(1, epochs + 1)
    ]


def results(run_dir: Path) -> dict:
    """A finished run as swap.driver writes results.json: phase 1, three phase-2 workers (one of
    which failed and has no history), and phase 3."""
    worker = {"status": "finished", "val_accuracy": 0.98, "seconds": 4.0, "attempts": 1}
    return {
        "name": "digits-quickstart",
        "run_id": run_dir.name,
        "run_dir": str(run_dir),
        "status": "finished",
        "phase1": {
            "epochs": 4,
            "stop_reason": "max_epochs",
            "train_accuracy": 0.9,
            "val_accuracy": 0.9583,
            "test_accuracy": 0.9611,
            "test_loss": 0.15,
            "seconds": 12.5,
            "history": history(4, 2.0, 0.5),
        },
        "phase2": {
            "seconds": 9.0,
            "workers": [
                {
                    **worker,
                    "index": 0,
                    "seed": 1,
                    "test_accuracy": 0.9722,
                    "test_loss": 0.09,
                    "history": history(3, 0.3, 0.85),
                },
                {"index": 1, "seed": 2, "status": "failed", "attempts": 3, "error": "boom"},
                {
                    **worker,
                    "index": 2,
                    "seed": 3,
                    "test_accuracy": 0.9694,
                    "test_loss": 0.1,
                    "history": history(3, 0.35, 0.84),
                },
            ],  # fmt: skip
        },
        "phase3": {
            "averaged_workers": [0, 2],
            "dropped": {},
            "test_accuracy_before_bn": 0.9750,
            "val_accuracy_before_bn": 0.98,
            "test_accuracy": 0.9806,
            "test_loss": 0.07,
            "val_accuracy": 0.9861,
            "bn_batches": 6,
            "seconds": 0.4,
        },
        "total_seconds": 25.0,
    }


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; fails on anything that is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def write_run(tmp_path: Path, content: dict) -> Path:
    run_dir = tmp_path / "runs" / "digits-quickstart" / "20260101-000000-abcdef"
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps(content))
    return run_dir


def test_report_prints_the_table_and_writes_the_plots(tmp_path, capsys):
    run_dir = write_run(tmp_path, results(tmp_path / "elsewhere" / "20260101-000000-abcdef"))
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    for number in ("96.11%", "97.22%", "96.94%", "97.50%", "98.06%", "98.61%"):
        assert number in out
    assert "failed" in out
    for name in (TRAINING_PLOT, ACCURACY_PLOT):
        path = run_dir / name  # where the run is now, not where results.json says it was
        assert path.stat().st_size > 1000
        width, height = png_size(path)
        assert width > 300 and height > 200
        assert str(path) in out.replace("\n", "")


def test_bars_follow_the_table(tmp_path):
    bars = accuracy_bars(results(tmp_path))
    assert [(label, value) for label, value, _ in bars] == [
        ("phase 1", 0.9611),
        ("worker 0", 0.9722),
        ("worker 2", 0.9694),
        ("average\nbefore BN", 0.9750),
        ("average\n(SWAP)", 0.9806),
    ]


def test_without_a_bn_refresh_there_is_no_average_before_it(tmp_path, capsys):
    """phase3.bn_refresh: false (bn_batches 0): no "before BN refresh" row or bar."""
    content = results(tmp_path)
    content["phase3"].update(bn_batches=0, test_accuracy_before_bn=0.9806)
    run_dir = write_run(tmp_path, content)
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "98.06%" in out and "before BN" not in out
    assert [label for label, _, _ in accuracy_bars(content)][-2:] == ["worker 2", "average\n(SWAP)"]


def test_a_run_that_stopped_in_phase_2_still_gets_its_plots(tmp_path, capsys):
    partial = results(tmp_path)
    partial.update(status="failed", phase2={"seconds": 1.0, "workers": []})
    del partial["phase3"]
    run_dir = write_run(tmp_path, partial)
    assert main(["report", str(run_dir)]) == 0
    assert "96.11%" in capsys.readouterr().out
    for name in (TRAINING_PLOT, ACCURACY_PLOT):
        width, height = png_size(run_dir / name)
        assert (run_dir / name).stat().st_size > 1000 and width > 300 and height > 200


def test_not_a_run_directory_is_a_user_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "has no results.json" in capsys.readouterr().err


def scored(accuracy: float, nll: float, ece: float) -> dict:
    """A model's quality on one split, as swap.calibration.quality writes it."""
    bins = [{"count": 0, "confidence": None, "accuracy": None}] * 13
    bins += [{"count": 10, "confidence": 0.9, "accuracy": 0.8}] * 2
    return {"count": 20, "accuracy": accuracy, "nll": nll, "ece": ece, "brier": 0.1, "bins": bins}


def test_a_greedy_soup_and_ensemble_get_their_rows_and_the_reliability_diagram(tmp_path, capsys):
    content = results(tmp_path)
    content["phase3"].update(
        combine="greedy",
        candidates=[0, 2],
        averaged_workers=[2],
        models=[
            {"model": "phase 1", "test": scored(0.9611, 0.151, 0.021), "val": scored(0.95, 0, 0)},
            {"model": "worker 0", "test": scored(0.9722, 0.092, 0.012), "val": scored(0.97, 0, 0)},
            {"model": "worker 2", "test": scored(0.9694, 0.101, 0.013), "val": scored(0.98, 0, 0)},
            {
                "model": "uniform average",
                "test": scored(0.9733, 0.081, 0.011),
                "val": scored(0.9811, 0, 0),
            },
            {
                "model": "greedy soup",
                "test": scored(0.9806, 0.071, 0.009),
                "val": scored(0.9861, 0, 0),
            },
            {
                "model": "ensemble",
                "test": scored(0.9778, 0.077, 0.008),
                "val": scored(0.9822, 0, 0),
            },
        ],  # fmt: skip
    )
    run_dir = write_run(tmp_path, content)
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 5}
    assert "97.33%" in lines["uniform average of 2"] and "98.11%" in lines["uniform average of 2"]
    assert "0.071" in lines["greedy soup of 1 · SWAP model"]
    assert "0.009" in lines["greedy soup of 1 · SWAP model"]
    ensemble = lines["ensemble of 2 workers"]
    assert "97.78%" in ensemble and "0.077" in ensemble and "0.008" in ensemble
    assert "0.151" in next(line for name, line in lines.items() if name.startswith("phase 1"))
    width, height = png_size(run_dir / RELIABILITY_PLOT)
    assert width > 300 and height > 300
