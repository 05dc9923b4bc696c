"""Clip sources and loaders. Every source yields clips `(t, c, h, w)` float32 in [0, 1]."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Sampler

from ..config import DataConfig
from .sprites import ClipSource, ForkToy, MovingSprites

__all__ = ["ClipSource", "ForkToy", "MovingSprites", "build_source", "train_loader", "IndexSampler", "RankShard"]


def build_source(data: DataConfig, *, seed: int, split: str, frames: int, context: int) -> ClipSource:
    """The clip source named by `data.kind`, producing clips of `frames` frames.

    `context` places the fork of the fork toy right after the given frames.
    """
    if data.kind == "sprites":
        return MovingSprites(seed=seed, split=split, size=data.size, channels=data.channels, frames=frames,
                             objects=data.objects, sprite_min=data.sprite_min, sprite_max=data.sprite_max,
                             max_speed=data.max_speed, bounce=data.bounce)
    if data.kind == "fork":
        return ForkToy(seed=seed, split=split, size=data.size, channels=data.channels, frames=frames,
                       fork_at=context, branches=data.branches, sprite=data.sprite_min, speed=data.max_speed)
    raise ValueError(f"data.kind={data.kind!r}: expected sprites or fork")


class IndexSampler(Sampler[int]):
    """Clip indices `start, start + 1, ...`: generated sources never repeat a clip, and a run that
    resumes at step s continues at index s * batch_size with the very clips it would have seen."""

    def __init__(self, start: int, count: int):
        self.start, self.count = start, count

    def __iter__(self):
        return iter(range(self.start, self.start + self.count))

    def __len__(self) -> int:
        return self.count


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
    """Batches `(b, t, c, h, w)` for steps `start_step .. steps - 1`, in order.

    `batch_size` is the global batch; with `world` > 1 ranks, each gets its b = batch_size / world
    clips of every step's batch.
    """
    remaining = max(steps - start_step, 0)
    sampler = IndexSampler(start_step * batch_size, remaining * batch_size)
    if world > 1:
        sampler = RankShard(sampler, batch_size=batch_size, rank=rank, world=world)
    return DataLoader(source, batch_size=batch_size // world, sampler=sampler, num_workers=workers,
                      pin_memory=pin_memory, drop_last=True, persistent_workers=False,
                      prefetch_factor=4 if workers else None)


def test_clips(source: ClipSource, count: int) -> torch.Tensor:
    """The first `count` clips of a source, stacked: `(n, t, c, h, w)`."""
    return torch.stack([source[i] for i in range(count)])
