"""Random streams: every phase-1 rank, phase-2 worker and epoch sees an order and augmentation
draws of its own, none a shifted copy of another's, and all of them reproducible.

Run: pytest tests/unit/test_streams.py
"""

from __future__ import annotations

import itertools

import pytest
import torch

from swap import seeds
from swap.data.registry import load_splits
from swap.models.registry import build_model
from swap.phases.phase1_worker import phase1_feed
from swap.phases.phase2_worker import phase2_feed, phase2_worker
from swap.rundir import MODEL_FILE, save_state_dict

from .. import custom_code
from ..helpers import tiny_spec

EPOCHS = 3
PINNED_INIT, PINNED_ORDER = 4076958309702764026, 4383989439387238689  # computed once, kept


def test_stream_seeds_are_fixed_functions_of_their_path():
    assert seeds.stream_seed(0, "phase2", 1, "order", 2) == seeds.phase2_order(0, 1, 2)
    assert seeds.stream_seed(0, "phase2", 1, "order", 2) == seeds.stream_seed(
        0, "phase2", 1, "order", 2
    )
    paths = [("phase2", w, kind, e) for w in range(3) for kind in ("order", "augment", "rng")
             for e in range(1, 4)] + [("phase1", "order", e) for e in range(1, 4)] + [
             ("phase1", kind, r, e) for kind in ("augment", "rng") for r in range(2)
             for e in range(1, 4)]  # fmt: skip
    values = {seeds.stream_seed(7, *path) for path in paths}
    assert len(values) == len(paths) and all(0 <= v < 2**63 for v in values)
    assert seeds.stream_seed(7, "init") != seeds.stream_seed(8, "init")
    # Fixed across processes and Python versions (no salted hash()): these values are pinned.
    assert seeds.stream_seed(0, "init") == PINNED_INIT
    assert seeds.phase2_order(0, 1, 2) == PINNED_ORDER
    with pytest.raises(ValueError, match="non-negative"):
        seeds.stream_seed(0, -1)


# Every stream of seed 0 for rank/worker 1, epoch 2: computed once, kept. Each one pinned, so
# a stream that ignored its rank, worker or epoch would change its value here.
PINNED = {
    "phase1_order": (seeds.phase1_order, (0, 2), 8064773834312753073),
    "phase1_augment": (seeds.phase1_augment, (0, 1, 2), 281238090445859979),
    "phase1_rng": (seeds.phase1_rng, (0, 1, 2), 5183964242279470893),
    "phase2_order": (seeds.phase2_order, (0, 1, 2), 4383989439387238689),
    "phase2_augment": (seeds.phase2_augment, (0, 1, 2), 7460222751974496497),
    "phase2_rng": (seeds.phase2_rng, (0, 1, 2), 1621480788060244752),
    "worker_seed": (seeds.worker_seed, (0, 1), 3452229180779817239),
}


@pytest.mark.parametrize("name", PINNED)
def test_every_stream_is_pinned_and_depends_on_each_of_its_arguments(name):
    stream, args, pinned = PINNED[name]
    assert stream(*args) == pinned
    for position in range(len(args)):  # the seed, the rank or worker, the epoch
        changed = list(args)
        changed[position] += 1
        assert stream(*changed) != pinned, f"{name} ignores argument {position}"


def test_two_workers_draw_different_shifts_of_the_same_digits(tmp_path):
    """On a built-in augmented set, each worker's epoch draws its own pixel shifts."""
    splits = load_splits(tiny_spec(tmp_path).data)
    images, _ = splits.train[list(range(256))]
    cpu = torch.device("cpu")
    shifted = [
        splits.training_transform(seeds.phase2_augment(0, worker, 1), cpu)(images)
        for worker in (0, 1, 0)
    ]
    plain = splits.batch_transform(images)
    assert not torch.equal(shifted[0], plain)  # augmented at all
    assert torch.equal(shifted[0], shifted[2])  # the same worker's epoch again: the same draws
    differ = (shifted[0] != shifted[1]).flatten(1).any(1).float().mean().item()
    assert differ > 0.5, differ  # 9 shifts each: about 8 in 9 images differ between workers


