"""Averaging W ResNet-50-sized checkpoints: seconds and peak memory against reading the files and
against torch.optim.swa_utils.AveragedModel; BN refresh time against one plain forward pass.

Run: .venv/bin/python bench/averaging.py [--workers 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from measure import RESULTS, describe_machine, machine, mean_std, summary, write_results

# Each arm ends with the same thing in memory, except the two floors, which only read.
ARMS = {
    "read_files": "read the W files' bytes (the I/O floor)",
    "torch_load": "torch.load each file (weights_only), nothing else",
    "swap": "swap phase 3: model.load_state_dict(average_state_dicts(<mmap'd loads>))",
    "averaged_model": "AveragedModel(model, use_buffers=True), load_state_dict + update_parameters",
}
FLOOR = "read_files"
TARGET_SECONDS, TARGET_MODELS = 1.5, 3.0  # x the floor's seconds; peak memory in models


def main() -> None:
    args = arguments()
    torch.set_num_threads(args.threads)
    if args.arm:  # a child process: one arm, measured alone, from a fresh process
        print(json.dumps(run_arm(args.arm, args.dir)))
        return
    host = machine()
    print(describe_machine(host))
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="swap-averaging-", dir=args.scratch) as directory:
        model_bytes, parameters = write_checkpoints(Path(directory), args.workers)
        print(
            f"{args.workers} checkpoints of torchvision resnet50: {parameters / 1e6:.1f} M "
            f"parameters, {model_bytes / 2**20:.0f} MiB each (float32), in {directory} "
            f"(page cache warm: every arm reads the same files, arms alternate); "
            f"{args.threads} torch thread(s)"
        )
        rows = run_arms(directory, args.repeats, args.threads)
        error_ulps = precision(directory)
    averaging = print_averaging(rows, model_bytes)
    print(f"swap's mean vs the exact (float64) mean: worst error {error_ulps:.2f} float32 ulps "
          "of the largest input at that element")  # fmt: skip
    bn = bn_refresh_times(args)
    write_results(
        args.out / "averaging.json",
        host,
        workers=args.workers,
        parameters=parameters,
        model_bytes=model_bytes,
        arms=ARMS,
        runs=rows,
        averaging=averaging,
        worst_error_ulps=error_ulps,
        bn_refresh=bn,
    )


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8, help="W, checkpoints to average")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bn-images", type=int, default=64, help="images for the BN timing")
    parser.add_argument("--bn-batch", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (phase 3 runs on 1 Ray CPU: 1)"
    )
    parser.add_argument("--scratch", default=None, help="where the W files go (default: /tmp)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--arm", choices=sorted(ARMS), help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    return parser.parse_args()


def resnet50() -> torch.nn.Module:
    import torchvision

    return torchvision.models.resnet50(weights=None)


def write_checkpoints(directory: Path, workers: int) -> tuple[int, int]:
    """W state dicts of one ResNet-50, each perturbed differently, saved the way swap saves
    a phase-2 worker's weights. Returns (bytes of one model's state dict, parameters)."""
    from swap.rundir import save_state_dict

    model = resnet50()
    state = model.state_dict()
    for i in range(workers):
        worker = {
            k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v.clone()
            for k, v in state.items()
        }
        save_state_dict(worker, directory / f"worker-{i}.pt")
    size = sum(v.numel() * v.element_size() for v in state.values())
    return size, sum(p.numel() for p in model.parameters())


def run_arms(directory: str, repeats: int, threads: int) -> list[dict[str, Any]]:
    """Each arm in its own fresh process (so its peak RSS is its own), order rotated per repeat."""
    arms, rows = list(ARMS), []
    for repeat in range(repeats):
        for arm in arms[repeat % len(arms) :] + arms[: repeat % len(arms)]:
            command = [sys.executable, __file__, "--arm", arm, "--dir", directory,
                       "--threads", str(threads)]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            row = {"arm": arm, "repeat": repeat + 1, **json.loads(done.stdout.splitlines()[-1])}
            rows.append(row)
            print(
                f"repeat {repeat + 1}  {arm:<15} {row['seconds']:6.2f}s  "
                f"peak +{row['peak_bytes'] / 2**20:6.0f} MiB",
                flush=True,
            )
    return rows


def rss(field: str) -> int:
    """VmRSS (now) or VmHWM (the peak so far) of this process, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_arm(arm: str, directory: str) -> dict[str, float]:
    """One arm; peak is the process's high-water RSS above its RSS just before the arm."""
    import torchvision  # noqa: F401  (imported before the baseline: not part of any arm)
    from torch.optim.swa_utils import AveragedModel

    from swap.averaging import average_state_dicts
    from swap.rundir import load_state_dict

    paths = sorted(Path(directory).glob("worker-*.pt"))
    # The model that receives the average exists before an averaging arm starts (phase 3
    # builds it first too): neither its construction nor its memory is the averaging's. Nor
    # is torch's first-call set-up: one checkpoint is opened (mapped, not read) beforehand.
    model = resnet50() if arm in ("swap", "averaged_model") else None
    load_state_dict(paths[0])
    before = rss("VmRSS")
    started = time.perf_counter()
    if arm == "read_files":
        for path in paths:
            path.read_bytes()
    elif arm == "torch_load":
        for path in paths:
            torch.load(path, map_location="cpu", weights_only=True)
    elif arm == "swap":
        model.load_state_dict(average_state_dicts(load_state_dict(p) for p in paths))
    else:
        averaged = AveragedModel(model, use_buffers=True)
        for path in paths:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            averaged.update_parameters(model)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_bytes": rss("VmHWM") - before}


