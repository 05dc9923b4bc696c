"""The bounce law of sampled futures: learnt from the bounces training clips show, drawn from at every bounce."""

from __future__ import annotations

import torch

from vidpred.build import predictor_of_kind
from vidpred.data.sprites import MovingSprites
from vidpred.energy import Energy
from vidpred.model import (BounceLaw, VideoPredictor, bounce_step, drawn_from, object_motion, observed_bounces, start_paths,
                           velocities_before)
from vidpred.objectives import EnergyObjective

from test_futures import draws_of, small, square


def test_drawn_from_picks_the_category_whose_cumulative_chance_a_uniform_falls_under():
    chances = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    picks = drawn_from(chances[torch.tensor([0, 0, 1, 1])], torch.tensor([0.1, 0.7, 0.0, 0.999]))
    assert picks.tolist() == [0, 1, 2, 2]
    uniform = torch.rand(1000)
    assert torch.equal(drawn_from(torch.full((1000, 7), 1 / 7), uniform), (uniform * 7).long().clamp(max=6))


def test_a_bounce_law_sets_the_velocity_an_object_leaves_a_wall_with():
    """bounce_step draws the new velocity from the law given the one before: the normal speed from its row of the
    speed it met the wall at, the tangential velocity from its row of the velocity along the wall before."""
    r = 3
    mirror = torch.eye(r)  # leave at the speed it came
    fast = torch.zeros(2 * r + 1, 2 * r + 1)
    fast[:, 0], fast[:, -1] = 0.5, 0.5  # along the wall: -3 or +3, whatever it was
    law = BounceLaw(mirror, fast)
    boxes = torch.tensor([[[1, 4, 10, 13], [1, 4, 10, 13], [1, 4, 1, 4]]])  # (top, bottom, left, right)
    velocity = torch.tensor([[[-2, 1], [-2, 1], [-3, -2]]])  # 0 and 1 meet the top wall, 2 the top-left corner
    paths = start_paths(velocity)
    draws = draws_of(torch.zeros(1, 3), bounce=torch.ones(1, 3, dtype=torch.bool),
                     speeds=torch.tensor([[[0.3, 0.3], [0.9, 0.9], [0.5, 0.5]]]))
    step = bounce_step(paths, boxes, draws, size=(16, 16), radius=r, law=law)
    assert step.velocity[0].tolist() == [[2, -3], [2, 3], [3, 2]]  # the corner (object 2) mirrors both
    uniform = bounce_step(paths, boxes, draws, size=(16, 16), radius=r)  # no law: SVG's uniform draws
    assert uniform.velocity[0, 0].tolist() == [1 + int(0.3 * r), int(0.3 * (2 * r + 1)) - r]


def test_each_bounce_of_an_object_draws_its_own_velocity():
    """An object's b-th bounce reads its b-th uniforms of draws.speeds (the last ones after B bounces), so two bounces
    of one future do not repeat one choice."""
    boxes = torch.tensor([[[2, 5, 2, 5]]])
    speeds = torch.tensor([[[[0.0, 0.0], [0.99, 0.99]]]])  # B = 2 bounces
    draws = draws_of(torch.zeros(1, 1), bounce=torch.ones(1, 1, dtype=torch.bool), speeds=speeds)
    paths = start_paths(torch.tensor([[[-3, 0]]]))
    first = bounce_step(paths, boxes, draws, size=(16, 16), radius=2)
    assert first.hits.item() == 1 and first.velocity[0, 0].tolist() == [1, -2]
    for hits in (1, 5):
        later = bounce_step(paths._replace(hits=torch.full((1, 1), hits)), boxes, draws, size=(16, 16), radius=2)
        assert later.velocity[0, 0].tolist() == [2, 2]  # away 1 + floor(0.99 * 2), along floor(0.99 * 5) - 2


def clips(bounce: str, n: int = 48) -> torch.Tensor:
    source = MovingSprites(seed=0, split="train", size=32, frames=10, objects=1, max_speed=3, bounce=bounce,
                           branches=2, context=5)
    return torch.stack([torch.as_tensor(source[i]) for i in range(n)])


