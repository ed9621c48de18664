"""What augmentation costs a phase-2 worker now that it runs on whole batches on the device:
training samples/s with `data.augment: true` against `false`, the rest the same (target 0.9).

Run: .venv/bin/python bench/augment.py [--repeats 5] [--epochs 4]

One worker, in this process, one torch thread (as a Ray task at 1 CPU runs), on two data sets:
the quickstart's digits (1-pixel shifts) and CIFAR-shaped images in CIFAR-10's file format
(4-pixel pad-and-crop and flips; 5,000 random images, written here: no download).
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from measure import RESULTS, describe_machine, machine, mean_std, summary, write_results

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.helpers: the tiny spec and phase-1 weights

WORKLOADS = {
    "digits (shift 1)": {"phase2": {"batch_size": 32}},
    "CIFAR-shaped (crop 4, flip)": {"phase2": {"batch_size": 128}, "data": {"dataset": "cifar10"}},
}


def main() -> None:
    args = arguments()
    torch.set_num_threads(1)
    host = machine()
    print(describe_machine(host))
    rows: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="swap-augment-") as scratch:
        root = write_cifar_shaped(Path(scratch) / "cifar", 5000)
        for repeat in range(1, args.repeats + 1):
            for workload, sections in WORKLOADS.items():
                for augment in (True, False) if repeat % 2 else (False, True):  # ABBA
                    rate = samples_per_second(sections, augment, root, args, Path(scratch))
                    rows.setdefault(workload, {}).setdefault(str(augment), []).append(rate)
            print(f"repeat {repeat}: {rows}")
    ratios = {}
    for workload, by in rows.items():
        on, off = summary(by["True"]), summary(by["False"])
        ratios[workload] = on["median"] / off["median"]
        print(f"{workload:<30} augment on {mean_std(on, digits=0)} samples/s, off "
              f"{mean_std(off, digits=0)} (n {on['n']}); on / off (medians) "
              f"{ratios[workload]:.3f} (target 0.9)")  # fmt: skip
    write_results(args.out / "augment.json", host, measurements=rows, ratios=ratios)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4, help="the first is not counted")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


def samples_per_second(
    sections: dict, augment: bool, root: Path, args: argparse.Namespace, scratch: Path
) -> float:
    from swap.data.registry import load_splits
    from swap.phases.phase2_worker import phase2_worker
    from tests.helpers import phase1_weights, tiny_spec

    data = {**sections.get("data", {}), "augment": augment}
    if data.get("dataset") == "cifar10":
        data["root"] = str(root)
    run = Path(tempfile.mkdtemp(dir=scratch))
    spec = tiny_spec(run, data=data, phase2={**sections["phase2"], "epochs": args.epochs})
    weights, digest = phase1_weights(spec, run / "p1")
    result = phase2_worker(spec, 0, load_splits(spec.data), weights, str(run), None, digest)
    return statistics.median(h["samples"] / h["seconds"] for h in result["history"][1:])


def write_cifar_shaped(root: Path, n: int) -> Path:
    """`n` random 32x32 RGB images as CIFAR-10's pickled batches (five training, one test)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per = n // 5
    for name, count in [*[(f"data_batch_{i}", per) for i in range(1, 6)], ("test_batch", per)]:
        batch = {"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, count).tolist()}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({"label_names": [str(i) for i in range(10)]})
    )
    return root


if __name__ == "__main__":
    main()
