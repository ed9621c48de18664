"""A two-node Ray cluster on this machine: phase-2 workers land on both nodes, one node is lost,
and every file goes to the run's shared storage (a file:// URI).

Run: pytest tests/integration/test_multinode.py
"""

from __future__ import annotations

import json
import subprocess
import time

from swap import storage

from ..helpers import REPO
from ..ray_cluster import BIN, ray_head, stop


def wait_for_nodes(gcs_address: str, count: int, env: dict[str, str]) -> dict[str, str]:
    """Poll until `count` nodes are alive; return {node id: its custom resource name or ""}."""
    script = (
        "import json, ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
        "nodes = [n for n in ray.nodes() if n['Alive']]; "
        "print(json.dumps({n['NodeID']: ''.join(k for k in n['Resources'] if k.startswith('tag_'))"
        " for n in nodes}))"
    )
    deadline = time.monotonic() + 60
    while True:
        out = subprocess.run(
            [str(BIN / "python"), "-c", script, gcs_address], capture_output=True, text=True,
            env=env,
        )  # fmt: skip
        nodes = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {}
        if len(nodes) == count:
            return nodes
        assert time.monotonic() < deadline, out.stderr[-2000:]
        time.sleep(1)


def test_phase2_spreads_over_nodes_and_survives_losing_one(tmp_path):
    """Two nodes of one CPU each, the run's storage a file:// URI both reach. A worker takes a
    whole CPU, so phase 1's two ranks and phase 2's two workers run one per node (SPREAD
    alone is Ray's best effort: in one CI run it put both 0.5-CPU workers on the head and
    nothing reached the second node). SIGKILL the second node (its raylet and worker
    processes) while its worker trains: that worker is rerun on the head from its last epoch,
    and the job finishes, every file (weights and SWAG statistics) in the shared storage."""
    shared = f"file://{tmp_path}/shared"
    with ray_head(num_cpus=1) as head:
        node = head.add_node(num_cpus=1, resources='{"tag_doomed": 1}')
        env = {**head.env, "RAY_ADDRESS": head.gcs_address}
        nodes = wait_for_nodes(head.gcs_address, 2, env)
        [doomed] = [node_id for node_id, tag in nodes.items() if tag == "tag_doomed"]
        log = tmp_path / "driver.log"
        with log.open("w") as out:
            driver = subprocess.Popen(
                [str(BIN / "swap"), "run", str(REPO / "configs" / "quickstart.yaml"),
                 "phase1.max_epochs=2", "phase2.workers=2", "phase2.epochs=10",
                 "phase2.batch_size=4", "resources.cpus_per_worker=1",
                 "phase2.swag_rank=2", "phase3.swag_samples=1",
                 f"output.dir={shared}"],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        victims = wait_for_worker_on(tmp_path / "shared", doomed, driver)
        stop(node)  # the whole node: raylet and its worker processes
        driver.wait(timeout=300)
    assert driver.returncode == 0, log.read_text()[-3000:]
    [results_file] = (tmp_path / "shared").glob("*/*/results.json")
    results = json.loads(results_file.read_text())
    workers = results["phase2"]["workers"]
    assert {w["nodes"][0] for w in workers} == set(nodes)  # one worker per node
    for index in victims:
        assert workers[index]["status"] == "finished"
        assert workers[index]["attempts"] == 2
        assert workers[index]["nodes"] == [doomed, workers[index]["node_id"]]
        assert workers[index]["node_id"] != doomed
        assert workers[index]["resumed_from_epoch"] >= 1
    run_dir = results["run_dir"]
    assert run_dir.startswith(f"{shared}/digits-quickstart/")
    assert results["phase3"]["model"] == storage.join(run_dir, "final", "model.pt")
    written = [
        results["phase3"]["model"],
        storage.join(results["phase1"]["checkpoint"], "model.pt"),
    ]
    written += [w["checkpoint"] for w in workers] + [w["swag"] for w in workers]
    assert {m["model"] for m in results["phase3"]["models"]} >= {"multiswag", "swag worker 0"}
    for location in written:
        assert location.startswith(shared) and storage.exists(location)


def wait_for_worker_on(shared, node_id: str, driver: subprocess.Popen) -> list[int]:
    """Poll until a phase-2 worker on `node_id` has committed an epoch; return those workers."""
    deadline = time.monotonic() + 240
    while True:
        assert driver.poll() is None, "the job ended before phase 2 reached the node"
        assert time.monotonic() < deadline, "no phase-2 worker committed an epoch on the node"
        victims = []
        for directory in shared.glob("*/*/phase2/worker-*"):
            try:
                attempts = json.loads((directory / "attempts.json").read_text())
                progress = json.loads((directory / "resume.json").read_text())
            except (OSError, ValueError):
                continue
            if attempts["node_id"] == node_id and progress["epoch"] >= 1:
                victims.append(int(directory.name.removeprefix("worker-")))
        if victims:
            return victims
        time.sleep(0.05)
