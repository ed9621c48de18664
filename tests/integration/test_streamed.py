"""Data where users keep it: jobs that stream their training data with Ray Data from a real
S3-compatible server on 127.0.0.1 (moto's: tests/s3_server.py), as Parquet shards and as image
files, with their run directory in the same server; what goes wrong there, named in one line.

Run: pytest tests/integration/test_streamed.py   (needs: pip install 'moto[server]')

The jobs run against one Ray head started with the server's credentials in its environment, as
a cluster's nodes would have them; each `swap run` joins it (RAY_ADDRESS). The two-node case is
tests/integration/test_multinode.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
import torch

import swap as swap_package
from swap.data.registry import prepare_data
from swap.phases.phase2_worker import phase2_worker

from ..helpers import QUICKSTART, SWAP, Interrupt, StopAfter, phase1_weights, tiny_spec
from ..ray_cluster import ray_head
from ..s3_server import S3Server, require_moto, s3_server
from ..stream_data import write_images, write_parquet

# Small and quick; half a CPU per worker leaves one of the head's two for Ray Data's tasks.
# Two phase-1 ranks: Ray Train splits the stream over them.
QUICK = [
    "phase1.max_epochs=2",
    "phase1.workers=2",
    "resources.phase1_cpus_per_worker=0.5",
    "phase2.workers=2",
    "phase2.epochs=1",
    "resources.cpus_per_worker=0.5",
    "output.dir=s3://runs/jobs",
]
PARQUET = [
    "data.dataset=parquet",
    "data.train_dir=s3://data/digits/train",
    "data.test_dir=s3://data/digits/test",
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The S3 server with the data written to it, and a Ray head whose processes reach it."""
    require_moto()
    local = tmp_path_factory.mktemp("data")
    with s3_server() as s3:
        for bucket in ("data", "runs"):
            s3.create_bucket(bucket)
        write_parquet(local / "digits")
        write_images(local / "images", limit=120)
        labels = np.arange(1437) % 10
        labels[[3, 700]] = [12, -1]
        write_parquet(local / "bad-labels", **{"train:label": labels})
        damaged = write_parquet(local / "bad-image")["train"] / "part-0.parquet"
        damaged.write_bytes(damaged.read_bytes().replace(b"IDAT", b"IDAX", 1))
        for name in ("digits", "images", "bad-labels", "bad-image"):
            s3.upload(local / name, f"s3://data/{name}")
        with ray_head(num_cpus=2, env=s3.env) as head:
            yield s3, {**head.env, "RAY_ADDRESS": head.gcs_address}


def swap(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SWAP), *args], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def read_json(s3: S3Server, uri: str) -> dict:
    with s3.filesystem().open_input_stream(uri.removeprefix("s3://")) as stream:
        return json.loads(stream.readall())


def run_dir_of(done: subprocess.CompletedProcess) -> str:
    line = next(line for line in done.stdout.splitlines() if ": run directory s3://" in line)
    return line.split(": run directory ")[1].strip()


def test_a_job_streams_parquet_from_a_bucket_into_a_bucket(cluster, monkeypatch):
    s3, env = cluster
    done = swap(env, "run", QUICKSTART, *PARQUET, *QUICK, "data.augmentation=crop")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    run = run_dir_of(done)
    results = read_json(s3, f"{run}/results.json")
    assert results["status"] == "finished" and results["phase3"]["averaged_workers"] == [0, 1]
    examples = results["data"]["examples"]
    assert examples["train"] + examples["validation"] == 1437 and examples["test"] == 360
    assert 100 < examples["validation"] < 190  # about 10% of the rows, held out by their key
    assert results["phase3"]["test_accuracy"] > 0.8
    manifest = read_json(s3, f"{run}/manifest.json")
    for path in manifest:  # every checkpoint is in the bucket
        info = s3.filesystem().get_file_info(f"{run.removeprefix('s3://')}/{path}")
        assert info.type == pafs.FileType.File, path

    # What a user does with a run afterwards, on the bucket: report, average, resume.
    report = swap(env, "report", run)
    assert report.returncode == 0 and "SWAP model" in report.stdout, report.stderr[-2000:]
    averaged = swap(env, "average", run)
    assert averaged.returncode == 0, averaged.stderr[-2000:]
    assert "the same as the run's final/model.pt" in " ".join(averaged.stdout.split())
    resumed = swap(env, "run", "--resume", run)
    assert resumed.returncode == 0 and "nothing to do" in resumed.stdout, resumed.stderr[-2000:]
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    model = swap_package.load_model(run)  # from the bucket, its shape from results.json
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_a_job_streams_image_files_from_a_bucket(cluster):
    s3, env = cluster
    done = swap(env, "run", QUICKSTART, "data.dataset=images", "data.image_size=8",
                "data.train_dir=s3://data/images/train", "data.test_dir=s3://data/images/test",
                *QUICK, "phase2.workers=1", "phase1.batch_size=64")  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    results = read_json(s3, f"{run_dir_of(done)}/results.json")
    assert results["status"] == "finished"
    assert results["data"]["classes"] == 10 and results["data"]["examples"]["test"] == 120


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return [line for line in done.stderr.splitlines() if line.startswith("swap: ")]


