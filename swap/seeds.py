"""Every random stream of a job, split from its one seed by numpy's SeedSequence.

Run: python -c "from swap.seeds import stream_seed; print(stream_seed(0, 'phase2', 1, 'order', 3))"

A stream is named by a path of words below the job's seed: ("init",), ("phase1", "order", 3),
("phase2", 0, "augment", 2), ("phase3", "bn"). SeedSequence hashes the seed and the path into
the stream's state, so two different paths give unrelated streams: no stream is another shifted
by an epoch or a worker (as `seed + worker + epoch` would be), and every stream is a function of
the spec alone, so a run reproduces and a resumed worker draws what an uninterrupted one would.
"""

from __future__ import annotations

import zlib

import numpy as np

Word = int | str

INIT = "init"  # the initial weights: the same on every phase-1 rank
ORDER = "order"  # the order of an epoch's examples
AUGMENT = "augment"  # an epoch's batch augmentation draws (swap.data.augment)
RNG = "rng"  # torch's global RNG during an epoch: dropout, a data set's own random transforms
BN = "bn"  # the BN-refresh shuffle of phase 3


def stream_seed(seed: int, *path: Word) -> int:
    """A 63-bit seed (for torch.manual_seed or a torch.Generator) for the stream at `path`."""
    words = tuple(_word(part) for part in path)
    high, low = np.random.SeedSequence(seed, spawn_key=words).generate_state(2, np.uint32)
    return (int(high) << 31) | (int(low) >> 1)


def phase1_order(seed: int, epoch: int) -> int:
    """Phase 1's epoch order: one permutation shared by every rank, which each takes a shard of."""
    return stream_seed(seed, "phase1", ORDER, epoch)


def phase1_augment(seed: int, rank: int, epoch: int) -> int:
    return stream_seed(seed, "phase1", AUGMENT, rank, epoch)


def phase1_rng(seed: int, rank: int, epoch: int) -> int:
    return stream_seed(seed, "phase1", RNG, rank, epoch)


def phase2_order(seed: int, worker: int, epoch: int) -> int:
    return stream_seed(seed, "phase2", worker, ORDER, epoch)


def phase2_augment(seed: int, worker: int, epoch: int) -> int:
    return stream_seed(seed, "phase2", worker, AUGMENT, epoch)


def phase2_rng(seed: int, worker: int, epoch: int) -> int:
    return stream_seed(seed, "phase2", worker, RNG, epoch)


def worker_seed(seed: int, worker: int) -> int:
    """The root of phase-2 worker `worker`'s streams, as results.json records it."""
    return stream_seed(seed, "phase2", worker)


def _word(part: Word) -> int:
    """A path word as SeedSequence takes it: ints as they are, names by a fixed hash (CRC-32,
    not Python's per-process salted hash())."""
    if isinstance(part, str):
        return zlib.crc32(part.encode())
    if part < 0:
        raise ValueError(f"a stream path holds non-negative ints and names, not {part}")
    return part