def precision(directory: str) -> float:
    """The worst error of swap's average against the exact mean (in float64), per element in
    units of float32 spacing (eps x the largest |input| there)."""
    from swap.averaging import average_state_dicts
    from swap.rundir import load_state_dict

    paths = sorted(Path(directory).glob("*.pt"))
    mean = average_state_dicts(load_state_dict(p) for p in paths)  # as phase 3 does
    states = [torch.load(p, weights_only=True) for p in paths]
    worst = 0.0
    for key, value in mean.items():
        if value.is_floating_point():
            stacked = torch.stack([s[key].double() for s in states])
            spacing = torch.finfo(value.dtype).eps * stacked.abs().amax(0).clamp_min(1e-30)
            error = (value.double() - stacked.mean(0)).abs() / spacing
            worst = max(worst, error.max().item())
    return worst


def print_averaging(rows: list[dict[str, Any]], model_bytes: int) -> dict[str, Any]:
    stats = {
        arm: {
            "seconds": summary([r["seconds"] for r in rows if r["arm"] == arm]),
            "peak_bytes": summary([r["peak_bytes"] for r in rows if r["arm"] == arm]),
        }
        for arm in ARMS
    }
    floor = stats[FLOOR]["seconds"]["median"]
    print(
        f"\n{'arm':<15} {'n':>2}  {'seconds (mean ± std)':>20}  {'median':>7}  {'x floor':>7}  "
        f"{'peak MiB (median)':>17}  {'x model':>7}"
    )
    for arm, s in stats.items():
        sec, peak = s["seconds"], s["peak_bytes"]
        s["x_floor"] = sec["median"] / floor
        s["x_model"] = peak["median"] / model_bytes
        print(
            f"{arm:<15} {sec['n']:>2}  {mean_std(sec):>20}  {sec['median']:7.2f}  "
            f"{s['x_floor']:7.2f}  {peak['median'] / 2**20:17.0f}  {s['x_model']:7.2f}"
        )
    swap = stats["swap"]
    for name, value, target in (
        ("seconds", swap["x_floor"], TARGET_SECONDS),
        ("peak memory", swap["x_model"], TARGET_MODELS),
    ):
        unit = "x the floor" if name == "seconds" else "models"
        met = "meets" if value <= target else "MISSES"
        print(f"swap averaging {name}: {value:.2f} {unit}; target <= {target:g}: {met}")
    ratio = stats["averaged_model"]["seconds"]["median"] / swap["seconds"]["median"]
    print(f"AveragedModel seconds / swap seconds (medians): {ratio:.2f}")
    return stats


def bn_refresh_times(args: argparse.Namespace) -> dict[str, Any]:
    """swap's refresh_bn against one plain no-grad forward pass (eval mode) over the same
    batches, and torch.optim.swa_utils.update_bn for reference; arms alternate."""
    from torch.optim.swa_utils import update_bn

    from swap.bn import refresh_bn

    generator = torch.Generator().manual_seed(0)
    shape = (args.bn_batch, 3, args.image_size, args.image_size)
    batches = [
        (torch.randn(shape, generator=generator), torch.zeros(args.bn_batch, dtype=torch.long))
        for _ in range(args.bn_images // args.bn_batch)
    ]
    model = resnet50()

    def forward() -> None:
        model.eval()
        with torch.no_grad():
            for inputs, _ in batches:
                model(inputs)

    arms = {
        "plain_forward": forward,
        "refresh_bn": lambda: refresh_bn(model, batches),
        "update_bn": lambda: update_bn(batches, model),
    }
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    forward()  # warm-up, untimed
    for repeat in range(args.repeats):
        names = list(arms)
        for arm in names[repeat % 3 :] + names[: repeat % 3]:
            started = time.perf_counter()
            arms[arm]()
            times[arm].append(time.perf_counter() - started)
    stats = {arm: summary(values) for arm, values in times.items()}
    print(
        f"\nBN refresh: {len(batches)} batches of {args.bn_batch} images "
        f"{args.image_size}x{args.image_size}, {torch.get_num_threads()} torch threads"
    )
    plain = stats["plain_forward"]["median"]
    for arm, s in stats.items():
        print(
            f"{arm:<15} {s['n']:>2}  {mean_std(s):>14} s  median {s['median']:.2f} s  "
            f"x plain forward {s['median'] / plain:.2f}"
        )
    return stats


if __name__ == "__main__":
    main()