@pytest.mark.parametrize(
    "overrides, line",
    [
        (
            ["data.train_dir=s3://no-such-bucket/train"],
            "swap: error: data.train_dir: s3://no-such-bucket/train: no such bucket, prefix or "
            "folder",
        ),
        (
            ["data.train_dir=s3://data/nothing/here"],
            "swap: error: data.train_dir: s3://data/nothing/here: no such bucket, prefix or folder",
        ),
        (
            ["data.label_column=digit"],
            "swap: error: data.label_column: no column 'digit' in s3://data/digits/train (its "
            "columns: image, label)",
        ),
        (
            ["data.train_dir=s3://data/bad-labels/train", "data.num_classes=10"],
            "swap: error: data.label_column: train labels -1 and 12 are outside 0..9 (10 classes)",
        ),
        (
            ["data.train_dir=s3://data/bad-image/train"],
            "swap: error: data.image_column: an image in data/bad-image/train/part-0.parquet "
            "cannot be decoded (UnidentifiedImageError)",
        ),
    ],  # fmt: skip
    ids=["missing-bucket", "missing-prefix", "missing-column", "labels", "unreadable-image"],
)
def test_bad_data_in_a_bucket_exits_2_with_one_line_before_phase_1(cluster, overrides, line):
    s3, env = cluster
    done = swap(env, "run", QUICKSTART, *PARQUET, *QUICK, *overrides)
    assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
    assert error_lines(done) == [line] or (
        # Whether a row with label -1 or 12 lands in the validation split depends on its key.
        "labels" in line and len(error_lines(done)) >= 1
        and all("are outside 0..9 (10 classes)" in x for x in error_lines(done))
    ), error_lines(done)  # fmt: skip
    assert "phase 1" not in done.stdout


def test_wrong_credentials_exit_2_naming_the_field(cluster):
    s3, env = cluster
    wrong = {**env, **s3.wrong_secret().env}
    done = swap(wrong, "run", QUICKSTART, *PARQUET, *QUICK)
    assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
    [line] = error_lines(done)
    assert line.startswith("swap: error: data.train_dir: s3://data/digits/train: cannot be read")


def test_a_worker_whose_data_disappears_fails_with_a_storage_error_phase_2_retries(
    local_ray, tmp_path
):
    """The files vanish between two epochs: the worker's next epoch raises an OSError, the
    failure phase 2 retries (retry_exceptions) and --resume runs again, like any storage one."""
    folders = write_parquet(tmp_path / "data")
    spec = tiny_spec(
        tmp_path,
        data={"dataset": "parquet", "train_dir": str(folders["train"]),
              "test_dir": str(folders["test"])},
        phase2={"epochs": 2},
    )  # fmt: skip
    spec, splits = prepare_data(spec)
    weights, digest = phase1_weights(spec, tmp_path / "p1")
    with pytest.raises(Interrupt):
        phase2_worker(spec, 0, splits, weights, str(tmp_path), StopAfter(1), digest)
    shutil.rmtree(folders["train"])
    with pytest.raises(OSError, match=str(folders["train"])):
        phase2_worker(spec, 0, splits, weights, str(tmp_path), phase1_sha256=digest)
    assert Path(tmp_path, "phase2", "worker-0", "resume.json").exists()  # epoch 1 is kept
