"""Streamed data (Ray Data, from a local S3 server) against the in-memory path, on the same
Fashion-MNIST rows: samples/s of each phase, time to the first step, and the driver's peak RSS
at three sizes of the training set.

Run: .venv/bin/python bench/streamed.py [--sizes 15000,30000,60000] [--repeats 3]

Both arms run `swap run` on the Fashion-MNIST recipe (short: phase1.max_epochs=2, two phase-2
workers of 2 epochs) against one Ray head on this machine, the driver a process of its own
whose peak RSS (VmHWM) is read from /proc. The in-memory arm reads Debian's Fashion-MNIST files
(data.dataset: fashion_mnist); the streamed arm reads the same images, written as Parquet shards
of PNG bytes to moto's S3 server on 127.0.0.1 (data.dataset: parquet), with its run directory
in a bucket too. Half a CPU per worker, so phase 1 leaves a CPU free for Ray Data's tasks (the
in-memory arm the same, for a like-for-like comparison). Needs: apt-get install
dataset-fashion-mnist; pip install 'moto[server]'.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from measure import RESULTS, describe_machine, machine, step_began, summary, write_results
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the tests' S3 server and Ray head (tests/s3_server.py)

from tests.ray_cluster import ray_head  # noqa: E402
from tests.s3_server import s3_server  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist"
COMMON = [
    "phase1.max_epochs=2",
    "phase2.workers=2",
    "phase2.epochs=2",
    "phase1.workers=2",  # as measured in section 8, and leaving Ray Data a CPU
    "resources.phase1_cpus_per_worker=0.5",
    "resources.cpus_per_worker=0.5",
]


def main() -> None:
    args = arguments()
    host = machine()
    print(describe_machine(host))
    sizes = [int(x) for x in args.sizes.split(",")]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="swap-streamed-") as scratch, s3_server() as s3:
        for bucket in ("data", "runs"):
            s3.create_bucket(bucket)
        for size in sizes:
            write_fashion(Path(scratch) / f"n{size}", size)
            s3.upload(Path(scratch) / f"n{size}", f"s3://data/n{size}")
        with ray_head(num_cpus=2, env=s3.env) as head:
            env = {**head.env, "RAY_ADDRESS": head.gcs_address}
            # The driver's RSS at each size (streamed), then both arms alternating at the
            # largest, the in-memory one (Debian's files) being all 60,000 rows.
            jobs = [("streamed", size, 0) for size in sizes if size != max(sizes)]
            jobs += [(arm, max(sizes), k) for k in range(args.repeats)
                     for arm in ("in-memory", "streamed")]  # fmt: skip
            for arm, size, seed in jobs:
                record = one_job(arm, size, env, scratch, seed)
                runs.append(record)
                print(json.dumps(record), flush=True)
    table = summarize(runs, sizes)
    print_table(table)
    write_results(RESULTS / "streamed.json", host, table=table, runs=runs)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="15000,30000,60000", help="training rows")
    parser.add_argument("--repeats", type=int, default=3, help="jobs per arm at the largest size")
    return parser.parse_args()


def write_fashion(root: Path, size: int) -> None:
    """The first `size` Fashion-MNIST training images (and all 10,000 test ones) as Parquet
    shards of 5,000 PNG-encoded rows, under root/train and root/test."""
    from swap.data.files import FILE_DATASETS, _read

    dataset = FILE_DATASETS["fashion_mnist"]
    for split, count in (("train", size), ("test", 10_000)):
        images, labels = _read(dataset, Path(FASHION), train=split == "train")
        folder = root / split
        folder.mkdir(parents=True)
        for start in range(0, count, 5_000):
            part = slice(start, min(count, start + 5_000))
            table = pa.table({"image": [png(i) for i in images[part]],
                              "label": labels[part].astype(np.int64)})  # fmt: skip
            pq.write_table(table, folder / f"part-{start // 5_000}.parquet")


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image[0]).save(buffer, format="PNG")
    return buffer.getvalue()


def one_job(arm: str, size: int, env: dict[str, str], scratch: str, seed: int) -> dict[str, Any]:
    """One `swap run` of `arm` on `size` training rows: its phases' samples/s, its time to the
    first step, its driver's peak RSS. The in-memory arm is Debian's files, all 60,000 rows."""
    if arm == "streamed":
        data = ["data.dataset=parquet", f"data.train_dir=s3://data/n{size}/train",
                f"data.test_dir=s3://data/n{size}/test", "output.dir=s3://runs/bench"]  # fmt: skip
        return run_swap(arm, size, [*data, *COMMON, f"seed={seed}"], env,
                        lambda uri: s3_json(env, uri))  # fmt: skip
    data = [f"data.root={FASHION}", f"output.dir={scratch}/runs"]
    return run_swap(arm, size, [*data, *COMMON, f"seed={seed}"], env,
                    lambda path: json.loads(Path(path).read_text()))  # fmt: skip


def run_swap(arm: str, size: int, overrides: list[str], env: dict, read) -> dict[str, Any]:
    config = REPO / "configs" / "fashion_mnist_mlp.yaml"
    started = time.time()
    process = subprocess.Popen([str(REPO / ".venv" / "bin" / "swap"), "run", str(config),
                                *overrides], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    peak = 0
    while process.poll() is None:
        peak = max(peak, vm_hwm(process.pid))
        time.sleep(0.2)
    output = process.stdout.read() if process.stdout else ""
    if process.returncode != 0:
        raise RuntimeError(f"{arm} {size}: swap run failed:\n{output[-3000:]}")
    line = next(x for x in output.splitlines() if ": run directory " in x)
    results = read(line.split(": run directory ")[1].strip() + "/results.json")
    first = results["phase1"]["history"][0]
    workers = results["phase2"]["workers"]
    return {
        "arm": arm,
        "size": size,
        "seed": overrides[-1],
        "phase1_samples_per_second": results["phase1"]["samples_per_second"],
        "phase2_samples_per_second": statistics.fmean(w["samples_per_second"] for w in workers),
        "first_step_seconds": step_began(first) - started,
        "total_seconds": time.time() - started,
        "driver_peak_rss_mib": peak / 1024,
        "test_accuracy": results["phase3"]["test_accuracy"],
    }


def vm_hwm(pid: int) -> int:
    """A process's peak resident set size so far, in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def s3_json(env: dict[str, str], uri: str) -> dict[str, Any]:
    script = ("import sys, json; from swap.rundir import read_json; "
              "print(json.dumps(read_json(sys.argv[1])))")  # fmt: skip
    out = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c", script, uri], env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout)


