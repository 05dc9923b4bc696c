import numpy as np
import pytest

from vidpred.data import ForkToy, MovingSprites
from vidpred.data.motion import bounce_trajectory
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


@pytest.mark.parametrize("mode", ["stochastic", "deterministic"])
def test_bounces_keep_objects_on_canvas_and_turn_only_at_walls(mode):
    rng = np.random.default_rng(0)
    canvas, size, limit = 32, 8, 24
    bounces = 0
    for _ in range(50):
        pos, vel = bounce_trajectory(rng, frames=40, canvas=canvas, size=size, max_speed=4, mode=mode)
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
    assert bounces > 50  # the walls were actually exercised


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
