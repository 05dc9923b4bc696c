"""Procedural moving sprites, the built-in data: no files, every clip a pure function of (seed, index).

Shapes drawn by code (disc, square, triangle, cross, ring, diamond) with a random size and
intensity (and colour, with 3 channels) bounce around the canvas under the Stochastic Moving MNIST
rules of `motion.py` (with discrete bounces, `futures(i)` lists every continuation of clip i's
context). Also the *fork* toy: one sprite glides in and, at the first predicted frame,
turns into one of `branches` equally likely directions; its futures can be enumerated exactly.
"""

from __future__ import annotations

import numpy as np

from .clips import ClipSource
from .motion import (bounce_continuations, bounce_trajectory, check_modes, continue_trajectory, paste_max, render,
                     render_futures, tangential_speeds)

SHAPES = ("disc", "square", "triangle", "cross", "ring", "diamond")
SPLITS = {"train": 0, "test": 1, "val": 2}
MAX_FUTURES = 1024  # continuations listed per clip; more would not fit in memory at 64x64


def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one clip: independent streams per (seed, split, index)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    return np.random.default_rng([seed, SPLITS[split], index])


def draw_shape(shape: str, side: int) -> np.ndarray:
    """A (side, side) float32 mask in [0, 1] of the named shape, with soft (anti-aliased) edges."""
    sub = 4  # supersampling factor for anti-aliasing
    c = (np.arange(side * sub) + 0.5) / sub - side / 2  # pixel-centre coordinates, origin in the middle
    y, x = np.meshgrid(c, c, indexing="ij")
    r = side / 2
    if shape == "disc":
        m = x**2 + y**2 <= r**2
    elif shape == "square":
        m = np.ones_like(x, dtype=bool)
    elif shape == "triangle":  # apex at the top, base at the bottom
        m = np.abs(x) <= (y + r) / 2
    elif shape == "cross":
        arm = max(side / 6, 0.75)
        m = (np.abs(x) <= arm) | (np.abs(y) <= arm)
    elif shape == "ring":
        m = (x**2 + y**2 <= r**2) & (x**2 + y**2 >= (0.5 * r) ** 2)
    elif shape == "diamond":
        m = np.abs(x) + np.abs(y) <= r
    else:
        raise ValueError(f"shape {shape!r}: expected one of {', '.join(SHAPES)}")
    return m.reshape(side, sub, side, sub).mean(axis=(1, 3)).astype(np.float32)


def random_sprite(rng: np.random.Generator, *, channels: int, side_min: int, side_max: int) -> np.ndarray:
    """(channels, s, s): a random shape at a random size, intensity in [0.6, 1] (and colour)."""
    side = int(rng.integers(side_min, side_max + 1))
    mask = draw_shape(SHAPES[rng.integers(len(SHAPES))], side)
    if channels == 1:
        colour = rng.uniform(0.6, 1.0, size=(1, 1, 1))
    else:  # a saturated random colour: one channel at full intensity, the others random
        colour = rng.uniform(0.0, 1.0, size=(channels, 1, 1))
        colour[rng.integers(channels)] = 1.0
    return (mask[None] * colour).astype(np.float32)


