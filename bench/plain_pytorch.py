"""SGD in plain PyTorch, the baseline swap's overheads are counted against: one process (on the
CPU or a GPU), or DDP over gloo on N local processes; the data, model and LR schedule of phase 1.

Run: .venv/bin/python bench/plain_pytorch.py --config configs/fashion_mnist_mlp.yaml \
         --batch 64 --lr 0.05 --epochs 10 [--processes 2] [--seed 0] [--device cuda]

What it shares with swap: the splits (`prepare_data`: the same training, validation and test
examples), the model builder, the batch transform and the schedule function. What it leaves
out is everything else: no Ray, no checkpoints, no per-epoch evaluation; the whole training set
is a tensor in memory (on a GPU, in its memory) and each epoch is a permutation of it, the
fastest loop PyTorch allows; the precision is swap's (`resources.amp`, `model.channels_last`).
Wall-clock counts from before the processes start to the final test accuracy; `epoch_seconds`
are rank 0's epochs, each its steps alone.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class Arm:
    """One plain-PyTorch SGD run: `batch` is the global batch (split over `processes`), `lr` its
    peak LR after `warmup_epochs` of linear warm-up, then linear decay to 0 at `epochs`."""

    config: str
    seed: int
    batch: int
    lr: float
    epochs: int
    processes: int = 1
    warmup_epochs: int = 1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    device: str = "cpu"  # or "cuda": one process, the whole data set in the GPU's memory
    overrides: tuple[str, ...] = ()  # dotted key=value, applied to the spec at `config`


def run(arm: Arm) -> dict[str, Any]:
    """Train `arm` and return its test and validation accuracy and wall-clock seconds."""
    started = time.perf_counter()
    if arm.processes == 1:
        result = _train(0, arm, None)
    else:
        queue = mp.get_context("spawn").SimpleQueue()
        mp.spawn(_train, args=(arm, queue), nprocs=arm.processes, join=True)
        result = queue.get()
    return {**result, "seconds": time.perf_counter() - started}


def _train(rank: int, arm: Arm, queue: Any) -> dict[str, Any]:
    from swap.data.registry import prepare_data
    from swap.models.registry import build_model
    from swap.schedules import warmup_linear_decay
    from swap.spec import load_spec
    from swap.training import precision_for, to_memory_format

    world, device = arm.processes, torch.device(arm.device)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if world > 1:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(29_500 + arm.seed % 1000))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    spec, splits = prepare_data(load_spec(arm.config, [*arm.overrides, f"seed={arm.seed}"]))
    raw = splits.train[list(range(len(splits.train)))]  # raw: augmented batch by batch
    train = (raw[0].to(device), raw[1].to(device))
    val, test = (_ready(s, splits.batch_transform, device) for s in (splits.val, splits.test))
    precision = precision_for(spec, device)
    torch.manual_seed(arm.seed)
    model = to_memory_format(build_model(spec.model, splits.info).to(device), precision)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=arm.lr, momentum=arm.momentum, weight_decay=arm.weight_decay
    )
    per_rank = arm.batch // world
    steps_per_epoch = len(train[1]) // arm.batch  # the partial last batch dropped, as swap does
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_linear_decay(
            step, arm.warmup_epochs * steps_per_epoch, arm.epochs * steps_per_epoch
        ),
    )
    order = torch.Generator().manual_seed(arm.seed)  # the same permutation on every rank
    epoch_seconds = []
    for epoch in range(arm.epochs):
        started = time.perf_counter()
        model.train()
        prepare = splits.training_transform(arm.seed * 1000 + epoch, device)
        batches = torch.randperm(len(train[1]), generator=order)[: steps_per_epoch * arm.batch]
        for batch in batches.to(device).view(steps_per_epoch, world, per_rank)[:, rank]:
            inputs = precision.to_input(prepare(train[0][batch]), device)
            _step(model, inputs, train[1][batch].long(), optimizer, precision)
            scheduler.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_seconds.append(time.perf_counter() - started)
    result = {
        "epoch_seconds": epoch_seconds,  # rank 0's: its steps, as swap's epoch `seconds`
        "test_accuracy": _accuracy(model, test, precision),
        "val_accuracy": _accuracy(model, val, precision),
    }
    if world > 1:
        dist.destroy_process_group()
        if rank == 0:
            queue.put(result)
    return result


def _step(model: nn.Module, inputs: Tensor, labels: Tensor, optimizer: Any, precision: Any) -> None:
    """One SGD step, under autocast and fp16's loss scaling as swap's training loop does."""
    dtype = precision.autocast_dtype
    with torch.autocast(inputs.device.type, dtype=dtype, enabled=dtype is not None):
        loss = F.cross_entropy(model(inputs), labels)
    optimizer.zero_grad(set_to_none=True)
    if precision.scaler is None:
        loss.backward()
        optimizer.step()
    else:
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()


def _ready(dataset: Any, transform: Any, device: torch.device) -> tuple[Tensor, Tensor]:
    """A whole in-memory split as (normalized inputs, labels), on `device`."""
    images, labels = dataset[list(range(len(dataset)))]
    return transform(images.to(device)), labels.long().to(device)


@torch.no_grad()
def _accuracy(model: nn.Module, split: tuple[Tensor, Tensor], precision: Any) -> float:
    model.eval()
    inputs, labels = split
    dtype = precision.autocast_dtype
    correct = torch.zeros((), dtype=torch.int64, device=labels.device)
    for x, y in zip(inputs.split(1024), labels.split(1024), strict=True):
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            correct += (model(precision.to_input(x, x.device)).argmax(1) == y).sum()
    return correct.item() / len(labels)  # one read back: the only wait for the device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, required=True, help="global examples per step")
    parser.add_argument("--lr", type=float, required=True, help="peak LR")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--processes", type=int, default=1, help="DDP processes (1: no DDP)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    if args.device == "cuda" and args.processes > 1:
        parser.error("--processes: DDP here runs over gloo on CPUs; on a GPU, one process")
    arm = Arm(args.config, args.seed, args.batch, args.lr, args.epochs, args.processes,
              device=args.device)  # fmt: skip
    print(json.dumps({**asdict(arm), **run(arm)}))


if __name__ == "__main__":
    main()
