"""The API on trained models: scoring ranks plausible futures first, fill-in picks the observed branch."""

import numpy as np
import pytest
import torch

from vidpred.trained import TrainedPredictor, future_mask, load
from vidpred.config import parse_args
from vidpred.data import ForkToy
from vidpred.data.motion import bounce_trajectory, paste_max
from vidpred.data.sprites import random_sprite
from vidpred.training import train

SIZE, CONTEXT, HORIZON = 16, 3, 5


def _train(out, *args: str) -> TrainedPredictor:
    """The pixels decoder, whose every predicted pixel reads z: scoring and fill-in work through z, and the
    default glide decoder's futures differ mostly in the draws its sampling makes apart from z."""
    cfg = parse_args([f"--out={out}", "--wandb=disabled", "--model.decoder=pixels", f"--data.size={SIZE}",
                      "--data.sprite_min=4", "--data.max_speed=2", "--model.widths=8,16,16", "--model.window=2",
                      "--model.blocks=1", "--latent.dim=2", "--lr=3e-3", "--warmup=20", "--log_every=50", "--prior.kind=bank", *args])
    return load(train(cfg), device="cpu")


@pytest.fixture(scope="module")
def sprites_model(tmp_path_factory) -> TrainedPredictor:
    """Two sprites bouncing on 16x16 frames, 3 -> 5 frames: a few seconds of training."""
    return _train(tmp_path_factory.mktemp("sprites"), "--data.sprite_max=5", "--data.frames=8",
                  f"--context={CONTEXT}", f"--horizon={HORIZON}", "--steps=120", "--batch_size=16",
                  "--prior.fit_clips=64")


@pytest.fixture(scope="module")
def fork_model(tmp_path_factory) -> TrainedPredictor:
    """The fork toy: a sprite turns up or down after the context, 3 -> 2 frames."""
    return _train(tmp_path_factory.mktemp("fork"), "--data.kind=fork", "--data.frames=5", "--context=3",
                  "--horizon=2", "--steps=150", "--batch_size=32", "--prior.fit_clips=256")


def two_sprites(index: int, *, teleport_at: int | None = None) -> torch.Tensor:
    """(8, 1, 16, 16): two sprites drawn and moved by the built-in generator's rules; with
    `teleport_at`, the first sprite jumps across the canvas at that frame and moves on from there."""
    rng = np.random.default_rng(index)
    video = np.zeros((CONTEXT + HORIZON, 1, SIZE, SIZE), dtype=np.float32)
    for obj in range(2):
        sprite = random_sprite(rng, channels=1, side_min=4, side_max=5)
        side = sprite.shape[-1]
        positions, _ = bounce_trajectory(rng, frames=len(video), canvas=SIZE, size=side, max_speed=2)
        if obj == 0 and teleport_at is not None:  # a jump of 5 to 8 pixels per axis; max speed is 2
            positions[teleport_at:] = (positions[teleport_at:] + 8) % (SIZE - side + 1)
        for t, (top, left) in enumerate(positions):
            paste_max(video[t], sprite, top, left)
    return torch.from_numpy(video)


# --- scoring ------------------------------------------------------------------------------------------


def test_the_true_continuation_scores_lower_than_teleported_reversed_or_shuffled(sprites_model):
    clips = torch.stack([two_sprites(i) for i in range(16)])
    context, future = clips[:, :CONTEXT], clips[:, CONTEXT:]
    teleported = torch.stack([two_sprites(i, teleport_at=CONTEXT + 2) for i in range(16)])[:, CONTEXT:]
    assert torch.equal(teleported[:, :2], future[:, :2]) and not torch.equal(teleported, future)
    true = sprites_model.energy(context, future)
    for name, other in [("teleported", teleported), ("reversed", future.flip(1)),
                        ("shuffled", future[:, [2, 0, 4, 1, 3]])]:
        worse = sprites_model.energy(context, other)
        share = (worse.total > true.total).float().mean().item()
        assert share == 1.0, f"{name}: only {share:.0%} of clips score above the true continuation"
    # the teleport is flagged at the frame where it happens, not before
    tele = sprites_model.energy(context, teleported)
    assert torch.allclose(tele.per_frame[:, :2], true.per_frame[:, :2], atol=1e-5)
    assert (tele.per_frame[:, 2] > true.per_frame[:, 2]).all()


