"""A two-node Ray cluster on this machine: phase-2 workers land on both nodes, and every file
goes to the run's shared storage (a file:// URI). Run: pytest tests/test_multinode.py
"""

from __future__ import annotations

import json
import subprocess
import time

from swap import storage

from .conftest import REPO
from .ray_cluster import BIN, ray_head


def wait_for_nodes(gcs_address: str, count: int, env: dict[str, str]) -> None:
    script = (
        "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
        "print(len([n for n in ray.nodes() if n['Alive']]))"
    )
    deadline = time.monotonic() + 60
    while True:
        out = subprocess.run(
            [str(BIN / "python"), "-c", script, gcs_address], capture_output=True, text=True,
            env=env,
        )  # fmt: skip
        if out.stdout.strip() == str(count) or time.monotonic() > deadline:
            assert out.stdout.strip() == str(count), out.stderr[-2000:]
            return
        time.sleep(1)


def test_phase2_spreads_over_two_nodes_and_writes_to_shared_storage(tmp_path):
    shared = f"file://{tmp_path}/shared"
    with ray_head(num_cpus=1) as head:
        head.add_node(num_cpus=1)
        env = {**head.env, "RAY_ADDRESS": head.gcs_address}
        wait_for_nodes(head.gcs_address, 2, env)
        proc = subprocess.run(
            [str(BIN / "swap"), "run", str(REPO / "configs" / "quickstart.yaml"),
             "phase1.max_epochs=2", "phase2.workers=4", "phase2.epochs=1",
             "resources.cpus_per_worker=0.5", f"output.dir={shared}"],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [results_file] = (tmp_path / "shared").glob("*/*/results.json")
    results = json.loads(results_file.read_text())
    run_dir = results["run_dir"]
    assert run_dir.startswith(f"{shared}/digits-quickstart/")
    nodes = {w["node_id"] for w in results["phase2"]["workers"]}
    assert len(nodes) == 2
    assert results["phase3"]["model"] == storage.join(run_dir, "final", "model.pt")
    assert storage.exists(results["phase3"]["model"])
    for w in results["phase2"]["workers"]:
        assert w["checkpoint"].startswith(shared) and storage.exists(w["checkpoint"])
    assert storage.exists(results["phase1"]["checkpoint"])
