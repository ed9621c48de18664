"""One epoch of SGD and one evaluation pass: the loops every phase shares, with no Ray in them.

Run: imported by swap.phase1, swap.phase2 and swap.phase3.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class EpochStats:
    """Sums over a pass, so passes on several workers add up before dividing."""

    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(1, self.count)

    @property
    def accuracy(self) -> float:
        return self.correct / max(1, self.count)

    def as_tensor(self) -> Tensor:
        return torch.tensor([self.loss_sum, self.correct, self.count], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, sums: Tensor) -> EpochStats:
        loss_sum, correct, count = sums.tolist()
        return cls(loss_sum, round(correct), round(count))


def sgd(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
) -> EpochStats:
    """One pass of SGD over `batches`, stepping the LR scheduler after every optimizer step."""
    model.train()
    stats = EpochStats()
    for batch in batches:
        logits, targets, loss = _forward(model, batch, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        _accumulate(stats, logits, targets, loss)
    return stats


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device
) -> EpochStats:
    model.eval()
    stats = EpochStats()
    for batch in batches:
        _accumulate(stats, *_forward(model, batch, device))
    return stats


def epoch_record(epoch: int, stats: EpochStats, lr: float, seconds: float) -> dict[str, Any]:
    """One epoch of training as results.json keeps it (`lr` is the epoch's starting LR)."""
    return {
        "epoch": epoch,
        "train_loss": stats.loss,
        "train_accuracy": stats.accuracy,
        "lr": lr,
        "seconds": seconds,
        "samples": stats.count,
    }


def progress_line(who: str, record: dict[str, Any], epochs: int) -> str:
    return (
        f"{who}  epoch {record['epoch']:>3}/{epochs}  loss {record['train_loss']:.4f}  "
        f"train acc {record['train_accuracy']:6.2%}  lr {record['lr']:.4f}  "
        f"{record['seconds']:5.1f}s"
    )


def _forward(
    model: nn.Module, batch: tuple[Tensor, Tensor], device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    inputs, targets = batch
    inputs = inputs.to(device, non_blocking=True)
    targets = targets.to(device, non_blocking=True)
    logits = model(inputs)
    return logits, targets, F.cross_entropy(logits, targets)


def _accumulate(stats: EpochStats, logits: Tensor, targets: Tensor, loss: Tensor) -> None:
    n = len(targets)
    # .item() syncs with the device once per step; cheap next to the step on CPU and small GPUs.
    stats.loss_sum += loss.item() * n
    stats.correct += int((logits.argmax(dim=1) == targets).sum().item())
    stats.count += n