class BouncingObjects(ClipSource):
    """`objects` sprites bouncing on a black canvas under motion.py's rules; a subclass says how
    one sprite is drawn (`sprite(rng)`). Stochastic bounces make the future multimodal; with
    deterministic or discrete bounces `futures(i)` lists every clip sharing clip i's context."""

    def __init__(self, *, seed: int, split: str, size: int, channels: int, frames: int, objects: int,
                 max_speed: int, bounce: str, branches: int, context: int, composite: str, length: int):
        self.seed, self.split, self.size, self.channels, self.frames = seed, split, size, channels, frames
        self.objects, self.max_speed, self.bounce, self.branches = objects, max_speed, bounce, branches
        self.context, self.composite, self.length = context, composite, length
        clip_rng(seed, split, 0)  # validates the split name now rather than in a worker
        check_modes(bounce=bounce, composite=composite)  # and these, rather than at the first clip drawn
        if bounce == "discrete":
            tangential_speeds(max_speed, branches)  # validates the branch count now
        # stochastic bounces have too many futures to list (a new direction at any wall, any time)
        self.lists_futures = bounce in ("discrete", "deterministic")

    def __len__(self) -> int:
        return self.length

    def sprite(self, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement sprite(rng) -> (c, s, s)")

    def _objects(self, index: int, trace) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The sprites of clip `index` and, for each, `trace(rng, **motion)` — its path, or every
        continuation of it — drawn in one order from the clip's generator, so that `clip` and
        `futures` see the same objects."""
        rng = clip_rng(self.seed, self.split, index)
        sprites, paths = [], []
        for _ in range(self.objects):
            sprites.append(self.sprite(rng))
            paths.append(trace(rng, frames=self.frames, canvas=self.size, size=sprites[-1].shape[-1],
                               max_speed=self.max_speed, mode=self.bounce, branches=self.branches))
        return sprites, paths

    def clip(self, index: int) -> np.ndarray:
        sprites, paths = self._objects(index, lambda rng, **motion: bounce_trajectory(rng, **motion)[0])
        return render(sprites, paths, channels=self.channels, size=self.size, composite=self.composite)

    def futures(self, index: int) -> np.ndarray:
        """(m, t, c, h, w): every clip whose first `context` frames are those of clip `index`
        (clip `index` among them): one per combination of the objects' possible bounces."""
        if not self.lists_futures:
            super().futures(index)  # refuses, saying why
        sprites, paths = self._objects(
            index, lambda rng, **motion: bounce_continuations(rng, context=self.context, **motion))
        count = int(np.prod([len(p) for p in paths]))
        if count > MAX_FUTURES:
            raise ValueError(f"clip {index} has {count} possible futures (more than {MAX_FUTURES} to list): use "
                             "fewer objects or branches, a lower max_speed or a shorter horizon")
        return render_futures(sprites, paths, channels=self.channels, size=self.size, composite=self.composite)

    def sample_futures(self, index: int, k: int, rng: np.random.Generator) -> np.ndarray:
        """(k, t, c, h, w): k clips that share clip `index`'s first `context` frames and go on under the
        generator's own law, each object's bounces drawn afresh from `rng` (for any bounce mode).

        They are what a perfect model would sample: the ceiling of best of K on this data (bench/oracle.py).
        The draws know what the context frames show, each object's place and the velocity it moved by
        between the last two, and no more: each path is walked on again from the frame before the last
        (which puts the object back where the last frame shows it), so an object that bounced on the last
        context frame leaves it at a velocity drawn afresh, as a model, which sees that velocity only one
        frame later, must guess it. (Until 2026-12-07 the draws kept the velocity the generator had drawn
        there: on README's data that lifted the ceiling's SSIM at predicted frame 1 from 0.986 to 1.000.)"""
        if k < 1:
            raise ValueError(f"k={k}: expected at least 1 future")
        if self.context < 2:
            raise ValueError(f"context={self.context}: drawing futures from the context needs at least 2 frames "
                             "(one frame shows no velocity)")
        paths = []
        sprites, walked = self._objects(index, lambda rng_, frames, **motion: (
            bounce_trajectory(rng_, frames=frames, **motion), motion))  # a continuation keeps the path's length
        for (positions, velocities), motion in walked:
            paths.append([continue_trajectory(rng, positions, velocities, start=self.context - 1, **motion)[0]
                          for _ in range(k)])
        return np.stack([render(sprites, [p[j] for p in paths], channels=self.channels, size=self.size,
                                composite=self.composite) for j in range(k)])


class MovingSprites(BouncingObjects):
    """Procedural shapes bouncing on a black canvas."""

    def __init__(self, *, seed: int = 0, split: str = "train", size: int = 32, channels: int = 1,
                 frames: int = 15, objects: int = 2, sprite_min: int = 6, sprite_max: int = 10,
                 max_speed: int = 3, bounce: str = "stochastic", branches: int = 2, context: int = 5,
                 composite: str = "max", length: int = 10**9):
        if not 1 <= sprite_min <= sprite_max <= size:
            raise ValueError(f"sprite sizes [{sprite_min}, {sprite_max}] must lie in [1, {size}]")
        super().__init__(seed=seed, split=split, size=size, channels=channels, frames=frames, objects=objects,
                         max_speed=max_speed, bounce=bounce, branches=branches, context=context,
                         composite=composite, length=length)
        self.sprite_min, self.sprite_max = sprite_min, sprite_max

    def sprite(self, rng: np.random.Generator) -> np.ndarray:
        return random_sprite(rng, channels=self.channels, side_min=self.sprite_min, side_max=self.sprite_max)


class ForkToy(ClipSource):
    """One sprite glides right along the middle; at frame `fork_at` it turns into one of `branches`
    directions, equally likely, and keeps it. `futures(i)` lists every possible clip i could be."""

    lists_futures = True

    def __init__(self, *, seed: int = 0, split: str = "train", size: int = 16, channels: int = 1,
                 frames: int = 6, fork_at: int = 3, branches: int = 2, sprite: int = 4, speed: int = 2,
                 length: int = 10**9):
        if branches < 1:
            raise ValueError(f"branches={branches}: expected at least 1")
        if not 0 < fork_at < frames:
            raise ValueError(f"fork_at={fork_at}: expected a frame inside the clip (1..{frames - 1})")
        self.seed, self.split, self.size, self.channels, self.frames = seed, split, size, channels, frames
        self.fork_at, self.branches, self.sprite, self.speed, self.length = fork_at, branches, sprite, speed, length
        # Branch directions: angles spread evenly over [-60, 60] degrees around "right".
        angles = np.radians(np.linspace(-60, 60, branches)) if branches > 1 else np.zeros(1)
        self.directions = np.stack([np.sin(angles), np.cos(angles)], axis=1) * speed  # (branches, 2) as (dy, dx)
        clip_rng(seed, split, 0)

    def __len__(self) -> int:
        return self.length

    def _start(self, index: int):
        rng = clip_rng(self.seed, self.split, index)
        mid = (self.size - self.sprite) / 2
        start = np.array([mid + rng.uniform(-1, 1), rng.uniform(0, 1)])
        intensity = rng.uniform(0.7, 1.0)
        branch = int(rng.integers(self.branches))
        return start, intensity, branch

    def _render(self, start: np.ndarray, intensity: float, branch: int) -> np.ndarray:
        video = np.zeros((self.frames, self.channels, self.size, self.size), dtype=np.float32)
        sprite = np.full((self.channels, self.sprite, self.sprite), intensity, dtype=np.float32)
        pos = start.copy()
        limit = self.size - self.sprite
        for t in range(self.frames):
            top, left = np.clip(np.round(pos).astype(int), 0, limit)
            paste_max(video[t], sprite, top, left)
            pos = pos + (np.array([0.0, self.speed]) if t + 1 < self.fork_at else self.directions[branch])
        return video

    def clip(self, index: int) -> np.ndarray:
        return self._render(*self._start(index))

    def branch(self, index: int) -> int:
        """Which of the `branches` directions clip `index` takes."""
        return self._start(index)[2]

    def futures(self, index: int) -> np.ndarray:
        """(branches, t, c, h, w): every clip that shares clip `index`'s frames before the fork."""
        start, intensity, _ = self._start(index)
        return np.stack([self._render(start, intensity, b) for b in range(self.branches)])
