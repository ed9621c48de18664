"""One epoch of SGD and one evaluation pass: the loops every phase shares, with no Ray in them.

Run: imported by the phases' workers (swap/phases/).
"""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from swap.errors import DivergenceError
from swap.spec import Spec

SCHEDULER_FIRST = "Detected call of `lr_scheduler.step()` before `optimizer.step()`"
AUTOCAST_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CHECK_EVERY = 32  # steps between looks at the loss, for a worker that stops when it diverges
Prepare = Callable[[Tensor], Tensor]  # a batch of inputs on the device -> ready for the model


@dataclass(frozen=True)
class Precision:
    """How forward passes run: under autocast to `autocast_dtype` (None: float32), with the loss
    scaled by `scaler` (fp16, whose gradients would underflow), on NHWC inputs if
    `channels_last`. The scaler holds state: one Precision per training run."""

    autocast_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    channels_last: bool = False

    def to_input(self, inputs: Tensor, device: torch.device) -> Tensor:
        """`inputs` on `device`, in the memory format the model's weights use."""
        if self.channels_last and inputs.dim() == 4:
            return inputs.to(device, non_blocking=True, memory_format=torch.channels_last)
        return inputs.to(device, non_blocking=True)


FLOAT32 = Precision()


def use_cpus(cpus: float) -> int:
    """torch's intra-op threads in this training process: one per whole Ray CPU it was given
    (at least one). Ray's own default (OMP_NUM_THREADS) is read once, when torch starts, and a
    reused process may have started for a task of another size. Returns the number, for the
    results."""
    threads = max(1, int(cpus))
    torch.set_num_threads(threads)
    return threads


def device_for(spec: Spec) -> torch.device:
    """The device of a phase-2 worker or the coordinator: the GPU Ray gave it, or the CPU.
    (Phase-1 ranks get theirs from Ray Train, one per rank.)"""
    return torch.device("cuda" if spec.resources.use_gpu else "cpu")


def precision_for(spec: Spec, device: torch.device) -> Precision:
    """The spec's `resources.amp` and `model.channels_last`, for a run on `device`."""
    dtype = AUTOCAST_DTYPES[spec.resources.amp]
    scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 else None
    return Precision(dtype, scaler, spec.model.channels_last)


def to_memory_format(model: nn.Module, precision: Precision) -> nn.Module:
    """The model with its 4-D weights in NHWC when `precision.channels_last` (before DDP)."""
    return model.to(memory_format=torch.channels_last) if precision.channels_last else model


@dataclass
class EpochStats:
    """Sums over a pass, so passes on several workers add up before dividing."""

    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0
    nonfinite_step: int | None = None  # the first step (1-based) whose loss was NaN or infinite

    @property
    def loss(self) -> float:
        return self.loss_sum / max(1, self.count)

    @property
    def accuracy(self) -> float:
        return self.correct / max(1, self.count)

    @property
    def accuracy_if_any(self) -> float | None:
        """The accuracy, or None for a pass over no examples (no validation split)."""
        return self.accuracy if self.count else None

    def as_tensor(self, device: torch.device) -> Tensor:
        """The sums as one float64 tensor on `device`, to be reduced over ranks."""
        values = [self.loss_sum, self.correct, self.count]
        return torch.tensor(values, dtype=torch.float64, device=device)

    @classmethod
    def from_tensor(cls, sums: Tensor) -> EpochStats:
        loss_sum, correct, count = sums.tolist()
        return cls(loss_sum, round(correct), round(count))


class Tally:
    """A pass's losses and correct predictions, kept on the device and read back to Python
    by `read` (once per pass, or every CHECK_EVERY steps), not once per step: between steps a
    GPU does not wait for the host (fp16's loss scaler aside, which reads its scale every step).
    The loss is summed in Python floats, step by step in order, exactly as when each step's
    loss was read at once."""

    def __init__(self, device: torch.device):
        self.stats = EpochStats()
        self.steps = 0  # steps read back into `stats`
        self.unread: list[tuple[Tensor, int]] = []  # (a step's mean loss, its batch size)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)

    def add(self, logits: Tensor, targets: Tensor, loss: Tensor) -> None:
        self.unread.append((loss.detach(), len(targets)))
        self.correct += (logits.argmax(dim=1) == targets).sum()

    def read(self) -> EpochStats:
        stats = self.stats
        if self.unread:
            losses, sizes = zip(*self.unread, strict=True)
            self.unread = []
            for value, size in zip(torch.stack(losses).tolist(), sizes, strict=True):
                self.steps += 1
                if stats.nonfinite_step is None and not math.isfinite(value):
                    stats.nonfinite_step = self.steps
                stats.loss_sum += value * size
                stats.count += size
        stats.correct = int(self.correct.item())
        return stats


