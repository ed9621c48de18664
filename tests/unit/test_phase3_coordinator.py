"""The coordinator function on its own, without Ray: it drops what it cannot trust.

Run: pytest tests/unit/test_phase3_coordinator.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.optim.swa_utils import AveragedModel, update_bn

import swap
from swap.data.registry import load_splits
from swap.errors import JobFailed
from swap.phases.phase2_worker import phase2_worker
from swap.phases.phase3_coordinator import greedy_soup, phase3_coordinator
from swap.rundir import MODEL_FILE, SWAG_FILE, load_state_dict, save_state_dict
from swap.swag import SwagMoments

from ..helpers import phase1_weights, tiny_spec


def worker_checkpoints(spec, run_dir: Path) -> dict[int, tuple[str, str]]:
    checkpoints = {}
    for index in range(3):
        torch.manual_seed(100 + index)
        saved = save_state_dict(
            swap.build_model(spec).state_dict(), run_dir / f"w{index}" / MODEL_FILE
        )
        checkpoints[index] = (saved.location, saved.sha256)
    return checkpoints


def test_the_coordinator_drops_a_truncated_checkpoint_and_averages_the_rest(tmp_path):
    spec = tiny_spec(tmp_path, phase3={"bn_refresh": False})
    checkpoints = worker_checkpoints(spec, tmp_path)
    bad = Path(checkpoints[1][0])
    bad.write_bytes(bad.read_bytes()[:1000])

    result = phase3_coordinator(spec, load_splits(spec.data), checkpoints, str(tmp_path))
    assert result["averaged_workers"] == [0, 2]
    assert result["dropped"][1].startswith(f"{bad}: checksum mismatch")
    final = load_state_dict(result["model"])
    w0, w2 = (load_state_dict(checkpoints[i][0]) for i in (0, 2))
    torch.testing.assert_close(final["0.weight"], (w0["0.weight"] + w2["0.weight"]) / 2)


def test_the_coordinator_fails_below_min_workers(tmp_path):
    spec = tiny_spec(tmp_path, phase2={"min_workers": 3})
    checkpoints = worker_checkpoints(spec, tmp_path)
    Path(checkpoints[2][0]).unlink()
    with pytest.raises(JobFailed, match="2 of 3 workers finished .*; phase2.min_workers is 3"):
        phase3_coordinator(spec, load_splits(spec.data), checkpoints, str(tmp_path))
    assert not (tmp_path / "final").exists()


def test_greedy_soup_adds_best_first_while_validation_does_not_drop():
    alone = {0: 0.90, 1: 0.95, 2: 0.92, 3: 0.92}  # each worker's own validation accuracy
    # Every soup's validation accuracy, by brute force over the subsets greedy can meet.
    table = {(1,): 0.95, (1, 2): 0.96, (1, 2, 3): 0.955, (0, 1, 2): 0.96}
    asked = []

    def soup_accuracy(indices):
        asked.append(tuple(indices))
        return table[tuple(sorted(indices))]

    soup = greedy_soup(alone, soup_accuracy)
    assert soup["order"] == [1, 2, 3, 0]  # by validation accuracy; a tie goes to the lower index
    assert asked == [(1,), (1, 2), (1, 2, 3), (1, 2, 0)]
    assert soup["chosen"] == [1, 2, 0]  # 3 lowered it (0.955 < 0.96); 0 kept it equal: added
    assert [c["added"] for c in soup["candidates"]] == [True, True, False, True]
    assert soup["val_accuracy"] == 0.96


def test_greedy_soup_and_ensemble_against_independent_computations(tmp_path):
    spec = tiny_spec(tmp_path, phase3={"combine": "greedy", "ensemble": True})
    checkpoints = worker_checkpoints(spec, tmp_path)
    splits = load_splits(spec.data)
    result = phase3_coordinator(spec, splits, checkpoints, str(tmp_path))
    models = {m["model"]: m for m in result["models"]}
    assert set(models) == {"worker 0", "worker 1", "worker 2", "uniform average", "greedy soup",
                           "ensemble"}  # fmt: skip

    def reference(indices: list[int]) -> torch.nn.Module:
        """torch.optim.swa_utils' average and BN refresh of `indices`, in eval mode."""
        members = []
        for i in indices:
            member = swap.build_model(spec)
            member.load_state_dict(load_state_dict(checkpoints[i][0]))
            members.append(member)
        averaged = AveragedModel(members[0], use_buffers=True)
        for member in members:  # the first update copies, the later ones average
            averaged.update_parameters(member)
        train = [
            splits.batch_transform(splits.train_plain[list(range(len(splits.train_plain)))][0])
        ]
        update_bn(train, averaged.module)
        return averaged.module.eval()

    def val_accuracy(model: torch.nn.Module) -> float:
        images, labels = splits.val[list(range(len(splits.val)))]
        with torch.no_grad():
            return (model(splits.batch_transform(images)).argmax(1) == labels).float().mean().item()

    for candidate in result["greedy"]["candidates"]:
        upto = result["greedy"]["order"][: result["greedy"]["order"].index(candidate["worker"]) + 1]
        soup = [i for i in upto if i == candidate["worker"] or i in result["greedy"]["chosen"]]
        assert candidate["soup_val_accuracy"] == pytest.approx(
            val_accuracy(reference(soup)), abs=1.5 / len(splits.val)
        )
    chosen = result["averaged_workers"]
    assert chosen == sorted(result["greedy"]["chosen"])
    final = load_state_dict(result["model"])
    members = [load_state_dict(checkpoints[i][0]) for i in chosen]
    mean = torch.stack([m["0.weight"] for m in members]).double().mean(0).float()
    assert torch.equal(final["0.weight"], mean)

    # The ensemble: each worker's softmax, averaged, argmax; against its recorded accuracy.
    images, labels = splits.test[list(range(len(splits.test)))]
    probabilities = 0
    for i in range(3):
        member = swap.build_model(spec)
        member.load_state_dict(load_state_dict(checkpoints[i][0]))
        with torch.no_grad():
            probabilities = probabilities + member.eval()(splits.batch_transform(images)).softmax(1)
    correct = (probabilities.argmax(1) == labels).float().mean().item()
    assert models["ensemble"]["test"]["accuracy"] == pytest.approx(correct, abs=1.5 / len(labels))
    for name, model in models.items():
        assert 0 <= model["test"]["ece"] <= 1 and model["test"]["count"] == len(labels), name