def test_free_energy_is_a_minimum_over_z_and_adds_up(sprites_model):
    clips = torch.stack([two_sprites(i) for i in range(4)])
    context, future = clips[:, :CONTEXT], clips[:, CONTEXT:]
    short, long = sprites_model.energy(context, future, steps=3), sprites_model.energy(context, future, steps=40)
    assert long.per_frame.shape == (4, HORIZON) and long.z.shape == (4, HORIZON, 2)
    assert torch.allclose(long.total, long.per_frame.sum(dim=1))
    assert torch.allclose(long.per_frame, long.cost + long.penalty)
    assert (long.per_frame <= short.per_frame + 1e-6).all()  # inference is monotone: more steps, never worse
    # at z = 0 the energy is only the cost of the deterministic teacher-forced prediction: never lower
    model, energy = sprites_model.model, sprites_model.energy_fn
    cond = model.teacher_forced(clips, CONTEXT)
    zero = energy(model.decode(cond, torch.zeros(4 * HORIZON, 2)), future.flatten(0, 1), torch.zeros(4 * HORIZON, 2))
    assert (long.per_frame.flatten() <= zero + 1e-6).all()
    # and the z* it reports gives the energy it reports
    again = energy(model.decode(cond, long.z.flatten(0, 1)), future.flatten(0, 1), long.z.flatten(0, 1))
    assert torch.allclose(again, long.per_frame.flatten(), atol=1e-6)


# --- filling in the blanks on the fork toy ----------------------------------------------------------


@pytest.fixture(scope="module")
def fork_clips():
    toy = ForkToy(seed=1, split="test", size=SIZE, frames=5, fork_at=3, branches=2, sprite=4, speed=2)
    clips = torch.stack([toy[i] for i in range(32)])
    branches = torch.stack([torch.from_numpy(toy.futures(i))[:, 3:] for i in range(32)])  # (32, 2, T, c, H, W)
    return clips[:, :3], clips[:, 3:], branches, torch.tensor([toy.branch(i) for i in range(32)])


def nearest_branch(futures: torch.Tensor, branches: torch.Tensor) -> torch.Tensor:
    """(n, T, c, H, W) futures -> (n,) index of the closest of each clip's two true futures."""
    return (futures[:, None] - branches).pow(2).mean(dim=(2, 3, 4, 5)).argmin(dim=1)


def test_unconditioned_samples_take_both_branches(fork_model, fork_clips):
    context, _, branches, _ = fork_clips
    futures = fork_model.sample(context, k=16, horizon=2, seed=0)  # (32, 16, T, c, H, W)
    taken = torch.stack([nearest_branch(futures[:, k], branches) for k in range(16)], dim=1)  # (32, 16)
    both = ((taken == 0).any(dim=1) & (taken == 1).any(dim=1)).float().mean().item()
    assert both >= 0.9, f"only {both:.0%} of clips have samples on both branches"
    assert 0.25 < taken.float().mean().item() < 0.75


@pytest.mark.parametrize("region, frames", [("all", [-1]), ("top", [0])],
                         ids=["the last frame as a goal", "the top half of the first frame"])
