"""Clip sources and loaders. Every source yields clips `(t, c, h, w)` float32 in [0, 1]; build.py picks one by `data.kind`."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from .arrays import ArrayClips
from .clips import ClipSource, DataError
from .frames import FrameFolders
from .mmnist import MovingMNIST
from .sprites import ForkToy, MovingSprites
from .video import VideoFolder

__all__ = ["ArrayClips", "ClipSource", "DataError", "ForkToy", "FrameFolders", "MovingMNIST", "MovingSprites",
           "VideoFolder", "train_loader", "IndexSampler", "EpochSampler", "RankShard"]


class IndexSampler(Sampler[int]):
    """Clip indices `start, start + 1, ...`: generated sources never repeat a clip, and a run that
    resumes at step s continues at index s * batch_size with the very clips it would have seen."""

    def __init__(self, start: int, count: int):
        self.start, self.count = start, count

    def __iter__(self):
        return iter(range(self.start, self.start + self.count))

    def __len__(self) -> int:
        return self.count


class EpochSampler(Sampler[int]):
    """Positions `start .. start + count - 1` of an endless run of epochs over `n` clips, each epoch
    a permutation seeded by (seed, epoch): position p is always the same clip, so a run that
    resumes at step s sees exactly the clips it would have seen."""

    def __init__(self, n: int, *, seed: int, start: int, count: int):
        self.n, self.seed, self.start, self.count = n, seed, start, count

    def __iter__(self):
        epoch, order = -1, None
        for position in range(self.start, self.start + self.count):
            if position // self.n != epoch:
                epoch = position // self.n
                order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            yield int(order[position % self.n])

    def __len__(self) -> int:
        return self.count


def seed_worker(worker_id: int) -> None:
    """Seed numpy and `random` in a loader worker from torch's per-worker seed (distinct per
    worker, and reproducible: the loader's generator is seeded), for transforms that draw."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class RankShard(Sampler[int]):
    """Rank `rank`'s share of each global batch: of every `batch_size` consecutive indices that
    `sampler` yields, the rank-th slice of batch_size / world. Together the ranks see exactly the
    clips one process would, in the same order within each batch."""

    def __init__(self, sampler: Sampler[int], *, batch_size: int, rank: int, world: int):
        self.sampler, self.batch_size, self.rank, self.world = sampler, batch_size, rank, world
        self.local = batch_size // world

    def __iter__(self):
        lo, hi = self.rank * self.local, (self.rank + 1) * self.local
        batch = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield from batch[lo:hi]
                batch = []

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size * self.local


def train_loader(source: ClipSource, *, batch_size: int, start_step: int, steps: int, workers: int,
                 pin_memory: bool = False, rank: int = 0, world: int = 1) -> DataLoader:
    """Batches `(b, t, c, h, w)` for steps `start_step .. steps - 1`, in order; each batch a
    function of (seed, step) only: generated sources read indices step * batch_size + i, finite
    ones the same positions of a seeded sequence of epochs.

    `batch_size` is the global batch; with `world` > 1 ranks, each gets its b = batch_size / world
    clips of every step's batch.
    """
    remaining = max(steps - start_step, 0)
    if source.finite:
        sampler = EpochSampler(len(source), seed=source.seed, start=start_step * batch_size,
                               count=remaining * batch_size)
    else:
        sampler = IndexSampler(start_step * batch_size, remaining * batch_size)
    if world > 1:
        sampler = RankShard(sampler, batch_size=batch_size, rank=rank, world=world)
    return DataLoader(source, batch_size=batch_size // world, sampler=sampler, num_workers=workers,
                      pin_memory=pin_memory, drop_last=True, persistent_workers=False,
                      prefetch_factor=4 if workers else None, worker_init_fn=seed_worker if workers else None,
                      generator=torch.Generator().manual_seed((source.seed * 1_000_003 + start_step) * 64 + rank))