def test_multiswag_with_one_draw_and_zero_covariance_is_the_ensemble_of_the_means(tmp_path):
    """Statistics of a trajectory that never moved: each worker's posterior is a point, its one
    draw is its weights, and MultiSWAG's predictions are the workers' ensemble's."""
    spec = tiny_spec(
        tmp_path,
        phase2={"swag_rank": 2},
        phase3={"bn_refresh": False, "ensemble": True, "swag_samples": 1},
    )
    checkpoints = worker_checkpoints(spec, tmp_path)
    swag = {}
    for index, (path, _) in checkpoints.items():
        model = swap.build_model(spec)
        model.load_state_dict(load_state_dict(path))
        moments = SwagMoments(model, rank=2)
        for _ in range(3):
            moments.collect(model)
        saved = save_state_dict(moments.state_dict(), tmp_path / f"w{index}" / SWAG_FILE)
        swag[index] = (saved.location, saved.sha256)
    Path(swag[2][0]).write_bytes(b"not statistics")  # a corrupted file costs only its own SWAG

    result = phase3_coordinator(spec, load_splits(spec.data), checkpoints, str(tmp_path), swag=swag)
    models = {m["model"]: m for m in result["models"]}
    assert list(result["swag_dropped"]) == [2]
    assert "swag worker 2" not in models
    for index in (0, 1):
        assert models[f"swag worker {index}"]["test"] == models[f"worker {index}"]["test"]
    # This run's ensemble holds all three workers: the reference is the two-worker one.
    spec_two = tiny_spec(tmp_path, phase3={"bn_refresh": False, "ensemble": True})
    kept = {i: checkpoints[i] for i in (0, 1)}
    plain = phase3_coordinator(spec_two, load_splits(spec.data), kept, str(tmp_path / "b"))
    ensemble = {m["model"]: m for m in plain["models"]}["ensemble"]
    for split in ("test", "val"):
        for key in ("count", "accuracy", "nll", "ece", "brier"):
            assert models["multiswag"][split][key] == pytest.approx(ensemble[split][key], 1e-12)


def test_swag_with_channels_last_and_a_constant_tail_through_a_worker_and_the_coordinator(
    tmp_path,
):
    """NHWC weights (model.channels_last) through a real phase-2 worker collecting SWAG after
    40% of its steps under the swa schedule, then phase 3 drawing from it: every draw loaded,
    BN-refreshed and scored. 20 steps an epoch, 60 in all: snapshots after steps 40 and 60."""
    spec = tiny_spec(
        tmp_path,
        model={"channels_last": True},
        phase2={
            "epochs": 3,
            "swag_rank": 2,
            "swag_start": 0.4,
            "schedule": "swa",
            "swa_lr": 0.01,
        },  # fmt: skip
        phase3={"swag_samples": 2},
    )
    splits = load_splits(spec.data)
    weights, digest = phase1_weights(spec, tmp_path / "p1")
    worker = phase2_worker(spec, 0, splits, weights, str(tmp_path), phase1_sha256=digest)
    assert worker["swag_snapshots"] == 2
    assert [h["lr"] for h in worker["history"]][2] == pytest.approx(0.01)  # the tail, from 24
    result = phase3_coordinator(
        spec, splits, {0: (worker["checkpoint"], worker["sha256"])}, str(tmp_path),
        swag={0: (worker["swag"], worker["swag_sha256"])},
    )  # fmt: skip
    scored = {m["model"]: m["test"] for m in result["models"]}
    assert result["swag_dropped"] == {}
    assert scored["swag worker 0"]["count"] == scored["multiswag"]["count"] == len(splits.test)
    assert scored["swag worker 0"]["accuracy"] > 0.5