def sgd(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def resumable_state(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    precision: Precision,
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """What continuing a training run needs besides its weights: the optimizer's momentum, the
    LR schedule's position, fp16's loss scale, and the epochs so far. Both phases save it."""
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    if precision.scaler is not None:
        state["scaler"] = precision.scaler.state_dict()
    return {**state, "history": history}


def load_resumable_state(
    state: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    precision: Precision,
) -> list[dict[str, Any]]:
    """Load what `resumable_state` saved; return the epochs' history."""
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if precision.scaler is not None and "scaler" in state:
        precision.scaler.load_state_dict(state["scaler"])
    return state["history"]


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    precision: Precision = FLOAT32,
    stop_on_nonfinite: bool = False,
    prepare: Prepare | None = None,
    after_step: Callable[[int, Tensor], None] | None = None,
) -> EpochStats:
    """One pass of SGD over `batches`, stepping the LR scheduler after every optimizer step.
    `prepare` makes each batch of inputs ready on the device (a data set's BatchTransform,
    normalizing and augmenting), if its loader does not; `after_step(step, loss)` is called
    after each (the step 1-based within the epoch, the loss a tensor on the device).

    With a loss scaler, a step whose gradients overflowed is skipped (and the scale lowered);
    the schedule still advances, as it counts steps taken over the data. A NaN or infinite loss
    is recorded in `nonfinite_step`; with `stop_on_nonfinite` it raises DivergenceError within
    CHECK_EVERY steps (a DDP rank must not: the other ranks would wait for it forever).
    """
    model.train()
    tally = Tally(device)
    scaler = precision.scaler
    with warnings.catch_warnings():
        # A skipped first step makes the scheduler warn that it stepped before the optimizer.
        warnings.filterwarnings("ignore", re.escape(SCHEDULER_FIRST), UserWarning)
        for step, batch in enumerate(batches, start=1):
            logits, targets, loss = _forward(model, batch, device, precision, prepare)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            scheduler.step()
            tally.add(logits, targets, loss)
            if after_step is not None:
                after_step(step, loss)
            if stop_on_nonfinite and step % CHECK_EVERY == 0:
                _stop_if_nonfinite(tally.read())
    stats = tally.read()
    if stop_on_nonfinite:
        _stop_if_nonfinite(stats)
    return stats


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    device: torch.device,
    precision: Precision = FLOAT32,
    prepare: Prepare | None = None,
) -> EpochStats:
    return predict(model, batches, device, precision, prepare, keep=False)[0]


@torch.no_grad()
def predict(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    device: torch.device,
    precision: Precision = FLOAT32,
    prepare: Prepare | None = None,
    keep: bool = True,
) -> tuple[EpochStats, Tensor | None, Tensor | None]:
    """A pass in eval mode: its statistics and, with `keep`, every example's logits (float32)
    and label in the batches' order, on the CPU (None without `keep`)."""
    model.eval()
    tally = Tally(device)
    logits_kept, targets_kept = [], []
    for batch in batches:
        logits, targets, loss = _forward(model, batch, device, precision, prepare)
        tally.add(logits, targets, loss)
        if keep:
            logits_kept.append(logits.float())
            targets_kept.append(targets)
    if not keep:
        return tally.read(), None, None
    if not logits_kept:  # an empty split (no validation examples)
        return tally.read(), torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return tally.read(), torch.cat(logits_kept).cpu(), torch.cat(targets_kept).cpu()


def ready_inputs(
    batches: Iterable[tuple[Tensor, Any]],
    device: torch.device,
    precision: Precision = FLOAT32,
    prepare: Prepare | None = None,
) -> Iterator[Tensor]:
    """Each batch's inputs on `device`, in the model's memory format, made ready by `prepare`:
    what the BN refresh feeds the model."""
    for inputs, _ in batches:
        inputs = precision.to_input(inputs, device)
        yield inputs if prepare is None else prepare(inputs)


def epoch_record(epoch: int, stats: EpochStats, lr: float, seconds: float) -> dict[str, Any]:
    """One epoch of training as results.json keeps it (`lr` is the epoch's starting LR).

    Built as the epoch ends: `ended_at` (Unix seconds) places it on the job's timeline, so
    start-up and phase transitions can be measured across processes.
    """
    return {
        "epoch": epoch,
        "train_loss": stats.loss,
        "train_accuracy": stats.accuracy,
        "lr": lr,
        "seconds": seconds,
        "samples": stats.count,
        "ended_at": time.time(),
    }


def epoch_line(who: str, record: dict[str, Any], epochs: int) -> str:
    return (
        f"{who}  epoch {record['epoch']:>3}/{epochs}  loss {record['train_loss']:.4f}  "
        f"train acc {record['train_accuracy']:6.2%}  lr {record['lr']:.4f}  "
        f"{record['seconds']:5.1f}s"
    )


def _forward(
    model: nn.Module,
    batch: tuple[Tensor, Tensor],
    device: torch.device,
    precision: Precision,
    prepare: Prepare | None,
) -> tuple[Tensor, Tensor, Tensor]:
    inputs, targets = batch
    inputs = precision.to_input(inputs, device)
    if prepare is not None:
        inputs = prepare(inputs)
    targets = targets.to(device, non_blocking=True)
    dtype = precision.autocast_dtype
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        logits = model(inputs)
    # The loss in float32: a low-precision log-softmax loses the small probabilities.
    return logits, targets, F.cross_entropy(logits.float(), targets)


def _stop_if_nonfinite(stats: EpochStats) -> None:
    if stats.nonfinite_step is not None:
        raise DivergenceError(f"non-finite loss at step {stats.nonfinite_step}")
