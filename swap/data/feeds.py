"""What the phases' loops iterate, whatever holds the data: in-memory and file sets through
swap's loaders (swap.data.loaders), streamed sets through Ray Data (swap.data.stream).

Run: imported by the phases' workers (swap/phases/).

A training feed yields (inputs, labels) batches one epoch at a time (`set_epoch`), with a known
number of full batches (`len`), each epoch in an order drawn from `order_seed(epoch)`. An
evaluation feed yields every example of a split once, each time it is iterated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

from torch.utils.data import DataLoader, Dataset, Subset

from swap.data.common import Splits
from swap.data.loaders import EpochBatches, LoaderSettings, eval_loader, train_loader
from swap.data.stream import StreamEpochs, evaluation_batches

Held = Literal["train", "val", "test"]  # "train": its examples without augmentation


class EpochLoader:
    """An in-memory training set's batches: `order` (an EpochBatches sampler) picks each
    epoch's, `loader` fetches them."""

    def __init__(self, order: EpochBatches, loader: DataLoader):
        self.order, self.loader = order, loader

    def set_epoch(self, epoch: int) -> None:
        self.order.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.loader)


def training_feed(
    splits: Splits,
    batch_size: int,
    order_seed: Callable[[int], int],
    settings: LoaderSettings,
    *,
    rank: int = 0,
    world: int = 1,
    shard: Callable[[int], Any] | None = None,
) -> EpochLoader | StreamEpochs:
    """Rank `rank` of `world`'s batches of `batch_size` from the training split, one epoch at
    a time. A streamed set reads `shard(epoch)` (a phase-1 rank's Ray Train dataset shard), or
    else its own pipeline with the files in a new order each epoch."""
    if splits.stream is None:
        order = EpochBatches(splits.train, batch_size, order_seed, rank=rank, world=world)
        return EpochLoader(order, train_loader(splits.train, order, settings))
    stream = splits.stream
    steps = len(splits.train) // (batch_size * world)  # type: ignore[arg-type]

    def own(epoch: int) -> Any:
        return stream.rows("train", order_seed=order_seed(epoch))

    return StreamEpochs(shard or own, batch_size, steps, order_seed, settings.pin_memory)


def evaluation_feed(
    splits: Splits,
    split: Held,
    batch_size: int,
    settings: LoaderSettings,
    *,
    shuffle_seed: int | None = None,
    rank: int = 0,
    world: int = 1,
) -> Iterable[Any]:
    """Every example of `split` once per iteration (rank `rank` of `world`: its share), in
    batches of at most `batch_size`; `shuffle_seed` shuffles them (in-memory sets: the BN
    refresh's fixed order; a streamed set is read in its storage order)."""
    if splits.stream is None:
        dataset: Dataset = {"train": splits.train_plain, "val": splits.val,
                            "test": splits.test}[split]  # fmt: skip
        if world > 1:
            dataset = Subset(dataset, range(rank, len(dataset), world))  # type: ignore[arg-type]
        return eval_loader(dataset, batch_size, settings, shuffle_seed=shuffle_seed)
    return StreamedSplit(splits.stream, split, batch_size, (rank, world))


KEEP_BYTES = 128 * 2**20  # a streamed held-out split this small is kept after its first pass


class StreamedSplit:
    """A streamed split, iterated as often as asked (phase 3 scores many models on the same
    held-out sets): read from storage each time, unless a whole first pass took at most
    KEEP_BYTES, which is then kept and replayed. Memory stays bounded either way."""

    def __init__(self, stream: Any, split: Held, batch_size: int, shard: tuple[int, int]):
        self.stream, self.split, self.batch_size, self.shard = stream, split, batch_size, shard
        self.kept: list[Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        if self.kept is not None:
            yield from self.kept
            return
        kept: list[Any] | None = []
        size = 0
        for inputs, labels in evaluation_batches(self.stream, self.split, self.batch_size,
                                                 self.shard):  # fmt: skip
            if kept is not None:
                size += inputs.nbytes + labels.nbytes
                if size <= KEEP_BYTES:
                    kept.append((inputs, labels))
                else:
                    kept = None  # too large to keep: streamed again next time
            yield inputs, labels
        self.kept = kept