def epoch_orders(batches) -> list[tuple[int, ...]]:
    """The example indices of each epoch, in order."""
    orders = []
    for epoch in range(1, EPOCHS + 1):
        batches.set_epoch(epoch)
        orders.append(tuple(index for batch in batches for index in batch))
    return orders


def test_no_rank_worker_or_epoch_replays_another_order(tmp_path):
    spec = tiny_spec(tmp_path, phase1={"batch_size": 128}, phase2={"batch_size": 64})
    splits = load_splits(spec.data)
    streams = {f"worker {w}": epoch_orders(phase2_feed(splits, spec, w).order) for w in range(3)}
    ranks = [epoch_orders(phase1_feed(splits, spec, rank, 2).order) for rank in range(2)]
    streams["phase 1"] = [a + b for a, b in zip(*ranks, strict=True)]
    # The ranks shard one order: together they see each example of an epoch at most once.
    for a, b in zip(*ranks, strict=True):
        assert not set(a) & set(b) and len(a) == len(b) == 10 * 64  # 1,293 // 128 = 10 steps
    sequences = [(who, e, order) for who, orders in streams.items() for e, order in
                 enumerate(orders, start=1)]  # fmt: skip
    for (who, e, order), (other, f, order2) in itertools.combinations(sequences, 2):
        # No order is another stream's, nor the same stream's at another epoch, even in part
        # (with `seed + worker + epoch` seeding, worker 1's epoch 1 was worker 0's epoch 2).
        assert order[:32] != order2[:32], f"{who} epoch {e} replays {other} epoch {f}"


def fetches_by_epoch(spec, index: int, tmp_path, run: str) -> list[list[tuple[int, float]]]:
    """The (index, noise scale) of every training example worker `index` fetched, per epoch."""
    custom_code.FETCHED.clear()
    phase2_worker(
        spec, index, load_splits(spec.data), str(tmp_path / "p1" / MODEL_FILE), str(tmp_path / run)
    )
    steps = 1437 // spec.phase2.batch_size  # val_fraction 0: all 1,437 training images
    per_epoch = steps * spec.phase2.batch_size
    fetched = custom_code.FETCHED[1:]  # the first is swap's look at the set's first example
    assert len(fetched) == EPOCHS * per_epoch
    return [fetched[k * per_epoch : (k + 1) * per_epoch] for k in range(EPOCHS)]


def test_phase2_workers_draw_their_own_augmentation_and_reproduce_it(tmp_path):
    spec = tiny_spec(
        tmp_path,
        data={"dataset": "tests.custom_code:recorded_noisy_digits", "val_fraction": 0},
        phase2={"epochs": EPOCHS, "batch_size": 256, "lr": 0.01},
    )
    torch.manual_seed(0)
    save_state_dict(build_model(spec.model, load_splits(spec.data).info).state_dict(),
                    tmp_path / "p1" / MODEL_FILE)  # fmt: skip
    workers = [fetches_by_epoch(spec, w, tmp_path, f"run-{w}") for w in (0, 1)]
    draws = [[tuple(s for _, s in epoch) for epoch in w] for w in workers]
    orders = [[tuple(i for i, _ in epoch) for epoch in w] for w in workers]
    every = [(w, e) for w in range(2) for e in range(EPOCHS)]
    for (w, e), (v, f) in itertools.combinations(every, 2):
        assert orders[w][e] != orders[v][f] and draws[w][e] != draws[v][f], (w, e, v, f)
    # Independent draws: as many distinct values as float32 uniforms allow (a rare tie).
    assert len({s for w in draws for epoch in w for s in epoch}) > 0.999 * 2 * EPOCHS * 1280
    # The same worker again, in a new run directory: the same orders and the same draws.
    again = fetches_by_epoch(spec, 0, tmp_path, "again")
    assert again == workers[0]
