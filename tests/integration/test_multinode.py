"""A two-node Ray cluster on this machine: phase-2 workers land on both nodes, one node is lost,
and the data and the run live only in a bucket of a real S3-compatible server (moto's on
127.0.0.1): no path both nodes read.

Run: pytest tests/integration/test_multinode.py   (needs: pip install 'moto[server]')
"""

from __future__ import annotations

import json
import subprocess
import time

import pyarrow.fs as pafs

from swap import storage

from ..helpers import REPO
from ..ray_cluster import BIN, ray_head, stop
from ..s3_server import S3Server, require_moto, s3_server
from ..stream_data import write_parquet


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
    """Two nodes of two CPUs and one `slot` each; a worker takes a CPU and a slot, so phase 1's
    two ranks and phase 2's two workers run one per node (SPREAD alone is Ray's best effort: in
    one CI run it put both workers on the head), and each node keeps a CPU for Ray Data's tasks,
    which stream the training data (Parquet) from the bucket. SIGKILL the second node (its
    raylet and worker processes) while its worker trains: that worker is rerun on the head from
    its last epoch, and the job finishes, every file (weights and SWAG statistics) in the
    bucket."""
    require_moto()
    with s3_server() as s3:
        for bucket in ("data", "runs"):
            s3.create_bucket(bucket)
        s3.upload(write_parquet(tmp_path / "digits")["train"].parent, "s3://data/digits")
        with ray_head(num_cpus=2, resources='{"slot": 1}', env=s3.env) as head:
            node = head.add_node(num_cpus=2, resources='{"tag_doomed": 1, "slot": 1}')
            env = {**head.env, "RAY_ADDRESS": head.gcs_address}
            nodes = wait_for_nodes(head.gcs_address, 2, env)
            [doomed] = [node_id for node_id, tag in nodes.items() if tag == "tag_doomed"]
            log = tmp_path / "driver.log"
            with log.open("w") as out:
                driver = subprocess.Popen(
                    [str(BIN / "swap"), "run", str(REPO / "configs" / "quickstart.yaml"),
                     "data.dataset=parquet", "data.train_dir=s3://data/digits/train",
                     "data.test_dir=s3://data/digits/test", "phase1.max_epochs=2",
                     "phase2.workers=2", "phase2.epochs=4", "phase2.batch_size=4",
                     "phase1.workers=2", "resources.phase1_cpus_per_worker=1",
                     "resources.cpus_per_worker=1", "resources.custom={slot: 1}",
                     "phase2.swag_rank=2", "phase3.swag_samples=1", "output.dir=s3://runs"],
                    stdout=out, stderr=subprocess.STDOUT, env=env,
                )  # fmt: skip
            victims = wait_for_worker_on(s3, doomed, driver)
            stop(node)  # the whole node: raylet and its worker processes
            driver.wait(timeout=400)
        assert driver.returncode == 0, log.read_text()[-3000:]
        check_results(s3, nodes, doomed, victims)


def check_results(s3: S3Server, nodes: dict, doomed: str, victims: list[int]) -> None:
    fs = s3.filesystem()
    [results_file] = [i.path for i in fs.get_file_info(pafs.FileSelector("runs", recursive=True))
                      if i.path.endswith("/results.json")]  # fmt: skip
    with fs.open_input_stream(results_file) as stream:
        results = json.loads(stream.readall())
    workers = results["phase2"]["workers"]
    assert {w["nodes"][0] for w in workers} == set(nodes)  # one worker per node
    for index in victims:
        assert workers[index]["status"] == "finished"
        assert workers[index]["attempts"] == 2
        assert workers[index]["nodes"] == [doomed, workers[index]["node_id"]]
        assert workers[index]["node_id"] != doomed
        assert workers[index]["resumed_from_epoch"] >= 1
    run_dir = results["run_dir"]
    assert run_dir.startswith("s3://runs/digits-quickstart/")
    assert results["data"]["streamed_from"]["train"] == "s3://data/digits/train"
    assert results["phase3"]["model"] == storage.join(run_dir, "final", "model.pt")
    written = [
        results["phase3"]["model"],
        storage.join(results["phase1"]["checkpoint"], "model.pt"),
    ]
    assert all("swag" in w for w in workers), [(w["status"], w.get("error")) for w in workers]
    written += [w["checkpoint"] for w in workers] + [w["swag"] for w in workers]
    assert {m["model"] for m in results["phase3"]["models"]} >= {"multiswag", "swag worker 0"}
    for location in written:
        assert location.startswith("s3://runs/")
        assert fs.get_file_info(location.removeprefix("s3://")).type == pafs.FileType.File


def wait_for_worker_on(s3: S3Server, node_id: str, driver: subprocess.Popen) -> list[int]:
    """Poll until a phase-2 worker on `node_id` has committed an epoch; return those workers."""
    fs = s3.filesystem()
    deadline = time.monotonic() + 300
    while True:
        assert driver.poll() is None, "the job ended before phase 2 reached the node"
        assert time.monotonic() < deadline, "no phase-2 worker committed an epoch on the node"
        victims = []
        found = fs.get_file_info(pafs.FileSelector("runs", recursive=True, allow_not_found=True))
        for directory in {i.path.rpartition("/")[0] for i in found if "/phase2/worker-" in i.path}:
            try:
                attempts = json.loads(read(fs, f"{directory}/attempts.json"))
                progress = json.loads(read(fs, f"{directory}/resume.json"))
            except (OSError, ValueError):
                continue
            if attempts["node_id"] == node_id and progress["epoch"] >= 1:
                victims.append(int(directory.rpartition("worker-")[2]))
        if victims:
            return victims
        time.sleep(0.5)


def read(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as stream:
        return stream.readall()
