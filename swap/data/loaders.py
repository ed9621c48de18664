"""Loaders: each epoch's training batches from its own random stream, every example once for
evaluation and the BN refresh, in-memory images fetched a batch at a time.

Run: python -c "from swap.data.loaders import EvenBatches as E; print([*map(len, E(257, 256))])"
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from swap.data.common import Images
from swap.spec import Spec


@dataclass(frozen=True)
class LoaderSettings:
    workers: int = 0  # loader processes per training process; 0 loads in the process itself
    pin_memory: bool = False  # page-locked host batches, for faster copies to a GPU


def loader_settings(spec: Spec) -> LoaderSettings:
    return LoaderSettings(workers=spec.data.loader_workers, pin_memory=spec.resources.use_gpu)


class EpochBatches(Sampler[list]):
    """The training batches of one epoch at a time (`set_epoch` picks which).

    Each epoch's order is a permutation drawn from its own stream, `order_seed(epoch)` (see
    swap.seeds), so it does not depend on earlier epochs: a resumed run sees what an uninterrupted
    one would. The order is cut into global batches of `batch_size * world` examples and the
    partial last one is dropped (a batch of one example breaks BatchNorm, and a short step would
    weigh as much as a full one); rank `rank` takes every `world`-th example of each.

    Examples of a data set that is not fetched a batch at a time (its transform may draw at
    random, example by example) come paired with a seed of their own, drawn from the same stream
    (`example_seeds`; see `Seeded`): their draws then depend on neither the loader process that
    fetches them nor what that process did before.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        order_seed: Callable[[int], int],
        *,
        rank: int = 0,
        world: int = 1,
    ):
        self.size = len(dataset)  # type: ignore[arg-type]
        self.steps = self.size // (batch_size * world)
        if self.steps == 0:  # the spec is checked against the data set's size before this
            raise ValueError(f"{self.size} examples make no batch of {batch_size} x {world}")
        self.batch_size, self.order_seed = batch_size, order_seed
        self.rank, self.world = rank, world
        self.example_seeds = not fetches_batches(dataset)
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list]:
        generator = torch.Generator().manual_seed(self.order_seed(self.epoch))
        used = self.steps * self.batch_size * self.world
        order = torch.randperm(self.size, generator=generator)[:used]
        shape = (self.steps, self.batch_size, self.world)
        mine = order.view(shape)[:, :, self.rank]
        if not self.example_seeds:
            yield from mine.tolist()
            return
        seeds = torch.randint(2**62, (used,), generator=generator).view(shape)[:, :, self.rank]
        for indices, draws in zip(mine.tolist(), seeds.tolist(), strict=True):
            yield list(zip(indices, draws, strict=True))


class Seeded(Dataset):
    """`dataset` fetched by (index, seed): its transform draws from torch's, NumPy's and
    Python's global generators seeded for that example, and leaves them as they were. Used for
    training views whose random transforms run example by example (image folders, a user's
    data set), in the training process or a loader process alike."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        # The CPU generator alone: torch.manual_seed would also seed every accelerator's, at
        # some 100 times the cost, for every example.
        torch_rng, states = torch.default_generator, (np.random.get_state(), random.getstate())
        before = torch_rng.get_state()
        torch_rng.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            return self.dataset[index]
        finally:
            torch_rng.set_state(before)
            np.random.set_state(states[0])
            random.setstate(states[1])


def train_loader(
    dataset: Dataset, batches: EpochBatches, settings: LoaderSettings = LoaderSettings()
) -> DataLoader:
    """A training loader over `dataset` in the batches `batches` makes, epoch by epoch.

    Loader processes persist across epochs (they start once per loader, not once per pass);
    nothing random happens in them but what `Seeded` seeds per example.
    """
    if len(dataset) != batches.size:  # type: ignore[arg-type]
        raise ValueError(f"the batches are for {batches.size} examples, not {len(dataset)}")
    if batches.example_seeds:
        dataset = Seeded(dataset)
    return _loader(dataset, batches, settings)


def eval_loader(
    dataset: Dataset,
    batch_size: int,
    settings: LoaderSettings = LoaderSettings(),
    shuffle_seed: int | None = None,
) -> DataLoader:
    """Every example of `dataset` once (in order, or shuffled by `shuffle_seed`), for evaluation
    and the BN refresh, in the fewest batches of at most `batch_size`, their sizes at most one
    apart: no example is dropped, and no last batch is left with one example (BatchNorm cannot
    normalize one) or weighs as much as a full one in the refresh's average over batches."""
    return _loader(dataset, EvenBatches(len(dataset), batch_size, shuffle_seed), settings)


class EvenBatches(Sampler[list[int]]):
    def __init__(self, size: int, batch_size: int, shuffle_seed: int | None = None):
        self.size, self.shuffle_seed = size, shuffle_seed
        self.count = -(-size // batch_size)  # ceil: the fewest batches of at most batch_size

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle_seed is None:
            order = torch.arange(self.size)
        else:
            generator = torch.Generator().manual_seed(self.shuffle_seed)
            order = torch.randperm(self.size, generator=generator)
        small, extra = divmod(self.size, max(1, self.count))
        start = 0
        for k in range(self.count):
            end = start + small + (k < extra)
            yield order[start:end].tolist()
            start = end


def _loader(dataset: Dataset, batches: Sampler[list], settings: LoaderSettings) -> DataLoader:
    """Batchable images held in memory are fetched a batch at a time, by one tensor index,
    instead of example by example and then collated."""
    # A generator of its own: with loader processes, DataLoader draws their base seed from it
    # once, not from the global RNG, whose draws would then differ in a resumed run.
    common = {
        "num_workers": settings.workers,
        "persistent_workers": settings.workers > 0,
        "pin_memory": settings.pin_memory,
        "generator": torch.Generator().manual_seed(0),
    }
    if fetches_batches(dataset):
        return DataLoader(dataset, batch_size=None, sampler=batches, **common)
    return DataLoader(dataset, batch_sampler=batches, **common)


def fetches_batches(dataset: Dataset) -> bool:
    """Whether `dataset[list_of_indices]` returns a whole batch: in-memory images, or a Subset
    of them (the evaluation shards of phase 1)."""
    if isinstance(dataset, Subset):
        return fetches_batches(dataset.dataset)
    return isinstance(dataset, Images)
