"""Loaders: every batch a function of (seed, step) only, for generated and finite sources, with
or without worker processes; workers get distinct, reproducible seeds."""

import numpy as np
import pytest
import torch

from vidpred.data import ArrayClips, ClipSource, MovingSprites, train_loader


@pytest.fixture
def array_source(tmp_path):
    """A finite source of 10 clips whose every pixel of clip i is i / 255."""
    data = np.broadcast_to(np.arange(10, dtype=np.uint8)[:, None, None, None], (10, 3, 8, 8))
    np.save(tmp_path / "ten.npy", np.ascontiguousarray(data))
    return lambda seed=0: ArrayClips(tmp_path / "ten.npy", seed=seed, frames=3, size=8, layout="nthw")


def clip_ids(batches) -> list[list[int]]:
    return [torch.round(b[:, 0, 0, 0, 0] * 255).long().tolist() for b in batches]


def test_finite_sources_run_in_seeded_epochs_that_visit_every_clip_once(array_source):
    ids = clip_ids(train_loader(array_source(), batch_size=5, start_step=0, steps=6, workers=0))
    epochs = [sum(ids[2 * e:2 * e + 2], []) for e in range(3)]
    assert all(sorted(e) == list(range(10)) for e in epochs)  # each epoch: all clips, once
    assert epochs[0] != epochs[1]  # a fresh permutation each epoch
    other = clip_ids(train_loader(array_source(seed=1), batch_size=5, start_step=0, steps=6, workers=0))
    assert other != ids


def test_a_resumed_run_sees_the_very_batches_it_would_have_seen(array_source):
    full = clip_ids(train_loader(array_source(), batch_size=4, start_step=0, steps=8, workers=0))
    resumed = clip_ids(train_loader(array_source(), batch_size=4, start_step=5, steps=8, workers=0))
    assert resumed == full[5:]
    sprites = MovingSprites(size=16, frames=3, sprite_min=3, sprite_max=5)
    full = list(train_loader(sprites, batch_size=2, start_step=0, steps=4, workers=0))
    resumed = list(train_loader(sprites, batch_size=2, start_step=2, steps=4, workers=0))
    assert all(torch.equal(a, b) for a, b in zip(full[2:], resumed))


def test_worker_processes_deliver_the_same_batches(array_source):
    alone = clip_ids(train_loader(array_source(), batch_size=3, start_step=1, steps=7, workers=0))
    with_workers = clip_ids(train_loader(array_source(), batch_size=3, start_step=1, steps=7, workers=2))
    assert with_workers == alone


class NumpyNoise(ClipSource):
    """Clips of numpy's global random numbers: shows each worker's numpy seed."""

    frames, channels, size, seed, finite = 1, 1, 1, 7, False

    def __len__(self):
        return 10**6

    def clip(self, index):
        return np.full((1, 1, 1), np.random.rand(), dtype=np.float32)


def test_workers_have_distinct_and_reproducible_seeds():
    def draws():
        batches = train_loader(NumpyNoise(), batch_size=1, start_step=0, steps=4, workers=2)
        return [b.item() for b in batches]  # batches alternate between the two workers

    first = draws()
    assert first == draws()
    assert first[0] != first[1]  # worker 0 and worker 1 draw different numbers
