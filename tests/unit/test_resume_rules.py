"""What a resumed run keeps and what it runs again, decided from the run directory alone: a
finished worker whose files are intact is kept, a damaged one trained again, a diverged one
left failed, any other failure run again; an earlier final model is never replaced silently;
models no better than chance are flagged.

Run: pytest tests/unit/test_resume_rules.py
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import ray.exceptions
import torch
from rich.console import Console

from swap.driver import keep_earlier_final, warn_if_chance
from swap.errors import DivergenceError, ray_failure_in
from swap.phases import phase2
from swap.phases.phase2 import failure_kind, kept_workers
from swap.report import print_summary
from swap.rundir import MODEL_FILE, RESULT, phase2_dir, save_state_dict, write_json

from ..helpers import tiny_spec


@pytest.mark.parametrize(
    "error, kind",
    [
        (ray.exceptions.RayTaskError("f", "tb", DivergenceError("non-finite loss")), "diverged"),
        (ray.exceptions.RayTaskError("f", "tb", OSError("bucket gone")), "storage"),
        (ray.exceptions.RayTaskError("f", "tb", ValueError("a bug")), "error"),
        (ray.exceptions.WorkerCrashedError(), "process"),
        (ray.exceptions.NodeDiedError("node lost"), "process"),
    ],
)
def test_a_failure_is_classified_by_what_a_rerun_could_fix(error, kind):
    assert failure_kind(error) == kind


def finished(run_dir, index: int) -> dict:
    directory = phase2_dir(run_dir, index)
    saved = save_state_dict({"w": torch.full((3,), float(index))}, f"{directory}/{MODEL_FILE}")
    record = {"index": index, "status": "finished", "checkpoint": saved.location,
              "sha256": saved.sha256}  # fmt: skip
    write_json(f"{directory}/{RESULT}", record)
    return record


def test_kept_workers_are_the_intact_finished_ones_and_the_diverged(tmp_path):
    spec = tiny_spec(tmp_path, phase2={"workers": 4})
    run_dir = str(tmp_path / "run")
    intact, damaged = finished(run_dir, 0), finished(run_dir, 1)
    with open(damaged["checkpoint"], "r+b") as file:
        file.seek(40)
        file.write(b"\x00")
    earlier = {"workers": [
        intact, damaged,
        {"index": 2, "status": "failed", "failure": "diverged", "error": "DivergenceError: x"},
        {"index": 3, "status": "failed", "failure": "process", "error": "WorkerCrashedError"},
    ]}  # fmt: skip
    out = io.StringIO()
    kept = kept_workers(spec, run_dir, earlier, Console(file=out, width=300))
    assert sorted(kept) == [0, 2] and kept[0] == intact and kept[2]["failure"] == "diverged"
    said = out.getvalue().splitlines()
    assert said == [
        "phase 2  worker 0 finished in an earlier attempt: kept",
        f"phase 2  worker 1: {damaged['checkpoint']}: checksum mismatch, the file is truncated "
        "or corrupted (sha256 " + said[1].split("(sha256 ")[1].split(")")[0] + "): training it "
        "again from its last good resume point",
        "phase 2  worker 2 diverged in an earlier attempt: not rerun",
        "phase 2  worker 3 failed in an earlier attempt (WorkerCrashedError): running it again",
    ]
    assert not (tmp_path / "run" / "phase2" / "worker-1" / RESULT).exists()  # not finished now


def test_an_earlier_final_model_of_other_workers_is_kept_beside_the_new_one(tmp_path):
    run_dir = str(tmp_path)
    final = save_state_dict({"w": torch.ones(2)}, f"{run_dir}/final/{MODEL_FILE}")
    results = {
        "resumed": 1,
        "phase2": {"workers": [{"index": 0, "status": "finished"},
                               {"index": 1, "status": "failed"}]},
        "phase3": {"averaged_workers": [0, 1], "sha256": final.sha256},
    }  # fmt: skip
    out = io.StringIO()
    keep_earlier_final(run_dir, results, Console(file=out, width=300))
    kept = tmp_path / "final" / "model-earlier-1.pt"
    assert kept.read_bytes() == (tmp_path / "final" / MODEL_FILE).read_bytes()
    assert results["earlier_finals"] == [
        {"model": str(kept), "sha256": final.sha256, "averaged_workers": [0, 1]}
    ]
    assert f"workers [0] are finished now: it is kept as {kept}" in out.getvalue()
    # The same workers again: nothing to keep.
    results["phase2"]["workers"][1]["status"] = "finished"
    keep_earlier_final(run_dir, results, Console(file=io.StringIO()))
    assert len(results["earlier_finals"]) == 1


def test_models_no_better_than_chance_are_flagged_in_the_results_and_the_table():
    results = {
        "name": "x",
        "run_id": "r",
        "run_dir": "/runs/x/r",
        "data": {"chance_val_accuracy": 0.11},
        "phase2": {"seconds": 3.0, "workers": [
            {"index": 0, "status": "finished", "val_accuracy": 0.10, "test_accuracy": 0.1,
             "seconds": 1.0},
            {"index": 1, "status": "finished", "val_accuracy": 0.97, "test_accuracy": 0.96,
             "seconds": 1.0},
        ]},
        "phase3": {"averaged_workers": [0, 1], "val_accuracy": 0.11, "test_accuracy": 0.1,
                   "seconds": 1.0, "bn_batches": 0},
    }  # fmt: skip
    out = io.StringIO()
    warn_if_chance(results, Console(file=out, width=300))
    assert results["phase2"]["workers"][0]["warning"] == (
        "no better than chance on validation: 10.00%, and always guessing its most common "
        "class scores 11.00%"
    )
    assert "warning" not in results["phase2"]["workers"][1] and "warning" in results["phase3"]
    table = io.StringIO()
    print_summary(results, Console(file=table, width=200))
    shown = table.getvalue()
    assert shown.count("⚠ chance") == 2
    assert "⚠ phase 2 · worker 0: no better than chance on validation: 10.00%" in shown
    assert "⚠ the SWAP model: no better than chance" in shown


def unserializable() -> Exception:
    try:
        try:
            raise TypeError("cannot unpickle the actor's error")
        except TypeError as exc:
            raise ray.exceptions.UnserializableException("ActorDiedError: never ran") from exc
    except Exception as exc:
        return exc


@pytest.mark.parametrize(
    "error, raised",
    [
        (ray.exceptions.ActorDiedError(), OSError),  # one of Ray Data's actors, on a lost node
        (unserializable(), OSError),  # seen in CI: such an error, which failed to unpickle
        (ray.exceptions.RayTaskError("read", "tb", ray.exceptions.NodeDiedError("lost")), OSError),
        (ValueError("a bug"), ValueError),
        (DivergenceError("non-finite loss"), DivergenceError),
    ],
)
def test_ray_losing_something_under_a_worker_is_rerun_like_a_storage_error(
    tmp_path, monkeypatch, error, raised
):
    def worker(*args):
        raise error

    monkeypatch.setattr(phase2, "phase2_worker", worker)
    monkeypatch.setattr(phase2.ray, "get_runtime_context", lambda: _Context())
    with pytest.raises(raised) as caught:
        phase2.phase2_task(tiny_spec(tmp_path), 0, None, "", str(tmp_path), "")
    assert (raised is OSError) == isinstance(caught.value, OSError)  # what Ray retries
    recorded = json.loads((Path(phase2_dir(str(tmp_path), 0)) / "attempts.json").read_text())
    assert recorded["attempts"] == 1
    assert recorded["last_error"].startswith(f"{raised.__name__}: ")
    if raised is OSError:
        assert type(ray_failure_in(error)).__name__ in recorded["last_error"]


class _Context:
    def get_node_id(self) -> str:
        return "node-a"
