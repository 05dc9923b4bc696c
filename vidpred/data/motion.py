"""Bouncing motion shared by every moving-object source (the SVG / SRVP Stochastic Moving MNIST rules).

An object of side `size` lives on a `canvas` x `canvas` frame; its top-left corner moves by an
integer velocity. Each frame, before it is drawn: if the object has crossed a wall it is put back
exactly on it and the velocity changes:
- `deterministic`: mirrored;
- `stochastic`: redrawn at random pointing away from that wall, with a fresh random tangential
  component (SVG);
- `discrete`: the component normal to the wall is mirrored and the tangential one becomes one of
  `branches` speeds evenly spaced in [-max_speed, max_speed] (a corner hit, both walls at once,
  mirrors both). The set of futures after a given frame is then finite, and
  `bounce_continuations` lists it — what mode coverage is measured against.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..choices import Bounce, Composite, check_choice

MAX_CONTINUATIONS = 4096  # per object; beyond this the tree of bounces is too big to list


def random_velocity(rng: np.random.Generator, max_speed: int) -> np.ndarray:
    """An integer (dy, dx), each in [-max_speed, max_speed], not both zero."""
    while True:
        v = rng.integers(-max_speed, max_speed + 1, size=2)
        if v.any():
            return v


def tangential_speeds(max_speed: int, branches: int) -> np.ndarray:
    """The `branches` tangential velocities a discrete bounce picks from: distinct integers evenly
    spaced in [-max_speed, max_speed], e.g. (-4, 4) for 2 branches, (-4, 0, 4) for 3."""
    if not 2 <= branches <= 2 * max_speed + 1:
        raise ValueError(f"discrete bounces with max_speed={max_speed} take 2..{2 * max_speed + 1} branches "
                         f"(distinct integer speeds), got {branches}")
    return np.round(np.linspace(-max_speed, max_speed, branches)).astype(np.int64)


def check_modes(*, bounce: str | None = None, composite: str | None = None) -> None:
    """Refuse a bounce mode or a compositing rule motion.py does not know."""
    if bounce is not None:
        check_choice("bounce", bounce, Bounce)
    if composite is not None:
        check_choice("composite", composite, Composite)


def _check(mode: str, size: int, canvas: int) -> int:
    check_modes(bounce=mode)
    if size > canvas:
        raise ValueError(f"object size {size} does not fit a {canvas}x{canvas} canvas")
    return canvas - size  # largest legal top-left coordinate


def _discrete_bounce(pos: np.ndarray, vel: np.ndarray, limit: int, speed: int) -> tuple[np.ndarray, np.ndarray]:
    """Position put back on the canvas and the velocity leaving it after a wall hit: the normal
    component mirrored, the tangential one set to `speed` (a corner hit mirrors both)."""
    hit = (pos < 0) | (pos > limit)
    away = np.where(pos < 0, 1, -1) * np.abs(vel)
    vel = away if hit.all() else np.where(hit, away, speed)
    return np.clip(pos, 0, limit), vel


def _discrete_paths(pos, vel, t: int, *, frames: int, limit: int, speeds: np.ndarray, prefix: np.ndarray,
                    path: list, out: list) -> None:
    """Depth-first walk of the tree of discrete bounces from frame t: appends to `out` every path
    (frames, 2) that continues `path` and whose positions at frames before len(prefix) are `prefix`'s."""
    while t < frames:
        if t < len(prefix) and not np.array_equal(np.clip(pos, 0, limit), prefix[t]):
            return  # this branch shows in the frames that must match: not a continuation
        hit = (pos < 0) | (pos > limit)
        if hit.any():
            options = speeds[:1] if hit.all() else speeds  # a corner hit has no choice to make
            for speed in options[1:]:  # every other branch continues in its own walk
                p, v = _discrete_bounce(pos, vel, limit, speed)
                _discrete_paths(p + v, v, t + 1, frames=frames, limit=limit, speeds=speeds, prefix=prefix,
                                path=path + [p], out=out)
                if len(out) > MAX_CONTINUATIONS:
                    raise ValueError(f"more than {MAX_CONTINUATIONS} continuations per object: use fewer "
                                     "branches, a lower max_speed or shorter clips")
            pos, vel = _discrete_bounce(pos, vel, limit, options[0])
        path = path + [pos]
        pos = pos + vel
        t += 1
    out.append(np.stack(path))