def test_conditioning_on_part_of_the_future_picks_the_branch_it_shows(fork_model, fork_clips, region, frames):
    context, future, branches, branch = fork_clips
    mask = future_mask(horizon=2, size=SIZE, region=region, frames=frames)
    filled = fork_model.infer(context, future, mask, steps=30, starts=2)
    assert filled.future.shape == future.shape and filled.z.shape == (32, 2, 2)
    hit = (nearest_branch(filled.future, branches) == branch).float().mean().item()
    assert hit >= 0.9, f"the filled-in future takes the observed branch in only {hit:.0%} of clips"
    ranked = fork_model.rank(context, future, mask, k=8)
    hit = (nearest_branch(ranked.futures[:, 0], branches) == branch).float().mean().item()
    assert hit >= 0.9, f"the best-ranked sample takes the observed branch in only {hit:.0%} of clips"


def test_conditioning_on_the_whole_future_reproduces_it(fork_model, fork_clips):
    context, future, branches, branch = fork_clips
    filled = fork_model.infer(context, future, torch.ones(1), steps=30, starts=2)
    err = (filled.future - future).pow(2).mean().item()
    blur = (fork_model.deterministic(context, horizon=2) - future).pow(2).mean().item()
    other = (filled.future - branches[torch.arange(32), 1 - branch]).pow(2).mean().item()
    assert err < 0.15 * blur and err < 0.1 * other, f"MSE {err:.4f}; z = 0: {blur:.4f}; other branch: {other:.4f}"
    assert torch.allclose(filled.energy, filled.per_frame.sum(dim=1))


def test_ranking_reorders_the_samples_by_energy(fork_model, fork_clips):
    context, future, _, _ = fork_clips
    mask = future_mask(horizon=2, size=SIZE, frames=[-1])
    ranked = fork_model.rank(context[:4], future[:4], mask, k=6, seed=3)
    samples = fork_model.sample(context[:4], k=6, horizon=2, seed=3)
    assert (ranked.energy[:, 1:] >= ranked.energy[:, :-1]).all()
    assert torch.equal(ranked.order.sort(dim=1).values, torch.arange(6).expand(4, 6))
    assert torch.allclose(ranked.futures, torch.stack([samples[i, ranked.order[i]] for i in range(4)]))


# --- masks and inputs ---------------------------------------------------------------------------------


def test_future_mask_regions_and_frames():
    m = future_mask(horizon=3, size=4, channels=2, region="bottom", frames=[-1])
    assert m.shape == (3, 2, 4, 4) and m[:2].sum() == 0 and m[2, :, 2:].eq(1).all() and m[2, :, :2].eq(0).all()
    box = future_mask(horizon=1, size=4, region="1:3,0:1")
    assert box[0, 0].nonzero().tolist() == [[1, 0], [2, 0]]
    with pytest.raises(ValueError, match="observed frame 3 is outside the 3 predicted frames"):
        future_mask(horizon=3, size=4, frames=[3])
    with pytest.raises(ValueError, match="region 'middle': expected all, top, bottom"):
        future_mask(horizon=3, size=4, region="middle")


def test_bad_inputs_are_refused_with_what_was_expected(fork_model, fork_clips):
    context, future, _, _ = fork_clips
    with pytest.raises(ValueError, match=r"mask has shape \(3, 1, 16, 16\); expected a shape that broadcasts to "
                                         r"the observed future \(b, T, c, H, W\) = \(32, 2, 1, 16, 16\)"):
        fork_model.infer(context, future, torch.ones(3, 1, 16, 16))
    with pytest.raises(ValueError, match=r"mask has values in \[0, 2\]"):
        fork_model.rank(context, future, torch.eye(16) * 2)
    with pytest.raises(ValueError, match=r"context has shape \(32, 3, 16, 16, 1\); expected \(b, t, 1, 16, 16\)"):
        fork_model.sample(context.permute(0, 1, 3, 4, 2))
    with pytest.raises(ValueError, match=r"future has pixels in \[0, 2\d\d\]; expected \[0, 1\]"):
        fork_model.energy(context, future * 255)
    one = fork_model.sample(context[0].numpy(), k=2, horizon=3)  # one clip (t, c, H, W) as an array is fine
    assert one.shape == (1, 2, 3, 1, 16, 16)
