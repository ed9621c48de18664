"""The shared training loop's bookkeeping, and batch-at-a-time loading of in-memory data.

Run: pytest tests/unit/test_training.py
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from swap.data.common import Images, normalize_to_float
from swap.data.loaders import EvenBatches, eval_loader, fetches_batches
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


def images(transform=None) -> Images:
    g = torch.Generator().manual_seed(3)
    return Images(torch.randn(23, 1, 4, 4, generator=g), torch.arange(23) % 5, transform)


@pytest.mark.parametrize("shuffle_seed", [None, 7])
def test_in_memory_images_come_a_batch_at_a_time_with_the_same_batches(shuffle_seed):
    dataset = images()
    assert fetches_batches(dataset) and fetches_batches(Subset(dataset, range(0, 23, 2)))
    assert not fetches_batches(images(transform=lambda x: x + 1))
    fast = list(eval_loader(dataset, 5, shuffle_seed=shuffle_seed))
    slow = list(DataLoader(dataset, batch_sampler=EvenBatches(23, 5, shuffle_seed)))
    assert [len(y) for _, y in fast] == [5, 5, 5, 4, 4]  # every example, sizes at most 1 apart
    if shuffle_seed is None:
        assert torch.equal(torch.cat([y for _, y in fast]), dataset.labels)
    for (x, y), (x_ref, y_ref) in zip(fast, slow, strict=True):
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_a_subset_and_a_transform_still_load():
    shard = Subset(images(), range(1, 23, 2))
    (x, y), *_ = eval_loader(shard, 4)
    assert torch.equal(y, torch.tensor([1, 3, 0, 2])) and x.shape == (4, 1, 4, 4)
    (x, _), *_ = eval_loader(images(transform=lambda image: image * 0), 4)
    assert x.shape == (4, 1, 4, 4) and not x.any()


def test_a_normalizing_transform_gives_a_batch_what_it_gives_each_image():
    # The plain view of a file data set (CIFAR, MNIST, SVHN): uint8 NCHW, converted and
    # normalized; fetched as batches, it must equal the per-example path bit for bit.
    g = torch.Generator().manual_seed(4)
    images = torch.randint(0, 256, (11, 3, 5, 5), generator=g, dtype=torch.uint8)
    plain = normalize_to_float((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    batched = Images(images, torch.arange(11) % 3, plain, batchable=True)
    assert fetches_batches(batched) and not fetches_batches(Images(images, batched.labels, plain))
    fast = list(eval_loader(batched, 4))
    slow = list(DataLoader(batched, 4))
    for (x, y), (x_ref, y_ref) in zip(fast, slow, strict=True):
        assert x.dtype == torch.float32 and torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_evaluation_and_bn_refresh_batches_keep_every_example_and_never_leave_one_alone():
    sizes = {n: [len(b) for b in EvenBatches(n, 256)] for n in (257, 512, 513, 1293, 5)}
    assert sizes == {257: [129, 128], 512: [256, 256], 513: [171] * 3,
                     1293: [216] * 3 + [215] * 3, 5: [5]}  # fmt: skip
    shuffled = [i for batch in EvenBatches(1293, 256, shuffle_seed=3) for i in batch]
    assert sorted(shuffled) == list(range(1293)) and shuffled != sorted(shuffled)


def test_training_batches_are_full_and_the_partial_last_one_is_dropped():
    from swap.data.loaders import EpochBatches

    data = images()  # 23 examples
    one = EpochBatches(data, 5, lambda epoch: epoch)
    assert len(one) == 4 and [len(b) for b in one] == [5, 5, 5, 5]
    two = [EpochBatches(data, 3, lambda epoch: epoch, rank=r, world=2) for r in range(2)]
    assert [len(s) for s in two] == [3, 3]  # 23 // 6 global batches, 3 per rank each
    first = [list(s) for s in two]
    for a, b in zip(*first, strict=True):
        assert len(a) == len(b) == 3 and not set(a) & set(b)
    with pytest.raises(ValueError, match="23 examples make no batch of 24 x 1"):
        EpochBatches(data, 24, lambda epoch: epoch)