def bounce_trajectory(rng: np.random.Generator, *, frames: int, canvas: int, size: int, max_speed: int,
                      mode: str = "stochastic", branches: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Top-left positions (frames, 2) and the velocity (frames, 2) used to leave each frame.

    Positions always keep the object fully on the canvas. The velocity changes only on frames
    where the object touched a wall, and then points away from it.
    """
    limit = _check(mode, size, canvas)
    pos = rng.integers(0, limit + 1, size=2)
    vel = random_velocity(rng, max_speed)
    positions = np.empty((frames, 2), dtype=np.int64)
    velocities = np.empty((frames, 2), dtype=np.int64)
    _walk(rng, pos, vel, positions, velocities, first=0, limit=limit, max_speed=max_speed, mode=mode, branches=branches)
    return positions, velocities


def continue_trajectory(rng: np.random.Generator, positions: np.ndarray, velocities: np.ndarray, *, start: int,
                        canvas: int, size: int, max_speed: int, mode: str = "stochastic",
                        branches: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Positions and velocities (frames, 2) that keep a path's first `start` frames and go on from there under the same
    rules, with new bounces drawn from `rng`: one draw from the law of the path's future given
    everything the generator knew at frame start - 1 (where each object is and the velocity it
    leaves with). `positions`, `velocities`: a path of `bounce_trajectory`."""
    frames = len(positions)
    if not 1 <= start <= frames:
        raise ValueError(f"start={start}: expected a frame in 1..{frames}")
    limit = _check(mode, size, canvas)
    out, vel_out = positions.copy(), velocities.copy()
    pos, vel = positions[start - 1] + velocities[start - 1], velocities[start - 1].copy()
    _walk(rng, pos, vel, out, vel_out, first=start, limit=limit, max_speed=max_speed, mode=mode, branches=branches)
    return out, vel_out


def _walk(rng: np.random.Generator, pos: np.ndarray, vel: np.ndarray, positions: np.ndarray, velocities: np.ndarray,
          *, first: int, limit: int, max_speed: int, mode: str, branches: int) -> None:
    """Fill positions[first:] and velocities[first:] from the object at `pos` (not yet checked against
    the walls) moving by `vel`, drawing bounces from `rng` (discrete mode: every frame's branch up front)."""
    frames = len(positions)
    if mode == "discrete":
        speeds, choices = tangential_speeds(max_speed, branches), rng.integers(branches, size=frames)
    for t in range(first, frames):
        hit = (pos < 0) | (pos > limit)
        if hit.any() and mode == "discrete":
            pos, vel = _discrete_bounce(pos, vel, limit, speeds[choices[t]])
        elif hit.any():
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


def bounce_continuations(rng: np.random.Generator, *, frames: int, canvas: int, size: int, max_speed: int,
                         mode: str, branches: int = 2, context: int) -> np.ndarray:
    """(m, frames, 2): the positions of every path (in discrete or deterministic mode) whose first
    `context` positions are those of the path `bounce_trajectory` draws from this `rng` — that
    path included, duplicates removed. The rng is consumed exactly as `bounce_trajectory` does.
    """
    positions, velocities = bounce_trajectory(rng, frames=frames, canvas=canvas, size=size, max_speed=max_speed,
                                              mode=mode, branches=branches)
    if mode == "deterministic":  # one future: the path itself
        return positions[None]
    if mode != "discrete":
        raise ValueError(f"{mode} bounces have too many futures to list; use discrete or deterministic mode")
    out: list[np.ndarray] = []
    # Frame 0 never touches a wall, so velocities[0] is the initial velocity.
    _discrete_paths(positions[0], velocities[0], 0, frames=frames, limit=canvas - size,
                    speeds=tangential_speeds(max_speed, branches), prefix=positions[:context], path=[], out=out)
    return np.unique(np.stack(out), axis=0)


def paste(canvas: np.ndarray, sprite: np.ndarray, top: int, left: int, composite: str = "max") -> None:
    """Composite `sprite` (c, s, s) onto `canvas` (c, H, W) in place: pixel-wise max, or a sum
    clipped to 1 (both are used for Moving MNIST; with non-negative pixels, clipping after each
    paste equals clipping the total)."""
    s_h, s_w = sprite.shape[-2:]
    region = canvas[:, top:top + s_h, left:left + s_w]
    if composite == "max":
        np.maximum(region, sprite, out=region)
    elif composite == "sum":
        region += sprite
        np.minimum(region, 1.0, out=region)
    else:
        check_modes(composite=composite)


def paste_max(canvas: np.ndarray, sprite: np.ndarray, top: int, left: int) -> None:
    """Composite `sprite` (c, s, s) onto `canvas` (c, H, W) in place by pixel-wise max."""
    paste(canvas, sprite, top, left, "max")


def render(sprites: list[np.ndarray], paths: list[np.ndarray], *, channels: int, size: int,
           composite: str = "max") -> np.ndarray:
    """(t, c, size, size) float32: each sprite (c, s, s) drawn at its top-left positions (t, 2)."""
    video = np.zeros((len(paths[0]), channels, size, size), dtype=np.float32)
    for sprite, path in zip(sprites, paths):
        for t, (top, left) in enumerate(path):
            paste(video[t], sprite, top, left, composite)
    return video


def render_futures(sprites: list[np.ndarray], continuations: list[np.ndarray], *, channels: int, size: int,
                   composite: str = "max") -> np.ndarray:
    """(m, t, c, size, size): one clip per combination of the objects' continuations (n_i, t, 2)."""
    combos = itertools.product(*continuations)
    return np.stack([render(sprites, list(paths), channels=channels, size=size, composite=composite)
                     for paths in combos])