def summarize(runs: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    measured = ("phase1_samples_per_second", "phase2_samples_per_second", "first_step_seconds",
                "driver_peak_rss_mib", "test_accuracy")  # fmt: skip
    table: dict[str, Any] = {}
    for size in sizes:
        for arm in ("in-memory", "streamed"):
            chosen = [r for r in runs if r["arm"] == arm and r["size"] == size]
            if chosen:
                table[f"{arm} {size}"] = {k: summary([r[k] for r in chosen]) for k in measured}
    largest = max(sizes)
    table["phase2_ratio_streamed_to_in_memory"] = (
        table[f"streamed {largest}"]["phase2_samples_per_second"]["median"]
        / table[f"in-memory {largest}"]["phase2_samples_per_second"]["median"]
    )
    return table


def print_table(table: dict[str, Any]) -> None:
    print(f"\n{'arm, training rows':<22} {'n':>2} {'phase 1 samples/s':>18} "
          f"{'phase 2 samples/s':>18} {'first step s':>13} {'driver RSS MiB':>15}")  # fmt: skip
    for name, row in table.items():
        if not isinstance(row, dict):
            continue
        cells = [row[k] for k in ("phase1_samples_per_second", "phase2_samples_per_second",
                                  "first_step_seconds", "driver_peak_rss_mib")]  # fmt: skip
        print(f"{name:<22} {cells[0]['n']:>2} " + " ".join(
            f"{c['median']:>12.0f} ±{c['std']:>4.0f}" for c in cells))  # fmt: skip
    print(
        f"phase-2 samples/s, streamed / in-memory (medians, largest size): "
        f"{table['phase2_ratio_streamed_to_in_memory']:.2f}"
    )


if __name__ == "__main__":
    main()