def observed(video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    source = torch.cat([video[:, 4], object_motion(video[:, 3:5], radius=3).float()], dim=1)
    return observed_bounces(source, video[:, 5:], torch.zeros_like(video[:, 4]), radius=3)


def test_observed_bounces_recover_the_law_the_clips_were_made_with():
    """Discrete bounces mirror the normal speed and go along the wall at -3 or +3: the counts say so. SVG's
    stochastic bounces draw both anew: the counts spread over many cells."""
    normal, tangential = observed(clips("discrete"))
    assert normal.sum() >= 10 and tangential.sum() >= 5
    assert normal.diagonal().sum() >= 0.9 * normal.sum()
    assert tangential[:, [0, -1]].sum() >= 0.8 * tangential.sum()
    normal, tangential = observed(clips("stochastic"))
    assert normal.sum() >= 10 and normal.diagonal().sum() < 0.7 * normal.sum()
    assert (tangential.sum(dim=0) > 0).sum() >= 4


def test_an_object_is_counted_only_where_the_frames_show_its_bounce():
    """A square that glides on without meeting a wall, or a clip whose frames do not show it where the wall puts it
    (here: gone), adds nothing."""
    video = square(8, start=(6, 2), velocity=(0, 1), size=32)
    source = torch.cat([video[:, 2], object_motion(video[:, 1:3], radius=3).float()], dim=1)
    normal, tangential = observed_bounces(source, video[:, 3:], torch.zeros_like(video[:, 2]), radius=3)
    assert normal.sum() == 0 and tangential.sum() == 0
    wall = square(3, start=(6, 22), velocity=(0, 2), size=32)  # columns 26-29 in the last frame: the wall in 2
    source = torch.cat([wall[:, 2], object_motion(wall[:, 1:3], radius=3).float()], dim=1)
    normal, _ = observed_bounces(source, torch.zeros(1, 5, 1, 32, 32), torch.zeros_like(wall[:, 2]), radius=3)
    assert normal.sum() == 0


def test_velocities_before_read_each_objects_displacement_a_frame_earlier():
    video = square(3, start=(6, 2), velocity=(0, 2), size=16)
    video[0, 2] = 0
    video[0, 2, 0, 6:10, 5:9] = video[0, 1, 0, 6:10, 4:8]  # the last step cut short: 1 pixel instead of 2
    displacement = object_motion(video[:, 1:3], radius=2)
    objects = (displacement[:, 0] + 2) * 5 + displacement[:, 1] + 2
    before, known = velocities_before(objects, video[:, 2, 0] > 0.1, displacement,
                                      object_motion(video[:, 0:2], radius=2), radius=2)
    moving = int(objects[0, 7, 6])
    assert displacement[0, :, 7, 6].tolist() == [0, 1] and before[0, moving].tolist() == [0, 2] and known[0, moving]


def test_an_object_that_met_the_wall_in_the_last_context_frame_leaves_it_in_the_first_predicted_one():
    """The last context step of a square moving right at 2 a frame is cut short to 1 by the wall: it bounced there.
    A future drawn to bounce it has it leave the wall at once, at the drawn velocity; one that landed on the wall
    with a whole step stays there one more frame (the wall puts it back), as the clips' objects do."""
    model = small(output="glide", kernel=5, glide_mask="trust", sharp=True)
    context = torch.cat([square(3, start=(6, 7), velocity=(0, 2)), torch.zeros(1, 1, 1, 16, 16)], dim=1)
    texture = context[0, 2, 0, 6:10, 11:15].clone()  # columns 7-10, 9-12, 11-14 ...
    context[0, 3, 0, 6:10, 12:16] = texture  # ... then 12-15, on the wall (1 pixel instead of 2)
    count = model.glide_objects
    speeds = torch.tensor([0.5, 0.99]).expand(1, count, 2)  # along the wall 0, away from it 1 + floor(0.99 * 2) = 2
    draws = draws_of(torch.ones(1, count), fill=torch.ones(1), bounce=torch.ones(1, count, dtype=torch.bool),
                     speeds=speeds)
    frames, _ = model.rollout(context, 2, lambda h, k: torch.zeros(1, 3), draws=draws)
    for k, left in ((0, 10), (1, 8)):
        expected = torch.zeros(16, 16)
        expected[6:10, left:left + 4] = texture
        assert torch.allclose(frames[0, k, 0], expected, atol=2e-3)
    landed = square(4, start=(6, 6), velocity=(0, 2))  # columns 12-15 in the last frame: on the wall, not cut short
    frames, _ = model.rollout(landed, 2, lambda h, k: torch.zeros(1, 3), draws=draws)
    for k, left in ((0, 12), (1, 10)):  # it meets the wall in the first predicted frame: there, then away
        expected = torch.zeros(16, 16)
        expected[6:10, left:left + 4] = texture
        assert torch.allclose(frames[0, k, 0], expected, atol=2e-3)


def glide32(**options) -> VideoPredictor:
    """A tiny energy model of 32 x 32 frames with the glide decoder (r = 3) and, unless told, the trust mask."""
    torch.manual_seed(0)
    options = {"glide_mask": "trust", "sharp": True, **options}
    return predictor_of_kind("energy", channels=1, size=32, widths=(8, 16), window=2, blocks=1, z_dim=3, skip_frames=2,
                             output="glide", kernel=7, **options)


def test_training_counts_bounces_and_checkpoints_keep_them():
    """A training step of a glide model with glide_mask='trust' adds the bounces its clips show to the model's
    counts, which its state dict keeps; evaluation mode adds none; a state dict saved before counts existed loads
    with none (the uniform law), and other decoders have no counts."""
    model = glide32().train()
    assert model.bounce_law() is None
    video = clips("discrete", n=16)
    objective = EnergyObjective(model)
    objective.loss(video, context=5, energy=Energy(), draws=objective.draws(seed=0, step=0, clips=range(16), frames=5))
    counted = model.bounce_normal.sum().item()
    assert counted > 0 and model.bounce_law().normal.shape == (3, 3)
    assert torch.allclose(model.bounce_law().tangential.sum(dim=1), torch.ones(7))
    model.eval()
    objective.loss(video, context=5, energy=Energy(), draws=objective.draws(seed=0, step=0, clips=range(16), frames=5))
    assert model.bounce_normal.sum().item() == counted
    state = model.state_dict()
    fresh = glide32()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.bounce_normal, model.bounce_normal)
    fresh.load_state_dict({k: v for k, v in state.items() if not k.startswith("bounce_")})
    assert fresh.bounce_normal.sum() == 0 and fresh.bounce_law() is None
    assert not any(k.startswith("bounce_") for k in glide32(glide_mask="features").state_dict())
