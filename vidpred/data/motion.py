"""Bouncing motion shared by every moving-object source (the SVG / SRVP Stochastic Moving MNIST rules).

An object of side `size` lives on a `canvas` x `canvas` frame; its top-left corner moves by an
integer velocity. Each frame, before it is drawn: if the object has crossed a wall it is put back
exactly on it and the velocity changes — mirrored in `deterministic` mode, or redrawn at random
pointing away from that wall (and a fresh random tangential component) in `stochastic` mode.
"""

from __future__ import annotations

import numpy as np

BOUNCE_MODES = ("stochastic", "deterministic")


def random_velocity(rng: np.random.Generator, max_speed: int) -> np.ndarray:
    """An integer (dy, dx), each in [-max_speed, max_speed], not both zero."""
    while True:
        v = rng.integers(-max_speed, max_speed + 1, size=2)
        if v.any():
            return v


def bounce_trajectory(rng: np.random.Generator, *, frames: int, canvas: int, size: int,
                      max_speed: int, mode: str = "stochastic") -> tuple[np.ndarray, np.ndarray]:
    """Top-left positions (frames, 2) and the velocity (frames, 2) used to leave each frame.

    Positions always keep the object fully on the canvas. The velocity changes only on frames
    where the object touched a wall, and then points away from it.
    """
    if mode not in BOUNCE_MODES:
        raise ValueError(f"bounce mode {mode!r}: expected one of {', '.join(BOUNCE_MODES)}")
    if size > canvas:
        raise ValueError(f"object size {size} does not fit a {canvas}x{canvas} canvas")
    limit = canvas - size  # largest legal top-left coordinate
    pos = rng.integers(0, limit + 1, size=2)
    vel = random_velocity(rng, max_speed)
    positions = np.empty((frames, 2), dtype=np.int64)
    velocities = np.empty((frames, 2), dtype=np.int64)
    for t in range(frames):
        hit = (pos < 0) | (pos > limit)
        if hit.any():
            away = np.where(pos < 0, 1, -1)  # the sign a velocity must have to leave each wall
            pos = np.clip(pos, 0, limit)
            for axis in (0, 1):
                if hit[axis] and mode == "deterministic":
                    vel[axis] = away[axis] * abs(vel[axis])
                elif hit[axis]:
                    vel[axis] = away[axis] * rng.integers(1, max_speed + 1)
                elif mode == "stochastic":  # the tangential component is redrawn too (SVG)
                    vel[axis] = rng.integers(-max_speed, max_speed + 1)
        positions[t] = pos
        velocities[t] = vel
        pos = pos + vel
    return positions, velocities


def paste_max(canvas: np.ndarray, sprite: np.ndarray, top: int, left: int) -> None:
    """Composite `sprite` (c, s, s) onto `canvas` (c, H, W) in place by pixel-wise max."""
    s_h, s_w = sprite.shape[-2:]
    region = canvas[:, top:top + s_h, left:left + s_w]
    np.maximum(region, sprite, out=region)
