"""The shared training loop's bookkeeping: sums read back once, divergence found in time.

Run: pytest tests/unit/test_training.py
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from swap.errors import DivergenceError
from swap.training import CHECK_EVERY, evaluate, sgd, train_epoch

CPU = torch.device("cpu")


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))


def batches(n: int, bad: int | None = None, size: int = 5) -> list[tuple[torch.Tensor, ...]]:
    """`n` batches of random inputs; batch `bad` (1-based) is all infinite."""
    g = torch.Generator().manual_seed(2)
    out = [(torch.randn(size, 3, 2, 2, generator=g), torch.arange(size) % 3) for _ in range(n)]
    if bad is not None:
        out[bad - 1] = (torch.full((size, 3, 2, 2), float("inf")), out[bad - 1][1])
    return out


def constant_lr(optimizer):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


@pytest.mark.parametrize("stop_on_nonfinite", [False, True])  # True: read every CHECK_EVERY
def test_the_epoch_sums_equal_reading_every_step_at_once(stop_on_nonfinite):
    n = CHECK_EVERY + 7
    data = batches(n) + [(torch.randn(2, 3, 2, 2), torch.tensor([0, 2]))]  # a short last batch
    model = net()
    optimizer = sgd(model, 0.1, 0.9, 1e-4)
    scheduler = constant_lr(optimizer)
    stats = train_epoch(model, data, optimizer, scheduler, CPU, stop_on_nonfinite=stop_on_nonfinite)

    reference = net()
    optimizer = sgd(reference, 0.1, 0.9, 1e-4)
    loss_sum, correct = 0.0, 0
    for inputs, targets in data:
        logits = reference(inputs)
        loss = F.cross_entropy(logits, targets)
        loss_sum += loss.item() * len(targets)
        correct += int((logits.argmax(1) == targets).sum())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert (stats.loss_sum, stats.correct, stats.count) == (loss_sum, correct, 5 * n + 2)
    assert stats.nonfinite_step is None
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)

    after = evaluate(model, data, CPU)
    with torch.no_grad():
        logits = torch.cat([model(inputs) for inputs, _ in data])
        targets = torch.cat([targets for _, targets in data])
    assert (after.count, after.correct) == (5 * n + 2, int((logits.argmax(1) == targets).sum()))
    assert after.loss == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)


@pytest.mark.parametrize(
    ("batches_in_epoch", "bad", "looked_at"),
    [
        (4 * CHECK_EVERY, 3, CHECK_EVERY),  # found at the first look
        (4 * CHECK_EVERY, CHECK_EVERY + 5, 2 * CHECK_EVERY),  # at the second
        (CHECK_EVERY + 10, CHECK_EVERY + 8, CHECK_EVERY + 10),  # at the epoch's end
    ],
)
def test_a_diverging_worker_stops_at_the_next_look_naming_the_first_bad_step(
    batches_in_epoch, bad, looked_at
):
    taken = []

    def data():
        for batch in batches(batches_in_epoch, bad=bad):
            taken.append(batch)
            yield batch

    model = net()
    optimizer = sgd(model, 0.1, 0.0, 0.0)
    with pytest.raises(DivergenceError, match=rf"non-finite loss at step {bad}$"):
        train_epoch(model, data(), optimizer, constant_lr(optimizer), CPU, stop_on_nonfinite=True)
    assert len(taken) == looked_at


def test_without_stopping_the_first_bad_step_is_recorded_and_the_pass_completes():
    model = net()
    optimizer = sgd(model, 0.1, 0.0, 0.0)
    stats = train_epoch(model, batches(50, bad=41), optimizer, constant_lr(optimizer), CPU)
    assert stats.nonfinite_step == 41 and stats.count == 250
