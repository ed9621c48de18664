"""Loaders: training batches full and drawn per epoch from their own stream, every example once
in evaluation in batches of near-equal size, in-memory images fetched a batch at a time.

Run: pytest tests/unit/test_loaders.py
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from swap.data.common import Images
from swap.data.loaders import EpochBatches, EvenBatches, eval_loader, fetches_batches, train_loader


def images(n: int = 23) -> Images:
    rng = np.random.default_rng(3)
    return Images(rng.integers(0, 256, (n, 1, 4, 4), dtype=np.uint8), np.arange(n) % 5)


@pytest.mark.parametrize("shuffle_seed", [None, 7])
def test_in_memory_images_come_a_batch_at_a_time_with_the_same_batches(shuffle_seed):
    dataset = images()
    assert fetches_batches(dataset) and fetches_batches(Subset(dataset, range(0, 23, 2)))
    assert not fetches_batches(TensorDataset(torch.zeros(3, 1)))
    fast = list(eval_loader(dataset, 5, shuffle_seed=shuffle_seed))
    slow = list(DataLoader(dataset, batch_sampler=EvenBatches(23, 5, shuffle_seed)))  # by example
    assert [len(y) for _, y in fast] == [5, 5, 5, 4, 4]  # every example, sizes at most 1 apart
    if shuffle_seed is None:
        assert torch.equal(torch.cat([y for _, y in fast]), torch.from_numpy(dataset.labels))
    for (x, y), (x_ref, y_ref) in zip(fast, slow, strict=True):
        assert x.dtype == torch.uint8 and torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_a_subset_loads_its_own_examples():
    shard = Subset(images(), range(1, 23, 2))
    (x, y), *_ = eval_loader(shard, 4)
    assert torch.equal(y, torch.tensor([1, 3, 0, 2])) and x.shape == (4, 1, 4, 4)
    assert torch.equal(x[0], torch.from_numpy(images().images[1]))


def test_evaluation_and_bn_refresh_batches_keep_every_example_and_never_leave_one_alone():
    sizes = {n: [len(b) for b in EvenBatches(n, 256)] for n in (257, 512, 513, 1293, 5)}
    assert sizes == {257: [129, 128], 512: [256, 256], 513: [171] * 3,
                     1293: [216] * 3 + [215] * 3, 5: [5]}  # fmt: skip
    shuffled = [i for batch in EvenBatches(1293, 256, shuffle_seed=3) for i in batch]
    assert sorted(shuffled) == list(range(1293)) and shuffled != sorted(shuffled)


def test_training_batches_are_full_and_the_partial_last_one_is_dropped():
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


def test_each_epoch_has_its_own_order_and_an_epoch_is_the_same_whenever_it_is_drawn():
    data = images(40)
    batches = EpochBatches(data, 8, lambda epoch: 1000 + epoch)
    loader = train_loader(data, batches)
    orders = {}
    for epoch in (1, 2, 3, 2):  # epoch 2 again, as a resumed run draws it
        batches.set_epoch(epoch)
        orders.setdefault(epoch, []).append(torch.cat([y for _, y in loader]))
    assert torch.equal(orders[2][0], orders[2][1])
    assert not torch.equal(orders[1][0], orders[2][0])


class Noisy(torch.utils.data.Dataset):
    """Draws from torch, NumPy and Python's random per example, as user transforms do."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int):
        draws = [torch.rand(()).item(), float(np.random.rand()), random.random()]
        return torch.tensor(draws), index


def test_examples_of_random_transforms_draw_from_their_own_seeds_in_every_library():
    data = Noisy()
    batches = EpochBatches(data, 4, lambda epoch: epoch)
    assert batches.example_seeds
    first = torch.cat([x for x, _ in train_loader(data, batches)])
    torch.manual_seed(123), np.random.seed(5)  # whatever the process drew before
    again = torch.cat([x for x, _ in train_loader(data, batches)])
    assert torch.equal(first, again)
    assert len(set(first[:, 1].tolist())) == 16 and len(set(first[:, 2].tolist())) == 16
