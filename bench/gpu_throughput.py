"""Images/s of each phase of a swap job against a plain PyTorch loop, on CIFAR-shaped synthetic
data (no download): ResNet-20, one process per GPU in phase 1, two workers per GPU in phase 2.

Run: .venv/bin/python bench/gpu_throughput.py        (bench/gpu_check.sh runs it after the tests)
     .venv/bin/python bench/gpu_throughput.py --device cpu --epochs 2   (a smoke run on a CPU)
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from measure import RESULTS, describe_machine, machine, write_results
from rich.console import Console

from swap.driver import run_job
from swap.models.cifar import cifar_resnet
from swap.spec import load_spec

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.custom_code: the synthetic data set, for Ray's workers too


def main() -> None:
    args = arguments()
    from tests.custom_code import cifar_shaped  # after sys.path has the repository

    host = machine()
    print(describe_machine(host))
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    ranks = max(1, gpus)
    train, _ = cifar_shaped(train=args.examples)
    plain = {
        "phase1": plain_images_per_second(train, args.phase1_batch, args),
        "phase2": plain_images_per_second(train, args.phase2_batch, args),
    }
    swapped = swap_images_per_second(args, ranks)
    rows = {
        "phase 1, per rank": (swapped["phase1_per_rank"], plain["phase1"]),
        "phase 2, per device (2 workers)": (swapped["phase2_per_device"], plain["phase2"]),
    }
    print(f"{'what':<34} {'swap img/s':>11} {'plain img/s':>12} {'ratio':>6}")
    for label, (ours, theirs) in rows.items():
        print(f"{label:<34} {ours:>11.0f} {theirs:>12.0f} {ours / theirs:>6.2f}")
    ratios = [f"{label}: {ours / theirs:.2f}x plain" for label, (ours, theirs) in rows.items()]
    write_results(args.out / "gpu_throughput.json", host, device=args.device, ranks=ranks,
                  plain=plain, swap=swapped, summary=ratios)  # fmt: skip


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument(
        "--epochs", type=int, default=4, help="at least 2: the first (warm-up) is not timed"
    )
    parser.add_argument("--examples", type=int, default=20_000)
    parser.add_argument("--phase1-batch", type=int, default=512, help="per rank")
    parser.add_argument("--phase2-batch", type=int, default=128, help="per worker")
    parser.add_argument("--amp", default="bf16", choices=["none", "bf16"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs: at least 2 (the first epoch is not timed)")
    return args


def plain_images_per_second(train, batch: int, args: argparse.Namespace) -> float:
    """The loop a user would write: tensors on the device, SGD, autocast; median of epochs 2+."""
    device = torch.device(args.device)
    images, labels = (t.to(device) for t in train.tensors)
    torch.manual_seed(0)
    model = cifar_resnet(20, 3, 10).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    dtype = torch.bfloat16 if args.amp == "bf16" else None
    rates = []
    for _ in range(args.epochs):
        order = torch.randperm(len(labels), device=device)
        started = time.perf_counter()
        steps = len(labels) // batch
        for step in range(steps):
            index = order[step * batch : (step + 1) * batch]
            x = images[index].contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(model(x).float(), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(steps * batch / (time.perf_counter() - started))
    return statistics.median(rates[1:])


def swap_images_per_second(args: argparse.Namespace, ranks: int) -> dict[str, float]:
    gpu = args.device == "cuda"
    overrides = [
        "data.dataset=tests.custom_code:cifar_shaped", "data.val_fraction=0.1",
        "model.arch=resnet20", "model.channels_last=true", f"resources.amp={args.amp}",
        f"resources.use_gpu={str(gpu).lower()}", "resources.gpus_per_worker=0.5",
        f"phase1.workers={ranks}", f"phase1.batch_size={args.phase1_batch * ranks}",
        "phase1.warmup_epochs=1", f"phase1.max_epochs={args.epochs}",
        f"phase2.workers={2 * ranks}", f"phase2.batch_size={args.phase2_batch}",
        f"phase2.epochs={args.epochs}", "phase3.batch_size=512",
        f"resources.cpus_per_worker={0.5 if gpu else 1}",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="swap-gpu-") as scratch:
        spec = load_spec(
            REPO / "configs" / "quickstart.yaml", [*overrides, f"output.dir={scratch}"]
        )
        done = run_job(spec, Console(file=io.StringIO()))
    timed = done["phase1"]["history"][1:]
    phase1 = statistics.median(h["samples"] / h["seconds"] for h in timed) / ranks
    per_worker = [
        statistics.median(h["samples"] / h["seconds"] for h in w["history"][1:])
        for w in done["phase2"]["workers"]
    ]
    # Two workers share each device: their rates add up to what the device does.
    return {"phase1_per_rank": phase1, "phase2_per_device": 2 * statistics.median(per_worker)}


if __name__ == "__main__":
    main()
