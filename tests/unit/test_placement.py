"""What the driver asks of the cluster beside phase 1: phase 2's warm-up processes, on CPUs
phase 1 leaves free, and the free CPU a streamed data set needs (checked before any run)."""

from __future__ import annotations

import pytest

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
