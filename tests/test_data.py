import itertools

import numpy as np
import pytest

from vidpred.data import DataError, ForkToy, MovingSprites
from vidpred.data.motion import bounce_continuations, bounce_trajectory, paste, tangential_speeds
from vidpred.data.sprites import SHAPES, draw_shape


def test_clips_are_a_pure_function_of_seed_and_index():
    a, b = MovingSprites(seed=3), MovingSprites(seed=3)
    assert np.array_equal(a.clip(12), b.clip(12))
    assert not np.array_equal(a.clip(12), a.clip(13))
    assert not np.array_equal(a.clip(12), MovingSprites(seed=4).clip(12))
    assert not np.array_equal(a.clip(12), MovingSprites(seed=3, split="test").clip(12))


@pytest.mark.parametrize("channels", [1, 3])
def test_sprite_clip_shape_and_range(channels):
    clip = MovingSprites(channels=channels, size=32, frames=9).clip(0)
    assert clip.shape == (9, channels, 32, 32) and clip.dtype == np.float32
    assert clip.min() >= 0.0 and clip.max() <= 1.0 and clip.max() > 0.5


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_are_nonempty_and_within_the_box(shape):
    mask = draw_shape(shape, 9)
    assert mask.shape == (9, 9) and 0 < mask.mean() <= 1 and mask.max() == 1.0


@pytest.mark.parametrize("mode", ["stochastic", "deterministic", "discrete"])
def test_bounces_keep_objects_on_canvas_and_turn_only_at_walls(mode):
    rng = np.random.default_rng(0)
    canvas, size, limit = 32, 8, 24
    bounces = 0
    for _ in range(50):
        pos, vel = bounce_trajectory(rng, frames=40, canvas=canvas, size=size, max_speed=4, mode=mode, branches=3)
        assert pos.min() >= 0 and pos.max() <= limit
        for t in range(1, 40):
            moved = pos[t - 1] + vel[t - 1]  # where the object would be without walls
            crossed = (moved < 0) | (moved > limit)
            assert np.array_equal(pos[t], np.clip(moved, 0, limit))
            if not crossed.any():
                assert np.array_equal(vel[t], vel[t - 1]), f"velocity changed away from a wall at t={t}"
                continue
            bounces += 1
            for axis in np.flatnonzero(crossed):  # the new velocity leaves the wall it hit
                assert vel[t, axis] > 0 if moved[axis] < 0 else vel[t, axis] < 0
            if mode == "deterministic":
                assert np.array_equal(np.abs(vel[t]), np.abs(vel[t - 1]))  # mirrored: same speed
            if mode == "discrete" and not crossed.all():  # normal mirrored, tangential one of 3 speeds
                normal, tangent = np.flatnonzero(crossed)[0], np.flatnonzero(~crossed)[0]
                assert abs(vel[t, normal]) == abs(vel[t - 1, normal])
                assert vel[t, tangent] in (-4, 0, 4)
    assert bounces > 50  # the walls were actually exercised


def _reference_discrete_path(pos, vel, choices, limit, speeds):
    """An independent statement of the discrete rule: positions (frames, 2) for given choices."""
    pos, vel, out = np.array(pos), np.array(vel), []
    for choice in choices:
        low, high = pos < 0, pos > limit
        if (low | high).any():
            away = np.where(low, 1, -1) * np.abs(vel)
            vel = away if (low | high).all() else np.where(low | high, away, speeds[choice])
            pos = np.clip(pos, 0, limit)
        out.append(pos.copy())
        pos = pos + vel
    return np.stack(out)


