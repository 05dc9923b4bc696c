import itertools

import numpy as np
import pytest

from vidpred.data import DataError, ForkToy, MovingSprites
from vidpred.data.motion import (bounce_continuations, bounce_trajectory, continue_trajectory, paste,
                                 tangential_speeds)
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


def _check_bounce_rules(pos, vel, mode, limit, max_speed):
    """The rules of motion.py on one path: on the canvas, straight between walls, turning away at them.
    Returns how many bounces the path shows."""
    assert pos.min() >= 0 and pos.max() <= limit
    bounces = 0
    for t in range(1, len(pos)):
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
            assert vel[t, tangent] in (-max_speed, 0, max_speed)
        assert np.abs(vel[t]).max() <= max_speed
    return bounces


@pytest.mark.parametrize("mode", ["stochastic", "deterministic", "discrete"])
def test_bounces_keep_objects_on_canvas_and_turn_only_at_walls(mode):
    rng = np.random.default_rng(0)
    bounces = 0
    for _ in range(50):
        pos, vel = bounce_trajectory(rng, frames=40, canvas=32, size=8, max_speed=4, mode=mode, branches=3)
        bounces += _check_bounce_rules(pos, vel, mode, 24, 4)
    assert bounces > 50  # the walls were actually exercised


@pytest.mark.parametrize("mode", ["stochastic", "deterministic", "discrete"])
def test_continued_paths_keep_the_start_follow_the_rules_and_reach_the_true_future(mode):
    """A continuation is a draw of the path's future: same first frames, same rules after them, and
    over many draws the path's own future comes up (here, where few futures are possible)."""
    kwargs = dict(canvas=10, size=4, max_speed=1, mode=mode, branches=3)
    rng = np.random.default_rng(1)
    for seed in range(4):
        pos, vel = bounce_trajectory(np.random.default_rng(seed), frames=12, **kwargs)
        futures = set()
        for _ in range(300):
            p, v = continue_trajectory(rng, pos, vel, start=5, **kwargs)
            assert np.array_equal(p[:5], pos[:5]) and np.array_equal(v[:5], vel[:5])
            _check_bounce_rules(p, v, mode, 6, 1)
            futures.add(p.tobytes())
        assert pos.tobytes() in futures
        assert len(futures) == 1 if mode == "deterministic" else len(futures) >= 1
    p, v = continue_trajectory(rng, pos, vel, start=12, **kwargs)  # nothing left to draw: the path itself
    assert np.array_equal(p, pos) and np.array_equal(v, vel)
    with pytest.raises(ValueError, match="start=0: expected a frame in 1..12"):
        continue_trajectory(rng, pos, vel, start=0, **kwargs)


def test_stochastic_continuations_spread_where_bounces_come():
    """Stochastic bounces: draws differ after the first bounce from the last context frame on, never before it; one
    that bounced on the last context frame leaves it at velocities drawn afresh (a model sees them a frame later)."""
    source = MovingSprites(seed=0, split="test", size=16, frames=12, context=4, sprite_min=4, sprite_max=5,
                           max_speed=3, objects=1)
    spread, on_last = 0, 0
    for index in range(24):
        clip = source.clip(index)
        _, [(_, velocities)] = source._objects(index, lambda rng, **motion: bounce_trajectory(rng, **motion))
        draws = source.sample_futures(index, 40, np.random.default_rng(index))
        assert draws.shape == (40, *clip.shape) and draws.dtype == np.float32
        assert np.array_equal(draws[:, :4], np.broadcast_to(clip[:4], draws[:, :4].shape))
        distinct = [len({d[t].tobytes() for d in draws}) for t in range(12)]
        assert distinct[:4] == [1] * 4  # the context
        bounced_on_last = not np.array_equal(velocities[3], velocities[2])
        assert (distinct[4] > 1) == bounced_on_last  # else the velocity the last two frames show decides frame 4
        on_last += bounced_on_last
        first = next((t for t in range(4, 12) if distinct[t] > 1), None)
        if first is not None:  # until the first frame where draws part, they are the clip's frames
            assert np.array_equal(draws[:, :first], np.broadcast_to(clip[:first], draws[:, :first].shape))
            spread += 1
    assert spread >= 12 and on_last >= 1  # most of these clips bounce within 8 frames at 16x16
    one_frame = MovingSprites(seed=0, split="test", size=16, frames=12, context=1, sprite_min=4, sprite_max=5)
    with pytest.raises(ValueError, match="context=1: drawing futures from the context needs at least 2 frames"):
        one_frame.sample_futures(0, 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="k=0: expected at least 1 future"):
        source.sample_futures(0, 0, np.random.default_rng(0))


@pytest.mark.parametrize("bounce", ["discrete", "deterministic"])
def test_sampled_futures_are_among_the_listed_futures(bounce):
    source = MovingSprites(seed=2, split="test", size=16, frames=9, context=3, sprite_min=4, sprite_max=6,
                           max_speed=3, bounce=bounce, branches=2)
    for index in range(6):
        clip, listed = source.clip(index), source.futures(index)
        drawn = {f.tobytes() for f in source.sample_futures(index, 1000, np.random.default_rng(index))}
        # every draw is a listed future, and 1000 draws reach every one (the ways out of a bounce on the last
        # context frame included: the draws do not know which the clip took)
        assert drawn == {f.tobytes() for f in listed}


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
