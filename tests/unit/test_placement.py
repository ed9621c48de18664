"""What the driver asks of the cluster beside phase 1: phase 2's warm-up processes, on CPUs
phase 1 leaves free, and the free CPU a streamed data set needs (checked before any run)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from swap import driver
from swap.errors import SwapError
from swap.phases import placement
from swap.phases.phase2 import warm_up_count

from ..helpers import tiny_spec


def spec_of(tmp_path, phase1_workers, phase1_cpus, phase2_workers=4, **data):
    return tiny_spec(
        tmp_path,
        phase1={"workers": phase1_workers, "batch_size": 96},
        phase2={"workers": phase2_workers},
        resources={"cpus_per_worker": 1, "phase1_cpus_per_worker": phase1_cpus},
        **({"data": data} if data else {}),
    )


@pytest.mark.parametrize(
    ("cluster_cpus", "phase1", "beside_phase1", "expected"),
    [
        (2, (1, 2), True, 0),  # phase 1 uses both cores: no warm-up to slow its start
        (2, (2, 1), True, 0),
        (4, (1, 2), True, 2),  # the 2 CPUs phase 1 leaves
        (16, (2, 1), True, 4),  # as many as phase 2 runs at once, no more
        (16, (2, 4), True, 4),
        (2, (1, 2), False, 2),  # phase 1 finished in an earlier attempt: every slot
        (3, (2, 1), True, 1),
    ],
)
def test_phase2_warms_up_only_on_cpus_phase1_leaves_free(
    tmp_path, cluster_cpus, phase1, beside_phase1, expected
):
    spec = spec_of(tmp_path, *phase1)
    cluster = {"CPU": float(cluster_cpus), "memory": 1e10}
    assert warm_up_count(spec, cluster, beside_phase1) == expected


def test_a_fractional_phase1_leaves_only_whole_cpus_to_warm_up_on(tmp_path):
    spec = spec_of(tmp_path, 3, 0.5)  # 1.5 CPUs of 2 held: half a CPU is no process's
    assert warm_up_count(spec, {"CPU": 2.0}, beside_phase1=True) == 0
    assert warm_up_count(spec, {"CPU": 3.0}, beside_phase1=True) == 1


def test_a_stream_with_no_cpu_left_for_ray_data_names_the_field(tmp_path, monkeypatch):
    monkeypatch.setattr(placement.ray, "cluster_resources", lambda: {"CPU": 2.0})
    spec = spec_of(tmp_path, 1, 2)
    with pytest.raises(SwapError) as raised:
        placement.check_stream_cpus(spec)
    message = str(raised.value)
    assert message.startswith("resources.phase1_cpus_per_worker: phase 1's 1 ranks x 2 CPUs")
    assert "hold 2 of the cluster's 2 CPUs" in message and "\n" not in message
    placement.check_stream_cpus(spec_of(tmp_path, 2, 0.5))  # one CPU free: no error


class Stop(Exception):
    pass


def test_the_driver_warms_phase2_beside_phase1_only_while_phase1_has_to_run(monkeypatch, tmp_path):
    """A new run warms phase 2 beside phase 1 (on the CPUs it leaves free); a resumed run whose
    phase 1 finished has every slot."""
    asked: list[bool] = []

    def record(spec, data, beside_phase1):
        asked.append(beside_phase1)
        return []

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(driver, "connect_ray", lambda log_to_driver: None)
    monkeypatch.setattr(driver, "check_gpus", lambda spec, console: None)
    monkeypatch.setattr(driver, "check_phase1_fits", lambda spec, console: None)
    monkeypatch.setattr(driver, "share_data", lambda splits: "the data")
    monkeypatch.setattr(driver.metrics, "scrape_hint", lambda labels: "metrics")
    monkeypatch.setattr(driver, "finished_and_intact", lambda spec, run_dir: None)
    monkeypatch.setattr(driver, "start_phase2_processes", record)
    monkeypatch.setattr(driver, "run_phase1", stop)
    monkeypatch.setattr(driver, "run_phase2", stop)
    spec = tiny_spec(tmp_path)
    with pytest.raises(Stop):
        driver.run_job(spec, Console(file=io.StringIO()), verbose=True)
    assert asked == [True]

    run_dir = tmp_path / "earlier"
    run_dir.mkdir()
    done_phase1 = {"run_id": "r", "phase1": {"checkpoint": str(run_dir), "sha256": "0" * 64}}
    monkeypatch.setattr(driver, "open_run", lambda spec, resume: (str(run_dir), done_phase1))
    with pytest.raises(Stop):
        driver.run_job(spec, Console(file=io.StringIO()), resume=str(run_dir), verbose=True)
    assert asked == [True, False]


def test_a_streamed_set_keeps_a_cpu_for_ray_data_out_of_the_warm_up(tmp_path):
    spec = spec_of(tmp_path, 1, 2, dataset="parquet", train_dir="s3://d/train",
                   test_dir="s3://d/test")  # fmt: skip
    assert warm_up_count(spec, {"CPU": 4.0}, beside_phase1=True) == 1  # 4 - 2 - 1


def nodes(*cpus: float) -> list[dict]:
    return [{"Alive": True, "Resources": {"CPU": c}, "NodeID": str(i)} for i, c in enumerate(cpus)]


def test_a_phase1_rank_no_node_can_hold_stops_a_local_run_naming_the_field(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(placement.ray, "nodes", lambda: nodes(1, 1))  # 2 CPUs, but 1 a node
    out = io.StringIO()
    with pytest.raises(SwapError) as raised:
        placement.check_phase1_fits(spec_of(tmp_path, 1, 2), Console(file=out))
    assert str(raised.value) == (
        "resources.phase1_cpus_per_worker: a phase-1 rank asks for 2 CPUs, and the largest node "
        "of this Ray has 1: lower resources.phase1_cpus_per_worker to this machine's CPUs"
    )
    placement.check_phase1_fits(spec_of(tmp_path, 2, 1), Console(file=out))  # 1 CPU a rank
    assert out.getvalue() == ""


def test_on_a_cluster_a_rank_no_node_can_hold_yet_is_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # an autoscaler may add such a node
    monkeypatch.setattr(placement.ray, "nodes", lambda: nodes(0, 1))
    out = io.StringIO()
    placement.check_phase1_fits(spec_of(tmp_path, 1, 2), Console(file=out, width=300))
    assert "phase 1 waits until such a node joins" in out.getvalue()