@pytest.mark.parametrize("branches, frames", [(2, 9), (3, 7)])
def test_discrete_continuations_are_every_path_that_shares_the_context(branches, frames):
    """Brute force over every choice at every frame, kept when its first `context` positions match."""
    canvas, size, speed, context = 12, 4, 3, 4
    speeds = tangential_speeds(speed, branches)
    counts = []
    for seed in range(6):
        kwargs = dict(frames=frames, canvas=canvas, size=size, max_speed=speed, mode="discrete", branches=branches)
        pos, vel = bounce_trajectory(np.random.default_rng(seed), **kwargs)
        listed = bounce_continuations(np.random.default_rng(seed), context=context, **kwargs)
        expected = set()
        for choices in itertools.product(range(branches), repeat=frames):
            path = _reference_discrete_path(pos[0], vel[0], choices, canvas - size, speeds)
            if np.array_equal(path[:context], pos[:context]):
                expected.add(path.tobytes())
        assert {p.tobytes() for p in listed} == expected and len(listed) == len(expected)
        assert pos.tobytes() in expected  # the drawn path is one of them
        counts.append(len(listed))
    assert max(counts) > 2  # branching actually happened


@pytest.mark.parametrize("bounce", ["discrete", "deterministic"])
def test_sprite_futures_list_every_clip_sharing_the_context(bounce):
    source = MovingSprites(seed=2, split="test", size=16, frames=9, context=3, sprite_min=4, sprite_max=6,
                           max_speed=3, bounce=bounce, branches=2)
    sizes = []
    for index in range(8):
        clip, futures = source.clip(index), source.futures(index)
        assert futures.shape[1:] == clip.shape and futures.dtype == np.float32
        assert np.array_equal(futures[:, :3], np.broadcast_to(clip[:3], futures[:, :3].shape))
        assert sum(np.array_equal(f, clip) for f in futures) >= 1  # the clip is one of them
        sizes.append(len(futures))
    assert (set(sizes) == {1}) if bounce == "deterministic" else (max(sizes) > 1)


def test_stochastic_sources_do_not_pretend_to_enumerate_futures():
    stochastic = MovingSprites()
    assert not stochastic.lists_futures and MovingSprites(bounce="discrete").lists_futures and ForkToy().lists_futures
    with pytest.raises(DataError, match="cannot list the possible futures of a clip"):
        stochastic.futures(0)
    with pytest.raises(ValueError, match="too many futures"):
        bounce_continuations(np.random.default_rng(0), frames=5, canvas=16, size=4, max_speed=2,
                             mode="stochastic", context=2)


def test_discrete_bounces_refuse_more_branches_than_integer_speeds():
    with pytest.raises(ValueError, match=r"max_speed=1 take 2..3 branches"):
        MovingSprites(bounce="discrete", max_speed=1, branches=4)


def test_sum_compositing_clips_at_one_and_max_does_not_add():
    canvas = np.zeros((1, 4, 4), dtype=np.float32)
    sprite = np.full((1, 2, 2), 0.7, dtype=np.float32)
    paste(canvas, sprite, 0, 0, "sum")
    paste(canvas, sprite, 1, 1, "sum")
    assert canvas[0, 1, 1] == 1.0 and canvas[0, 0, 0] == pytest.approx(0.7)
    canvas[:] = 0
    paste(canvas, sprite, 0, 0, "max")
    paste(canvas, sprite, 1, 1, "max")
    assert canvas[0, 1, 1] == pytest.approx(0.7)


def test_fork_toy_futures_share_the_context_and_split_after():
    toy = ForkToy(frames=6, fork_at=3, branches=3)
    futures = toy.futures(5)
    assert futures.shape == (3, 6, 1, 16, 16)
    assert all(np.array_equal(f[:3], futures[0][:3]) for f in futures)
    assert not np.array_equal(futures[0][4], futures[1][4]) and not np.array_equal(futures[1][4], futures[2][4])
    assert any(np.array_equal(toy.clip(5), f) for f in futures)
    assert np.array_equal(toy.clip(5), futures[toy.branch(5)])


def test_fork_toy_branches_are_equally_likely():
    toy = ForkToy(branches=2)
    share = np.mean([toy.branch(i) for i in range(2000)])
    assert 0.45 < share < 0.55
