"""End to end on a local Ray: a tiny spec through all three phases, checked file by file.

Run: pytest tests/integration/test_run.py
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from rich.console import Console

import swap
from swap.cli import main
from swap.data.registry import load_splits
from swap.driver import run_job
from swap.phases.phase1 import run_phase1
from swap.phases.phase2_worker import phase2_worker
from swap.rundir import MODEL_FILE, new_run_dir
from swap.seeds import worker_seed

from ..helpers import shared_data, tiny_spec


def load(path: str | Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def finished(local_ray, tmp_path_factory):
    spec = tiny_spec(tmp_path_factory.mktemp("runs"))
    out = io.StringIO()
    results = run_job(spec, Console(file=out, width=120))
    return spec, results, out.getvalue()


def test_results_json_has_every_documented_field(finished):
    spec, results, _ = finished
    run_dir = Path(results["run_dir"])
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["status"] == "finished" and saved["name"] == "tiny"
    assert saved["run_id"] == run_dir.name and run_dir.parent.name == "tiny"
    assert saved["spec"] == spec.to_dict()
    assert saved["total_seconds"] > 0
    assert set(saved["versions"]) == {"python", "torch", "ray", "swap"}
    p1 = saved["phase1"]
    assert {"epochs", "train_accuracy", "test_accuracy", "seconds", "checkpoint"} <= set(p1)
    assert p1["epochs"] == 3 and len(p1["history"]) == 3 and p1["stop_reason"] == "max_epochs"
    # Automatic checkpoints: after the first epoch (to learn their cost) and the last, always.
    history = p1["history"]
    assert "checkpoint_seconds" in history[0] and "checkpoint_seconds" in history[-1]
    assert set(history[0]["checkpoint_seconds"]) == {"save", "report"}
    assert all(h["after_training_seconds"] >= 0 for h in history)
    assert p1["torch_threads"] == 1  # 0.5 Ray CPUs a rank: one thread
    assert saved["phase2"]["seconds"] > 0
    workers = saved["phase2"]["workers"]
    assert [w["index"] for w in workers] == [0, 1, 2]
    assert [w["seed"] for w in workers] == [worker_seed(0, i) for i in range(3)]
    for w in workers:
        assert w["status"] == "finished" and w["seconds"] > 0
        assert {"test_accuracy", "checkpoint", "node_id", "samples_per_second"} <= set(w)
        assert w["torch_threads"] == 1
    p3 = saved["phase3"]
    assert p3["averaged_workers"] == [0, 1, 2]
    assert {"test_accuracy_before_bn", "test_accuracy", "seconds", "model"} <= set(p3)
    assert p3["torch_threads"] == 1


def test_run_directory_layout(finished):
    _, results, _ = finished
    run_dir = Path(results["run_dir"])
    assert swap.load_spec(run_dir / "spec.yaml").to_dict() == results["spec"]
    assert Path(results["phase1"]["checkpoint"]).parent == run_dir / "phase1"
    for i in range(3):
        assert (run_dir / "phase2" / f"worker-{i}" / MODEL_FILE).is_file()
    assert Path(results["phase3"]["model"]) == run_dir / "final" / MODEL_FILE
    assert not list(run_dir.rglob("*.tmp"))  # no half-written files left behind


def test_run_ends_with_its_report_plots(finished):
    _, results, out = finished
    run_dir = Path(results["run_dir"])
    for name in ("training.png", "accuracy.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(run_dir / name) in out.replace("\n", "")
    ended = [h["ended_at"] for h in results["phase1"]["history"]]  # the job's timeline
    assert ended and ended == sorted(ended)
    assert ended[-1] - ended[0] <= results["phase1"]["seconds"]


def test_a_worker_is_a_function_of_the_phase1_weights_and_its_index(finished, tmp_path):
    # Run worker 1 again, here, outside Ray, from the same phase-1 checkpoint: Ray placed the
    # work and moved the weights but computed nothing else, so the weights are the same bits.
    spec, results, _ = finished
    ran = results["phase2"]["workers"][1]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the Ray task (OMP_NUM_THREADS=1 for half a CPU)
    try:
        weights = Path(results["phase1"]["checkpoint"]) / MODEL_FILE
        again = phase2_worker(spec, 1, load_splits(spec.data), str(weights), str(tmp_path))
    finally:
        torch.set_num_threads(threads)
    assert again["history"] == [{**h, "seconds": again["history"][i]["seconds"],
                                 "ended_at": again["history"][i]["ended_at"]}
                                for i, h in enumerate(ran["history"])]  # fmt: skip
    ours, theirs = load(again["checkpoint"]), load(ran["checkpoint"])
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def test_workers_fork_and_diverge_from_phase1(finished):
    _, results, _ = finished
    phase1 = load(Path(results["phase1"]["checkpoint"]) / MODEL_FILE)
    workers = [load(w["checkpoint"]) for w in results["phase2"]["workers"]]
    key = "0.weight"
    for i, w in enumerate(workers):
        assert not torch.equal(w[key], phase1[key])
        for other in workers[i + 1 :]:
            assert not torch.equal(w[key], other[key])


def test_final_weights_are_the_mean_of_the_workers_and_bn_was_refreshed(finished):
    _, results, _ = finished
    workers = [load(w["checkpoint"]) for w in results["phase2"]["workers"]]
    final = load(results["phase3"]["model"])
    for key, value in final.items():
        mean = torch.stack([w[key].double() for w in workers]).mean(0).to(value.dtype)
        if "running" in key:
            # The refresh recomputed these; the workers' mean is what it replaced.
            assert not torch.allclose(value, mean, atol=1e-6), key
        elif value.is_floating_point():
            torch.testing.assert_close(value, mean, rtol=0, atol=1e-6, msg=key)
    batches = results["phase3"]["bn_batches"]
    assert final["1.num_batches_tracked"].item() == batches > 0


def test_models_learn(finished):
    _, results, _ = finished
    assert results["phase3"]["test_accuracy"] > 0.8  # chance is 0.1
    for w in results["phase2"]["workers"]:
        assert w["test_accuracy"] > 0.8


def test_final_model_loads_with_plain_pytorch(finished):
    spec, results, _ = finished
    run_dir = Path(results["run_dir"])
    model = swap.build_model(swap.load_spec(run_dir / "spec.yaml"))
    model.load_state_dict(torch.load(run_dir / "final" / "model.pt", weights_only=True))
    same = swap.load_model(run_dir)
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(model.eval()(x), same(x))


def test_swap_average_repeats_the_runs_phase3_bit_for_bit(finished, tmp_path, capsys):
    _, results, _ = finished
    run_dir = Path(results["run_dir"])
    out = tmp_path / "again.pt"
    assert main(["average", str(run_dir), "-o", str(out)]) == 0
    assert out.read_bytes() == (run_dir / "final" / MODEL_FILE).read_bytes()
    assert "the same as the run's final/model.pt" in capsys.readouterr().out

    copy = tmp_path / "copy"  # a changed worker checkpoint: named, exit 2, nothing written
    shutil.copytree(run_dir, copy)
    worker = results["phase2"]["workers"][1]["checkpoint"]
    copied = copy / Path(worker).relative_to(run_dir)
    copied.write_bytes(copied.read_bytes()[:-1])
    copied_results = json.loads((copy / "results.json").read_text())
    copied_results["phase2"]["workers"][1]["checkpoint"] = str(copied)
    (copy / "results.json").write_text(json.dumps(copied_results))
    assert main(["average", str(copy)]) == 2
    assert f"swap: error: {copied}: checksum mismatch" in capsys.readouterr().err
    assert not (copy / "average").exists()


def test_summary_table_shows_every_model(finished):
    _, results, out = finished
    for label in ("phase 1", "worker 0", "worker 1", "worker 2", "before BN refresh", "SWAP"):
        assert label in out
    assert f"{results['phase3']['test_accuracy']:.2%}" in out
    assert results["run_dir"] in out


def test_same_seed_same_phase1_weights_and_early_stop(local_ray, tmp_path):
    spec = tiny_spec(tmp_path, phase1={"max_epochs": 8, "stop_train_accuracy": 0.6})
    weights, summaries = [], []
    for _ in range(2):
        summary = run_phase1(spec, new_run_dir(spec.output.dir, spec.name), shared_data(spec))
        summaries.append(summary)
        weights.append(load(Path(summary["checkpoint"]) / MODEL_FILE))
    assert summaries[0]["stop_reason"] == "stop_train_accuracy"
    assert summaries[0]["epochs"] < 8
    assert summaries[0]["train_accuracy"] >= 0.6
    assert summaries[0]["history"][-2]["train_accuracy"] < 0.6  # it stopped at the first epoch
    assert [s["epochs"] for s in summaries] == [summaries[0]["epochs"]] * 2
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
