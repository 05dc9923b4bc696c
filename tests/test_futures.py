"""The parts that keep futures together: recurrent predictor, kernels and splat decoders, free-running
training, chained prior."""

import math

import pytest
import torch
import torch.nn.functional as F

from vidpred.build import build_model, predictor_of_kind
from vidpred.config import ConfigError, parse_args, saved_config, to_dict
from vidpred.energy import Energy
from vidpred.model import (BOUNCE_KEEP, GLIDE_TIE, GLIDE_WINDOWS, WALL_NEAR, ConditionalPrior, Decoder, GlideDraws,
                           Rows, VideoPredictor, among, arrivals, background, bounce_step, box_mean, by_pixel,
                           carried_pieces, constant_motion, displacement_objects, drawn_count, drawn_glide, glide, joined,
                           main_motion, matching_costs, meets_wall, motion_costs, object_boxes, object_motion,
                           placed_objects, shift, start_paths, two_objects)
from vidpred.objectives import DeterministicObjective, EnergyObjective, StepDraws, VAEObjective, free_running


def small(*, perturb: bool = False, kind: str = "energy", chained: bool = False, **options) -> VideoPredictor:
    """A tiny model; `perturb` moves its weights off the initialization (whose zero output layer
    predicts the same frame whatever the input), so outputs depend on the inputs."""
    torch.manual_seed(0)
    model = predictor_of_kind(kind, chained=chained, channels=1, size=16, widths=(8, 16), window=2, blocks=1,
                              z_dim=3, skip_frames=2, **options).eval()
    if perturb:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("recurrent, output, generate, mask", [(True, "pixels", True, "features"), (False, "kernels", True, "features"),
                                                               (True, "kernels", True, "features"), (False, "kernels", False, "features"),
                                                               (False, "splat", True, "features"), (True, "splat", True, "features"),
                                                               (True, "splat", False, "features"), (False, "glide", True, "features"),
                                                               (True, "glide", False, "features"), (True, "glide", True, "trust")])
def test_teacher_forcing_replays_a_rollout_on_its_own_frames(recurrent, output, generate, mask):
    """The batched teacher-forced path and the step-by-step rollout are one model: fed the rollout's
    own frames as truth, teacher forcing reproduces its logits (the recurrent memory included)."""
    model = small(recurrent=recurrent, output=output, generate=generate, glide_mask=mask, perturb=True)
    context = torch.rand(2, 4, 1, 16, 16)
    z = torch.randn(2, 5, 3)
    frames, _ = model.rollout(context, horizon=5, draw_z=lambda h, k: z[:, k])
    cond = model.teacher_forced(torch.cat([context, frames], dim=1), context=4)
    replay = torch.sigmoid(model.decode(cond, z.flatten(0, 1))).view(2, 5, 1, 16, 16)
    assert torch.allclose(replay, frames, atol=1e-5)


def test_recurrent_memory_sees_the_whole_context():
    """A frame outside the window changes the recurrent model's prediction, not the window model's."""
    context = torch.rand(1, 5, 1, 16, 16)
    changed = context.clone()
    changed[:, 0] = torch.rand(1, 16, 16)
    zero = lambda h, k: torch.zeros(h.shape[0], 3)  # noqa: E731
    for recurrent, differs in [(False, False), (True, True)]:
        model = small(recurrent=recurrent, perturb=True)
        a, _ = model.rollout(context, 2, zero)
        b, _ = model.rollout(changed, 2, zero)
        assert (not torch.allclose(a, b, atol=1e-6)) == differs


def test_kernels_decoder_starts_as_a_copy_and_shifts_exactly_with_one_hot_taps():
    torch.manual_seed(0)
    dec = Decoder(channels=1, widths=(8, 16), z_dim=3, skip_frames=1, output="kernels", kernel=5)
    last = torch.zeros(2, 1, 16, 16)
    last[:, :, 4:8, 5:9] = 1.0  # a square
    features = torch.randn(2, 8, 16, 16)
    generated = torch.full((2, 1, 16, 16), -3.0)
    p = torch.sigmoid(dec.move(last, features, generated))
    # at initialization, whatever the features: the last frame itself (99% centre tap, 99.3% moved), the copy floor
    assert torch.allclose(p, last, atol=0.02)
    assert 0.98 < p[0, 0, 5, 6].item() < 1.0  # inside the square: (mask 0.993) x (centre 0.99 + neighbours' 0.01)
    assert p[0, 0, 12, 12].item() < 0.01  # far from it: black (mask * 0 + (1 - mask) * sigmoid(-3))
    edge = p[0, 0, 4, 4].item()  # beside the square's corner: only its neighbours' share leaks in
    assert 0.0 < edge < 0.01
    one = Decoder(channels=1, widths=(8, 16), z_dim=3, skip_frames=1, output="kernels", kernel=1)  # one tap: the copy
    assert torch.allclose(torch.sigmoid(one.move(last, features, generated)), last, atol=0.01)
    with torch.no_grad():  # one-hot taps: take the pixel one row up and two columns left, everywhere
        dec.taps.bias.zero_()
        dec.taps.bias[(2 - 1) * 5 + (2 - 2)] = 60.0
        dec.mask.bias.fill_(60.0)
    shifted = torch.sigmoid(dec.move(last, torch.zeros_like(features), generated))
    expected = torch.zeros_like(last)
    expected[:, :, 5:9, 7:11] = 1.0  # moved down by one and right by two, not blurred
    assert torch.allclose(shifted, expected, atol=2e-3)


def square(frames: int, *, start=(3, 4), velocity=(2, -1), size: int = 16, side: int = 4) -> torch.Tensor:
    """A bright square moving at constant velocity: (1, frames, 1, size, size)."""
    video = torch.zeros(1, frames, 1, size, size)
    texture = torch.linspace(0.5, 1.0, side * side).view(side, side)  # moves with the square
    for t in range(frames):
        y, x = start[0] + t * velocity[0], start[1] + t * velocity[1]
        video[0, t, 0, y:y + side, x:x + side] = texture
    return video


def displacement(index: int, kernel: int) -> tuple[int, int]:
    r = kernel // 2
    return index // kernel - r, index % kernel - r


@pytest.mark.parametrize("velocity", [(2, -1), (0, 0), (-3, 3)])
def test_motion_costs_are_lowest_at_the_displacement_between_the_two_frames(velocity):
    video = square(2, start=(6, 6), velocity=velocity, size=20, side=6)
    costs = motion_costs(video[:, 0], video[:, 1], radius=3)  # (1, 49, 20, 20)
    inside = costs[0, :, 7:11, 7:11].flatten(1)  # blocks inside the square's second position
    assert {displacement(int(j), 7) for j in inside.argmin(dim=0)} == {velocity}
    assert (inside.min(dim=0).values == 0).all()


def test_splat_decoder_sends_each_pixel_by_its_displacement_and_keeps_it_whole():
    dec = Decoder(channels=1, widths=(8, 16), z_dim=3, skip_frames=1, output="splat", kernel=5)
    last = square(1, start=(4, 5))[:, 0]
    features, generated = torch.zeros(1, 8, 16, 16), torch.full((1, 1, 16, 16), -30.0)
    no_motion = torch.zeros(1, 25, 16, 16)
    with torch.no_grad():  # every pixel sends itself one row down and two columns left
        dec.taps.bias.zero_()
        dec.taps.bias[(1 + 2) * 5 + (-2 + 2)] = 60.0
        dec.mask.bias.fill_(60.0)
    moved = torch.sigmoid(dec.splat(last, no_motion, features, generated))
    expected = torch.roll(last, (1, -2), dims=(-2, -1))
    assert torch.allclose(moved, expected, atol=2e-3)


def test_sharp_kernels_start_as_an_exact_copy_never_blend_and_pass_gradients_to_the_soft_mix():
    """model.sharp with the kernels decoder: forward, each output pixel is its likeliest source pixel or
    its generated value, never a blend (untrained: exactly the last frame, where the soft decoder leaks
    its neighbours' 1%); backward, the gradient reaches every tap's logit and the mask (straight-through)."""
    torch.manual_seed(0)
    soft = Decoder(channels=1, widths=(8, 16), z_dim=3, skip_frames=1, output="kernels", kernel=5)
    sharp = Decoder(channels=1, widths=(8, 16), z_dim=3, skip_frames=1, output="kernels", kernel=5, sharp=True)
    sharp.load_state_dict(soft.state_dict())
    last = torch.zeros(2, 1, 16, 16)
    last[:, :, 4:8, 5:9] = 1.0
    features, generated = torch.randn(2, 8, 16, 16), torch.full((2, 1, 16, 16), -3.0)
    exact = torch.sigmoid(sharp.move(last, features, generated))
    assert torch.allclose(exact, last, atol=2e-3)  # (MOVED_EPS keeps pixels off 0 and 1)
    assert torch.sigmoid(soft.move(last, features, generated))[0, 0, 4, 4] > 1e-3  # the soft one leaks
    with torch.no_grad():  # likeliest tap: one row up, two columns left (60% of the weight); mask 0.4: generated
        for dec in (soft, sharp):
            dec.taps.bias.zero_()
            dec.taps.bias[(2 - 1) * 5 + (2 - 2)] = math.log(0.6 / 0.4 * 24)
            dec.mask.bias.fill_(math.log(0.6 / 0.4))
    expected = torch.zeros_like(last)
    expected[:, :, 5:9, 7:11] = 1.0
    moved = torch.sigmoid(sharp.move(last, torch.zeros_like(features), generated))
    assert torch.allclose(moved, expected, atol=2e-3)  # the shifted square, whole
    blend = torch.sigmoid(soft.move(last, torch.zeros_like(features), generated))
    assert 0.3 < blend[0, 0, 5, 7].item() < 0.7  # the soft decoder: 60% of it, mixed with generated black
    with torch.no_grad():
        sharp.mask.bias.fill_(math.log(0.4 / 0.6))  # mask 0.4 < 1/2: every pixel is the generated one
    assert torch.allclose(torch.sigmoid(sharp.move(last, torch.zeros_like(features), generated)),
                          torch.full_like(last, torch.sigmoid(torch.tensor(-3.0)).item()), atol=2e-3)
    with torch.no_grad():
        sharp.mask.bias.fill_(math.log(0.6 / 0.4))  # moved again (a generated pixel gives its taps no gradient)
    target = torch.roll(last, (1, 1), dims=(-2, -1))
    F.binary_cross_entropy_with_logits(sharp.move(last, features, generated), target).backward()
    assert sharp.taps.weight.grad.abs().sum() > 0 and sharp.mask.weight.grad.abs().sum() > 0
    assert (sharp.taps.bias.grad != 0).sum() > 1  # not only the chosen tap's


@pytest.mark.parametrize("output", ["kernels", "splat"])
def test_without_a_generated_branch_every_pixel_is_moved_and_every_weight_learns(output):
    """model.generate=false: no mask, no generated pixels; the output is the moved last frame alone
    (kernels: untrained, the copy with its 1% leak; far from content exactly dark, not the generated
    branch's grey), and a training step reaches every parameter (none left unused, as DDP requires)."""
    torch.manual_seed(0)
    dec = Decoder(channels=1, widths=(8, 16), z_dim=3, skip_frames=1, output=output, kernel=5, generate=False)
    assert dec.mask is None and dec.out is None
    assert not any(name.startswith(("mask.", "out.")) for name, _ in dec.named_parameters())
    last = torch.zeros(2, 1, 16, 16)
    last[:, :, 4:8, 5:9] = 1.0
    features = torch.randn(2, 8, 16, 16)
    if output == "kernels":
        p = torch.sigmoid(dec.move(last, features, None))
        assert torch.allclose(p, last, atol=0.011)  # the copy start, 99% on the centre tap
        assert p[0, 0, 12, 12].item() < 1e-3  # with a generated branch: (1 - 0.993) x sigmoid(-3) = 3e-4 more
        with torch.no_grad():  # one-hot taps: one row up and two columns left, everywhere
            dec.taps.bias.zero_()
            dec.taps.bias[(2 - 1) * 5 + (2 - 2)] = 60.0
        expected = torch.zeros_like(last)
        expected[:, :, 5:9, 7:11] = 1.0
        assert torch.allclose(torch.sigmoid(dec.move(last, torch.zeros_like(features), None)), expected, atol=2e-3)
    model = small(output=output, kernel=5, generate=False).train()
    assert model.decoder.out is None
    cond, target = model.teacher_forced_pairs(square(5, velocity=(1, 1)), context=3)
    Energy()(model.decode(cond, torch.randn(2, 3)), target, torch.zeros(2, 3)).sum().backward()
    unused = {name.split(".")[0] for name, p in model.named_parameters() if p.grad is None}
    assert unused == {"latent_encoder", "prior"}  # the heads that decoding does not read (inference and sampling do)
    with pytest.raises(ConfigError, match="model.generate=false needs model.decoder=kernels, splat or glide"):
        parse_args(["--model.generate=false", "--model.decoder=pixels"])
    assert not parse_args(["--model.generate=false", f"--model.decoder={output}"]).model.generate
    with pytest.raises(ValueError, match="generate=False leaves the pixels decoder nothing to output"):
        Decoder(channels=1, widths=(8, 16), z_dim=3, output="pixels", generate=False)


@pytest.mark.parametrize("output", ["kernels", "splat"])
def test_a_held_generated_branch_leaves_the_moved_frame_and_enters_linearly(output):
    """generate_after = N: for N steps the output is the moved frame alone, as without the branch (whose
    weights get zero gradients: every parameter still takes part, as DDP needs); over the next N steps its
    share of the output rises linearly; from then on the output is the plain decoder's."""
    torch.manual_seed(0)
    held = Decoder(channels=1, widths=(8, 16), z_dim=3, skip_frames=1, output=output, kernel=5, generate_after=4)
    plain = Decoder(channels=1, widths=(8, 16), z_dim=3, skip_frames=1, output=output, kernel=5)
    alone = Decoder(channels=1, widths=(8, 16), z_dim=3, skip_frames=1, output=output, kernel=5, generate=False)
    with torch.no_grad():  # a mask well off 1 and a bright generated frame, so the branch shows where it is blended
        for p in [*held.mask.parameters(), *held.out.parameters(), *held.taps.parameters()]:
            p.normal_(0.0, 0.5)
    plain.load_state_dict({k: v for k, v in held.state_dict().items() if k != "release"})
    alone.load_state_dict({k: v for k, v in plain.state_dict().items() if not k.startswith(("mask.", "out."))})
    last = torch.rand(2, 1, 16, 16)
    features = torch.randn(2, 8, 16, 16)
    motion = motion_costs(torch.rand(2, 1, 16, 16), last, radius=2) if output == "splat" else None

    def frame(dec):
        generated = dec.out(features) if dec.generate else None
        logits = dec.splat(last, motion, features, generated) if output == "splat" else dec.move(last, features, generated)
        return torch.sigmoid(logits)

    assert held.release.item() == 0.0 and "release" in held.state_dict()
    for step, share in [(0, 0.0), (3, 0.0), (4, 0.25), (6, 0.75), (7, 1.0), (50, 1.0)]:
        held.at_step(step)
        assert held.release.item() == pytest.approx(share)
    with torch.no_grad():
        moved, blended = frame(alone), frame(plain)
    assert (blended - moved).abs().max() > 0.05  # the branch shows in the plain decoder's output
    held.at_step(3)
    frame(held).sum().backward()
    assert torch.allclose(frame(held), moved, atol=1e-6)  # held: the moved frame alone
    heads = {name: p.grad for name, p in held.named_parameters() if name.startswith(("taps.", "mask.", "out.", "motion"))}
    assert len(heads) == (7 if output == "splat" else 6) and all(g is not None for g in heads.values())
    for name, grad in heads.items():  # the heads read here: the moving ones learn, the branch's get zeros
        assert (grad.abs().sum() == 0) == name.startswith(("mask.", "out.")), name
    held.at_step(5)  # half released: halfway between the moved frame and the blend
    with torch.no_grad():
        assert torch.allclose(frame(held), (moved + blended) / 2, atol=1e-5)
        held.at_step(7)
        assert torch.allclose(frame(held), blended, atol=1e-6)


def test_generate_after_needs_a_moving_decoder_with_its_branch_and_travels_in_checkpoints(tmp_path):
    from conftest import tiny_args
    from vidpred.checkpoint import load_checkpoint
    from vidpred.training import train

    for wrong, why in [(["--model.decoder=pixels", "--model.generate_after=3"],
                        "it needs model.decoder=kernels, splat or glide with model.generate=true"),
                       (["--model.decoder=kernels", "--model.generate=false", "--model.generate_after=3"],
                        "with model.generate=true"),
                       (["--model.decoder=kernels", "--model.generate_after=-1"], "expected 0 \\(off\\) or a number")]:
        with pytest.raises(ConfigError, match=why):
            parse_args(wrong)
    with pytest.raises(ValueError, match="generate_after=2: expected 0, or a number of steps with output='kernels'"):
        Decoder(channels=1, widths=(8, 16), z_dim=3, output="pixels", generate_after=2)
    assert "release" not in Decoder(channels=1, widths=(8, 16), z_dim=3, output="kernels").state_dict()
    run = tmp_path / "run"
    options = ["--model.decoder=kernels", "--model.kernel=5", "--model.generate_after=3"]
    stopped = load_checkpoint(train(parse_args(tiny_args(run, *options, "--stop_at=4"))))  # steps 0-3: held for 3
    assert stopped["model"]["decoder.release"].item() == pytest.approx(1 / 3)  # then 1/3 released at step 3
    resumed = load_checkpoint(train(parse_args(tiny_args(run, *options, "--resume=true"))))
    assert resumed["model"]["decoder.release"].item() == 1.0  # steps 4-5: fully released at step 5


def test_sharp_needs_a_decoder_that_moves_pixels():
    with pytest.raises(ConfigError, match="model.sharp=true needs model.decoder=kernels, splat or glide.*pixels decoder moves none"):
        parse_args(["--model.sharp=true", "--model.decoder=pixels"])
    assert parse_args(["--model.sharp=true", "--model.decoder=kernels"]).model.sharp


@pytest.mark.parametrize("sharp", [False, True])
def test_splat_model_starts_by_continuing_the_motion_it_sees(sharp):
    """Untrained, the splat decoder moves each pixel as it moved between the last two frames: constant
    motion, exact with sharp=true; the pixel decoder predicts a dark frame."""
    video = square(5, start=(2, 12), velocity=(2, -2))
    model = small(output="splat", kernel=5, sharp=sharp)
    frames, _ = model.rollout(video[:, :3], horizon=2, draw_z=lambda h, k: torch.zeros(1, 3))
    error = (frames - video[:, 3:]).abs()
    if sharp:
        assert error.max() < 5e-3  # (MOVED_EPS keeps pixels off 0 and 1, twice)
    else:
        assert error[:, 0].mean() < 0.02 and error.mean() < 0.05
    pixels = small(output="pixels")
    dark, _ = pixels.rollout(video[:, :3], horizon=2, draw_z=lambda h, k: torch.zeros(1, 3))
    assert (dark - video[:, 3:]).abs().mean() > 3 * error.mean()


def test_sharp_splat_passes_gradients_to_the_soft_choices():
    """Straight-through: the forward pass takes the likeliest displacement, the backward pass reaches
    the logits of every displacement and the mask."""
    model = small(output="splat", kernel=5, sharp=True).train()
    video = square(5, velocity=(1, 1))
    cond, target = model.teacher_forced_pairs(video, context=3)
    loss = Energy()(model.decode(cond, torch.zeros(2, 3)), target, torch.zeros(2, 3)).sum()
    loss.backward()
    assert model.decoder.taps.weight.grad.abs().sum() > 0 and model.decoder.mask.weight.grad.abs().sum() > 0
    assert model.decoder.motion_scale.grad is not None and model.decoder.motion_scale.grad != 0


@pytest.mark.parametrize("kind", ["energy", "vae", "deterministic"])
def test_free_running_trains_through_the_fed_back_frames(kind):
    """The loss of frame k > 1 reaches the encoder through the predicted frames fed back: without
    that gradient, free-running training would be teacher forcing on the model's outputs."""
    model = small(kind=kind, recurrent=True, output="kernels").train()
    video = torch.rand(3, 6, 1, 16, 16)
    energy = Energy(l1=0.01)
    if kind == "energy":
        latents = EnergyObjective(model, steps=1, step_size=0.03, encoder_weight=1.0).frame_latents(energy)
    elif kind == "vae":
        latents = VAEObjective(model, kl_weight=1e-3).frame_latents(energy, StepDraws(noise=torch.randn(3, 3, 3)))
    else:
        latents = DeterministicObjective(model).frame_latents(energy)
    fed_back = []

    def spy(k, cond, target, z_prev):
        if k == 1:  # the first predicted frame, now the newest input
            cond.last.retain_grad()
            fed_back.append(cond.last)
        return latents(k, cond, target, z_prev)

    result = free_running(model, video, context=3, energy=energy, latents=spy)
    assert result.kept.shape == (9, 3) and result.per_frame["energy"].shape == (3, 3)
    assert result.stats["energy"] == pytest.approx(result.per_frame["energy"].mean().item())
    assert fed_back[0].requires_grad and not torch.equal(fed_back[0], video[:, 3])
    result.loss.backward()
    assert fed_back[0].grad is not None and fed_back[0].grad.abs().sum() > 0


def test_detached_feedback_rolls_out_the_same_frames_but_no_gradient_runs_through_them():
    """`feedback_grad=False`: the same forward pass (same loss), but the frame fed back carries no
    gradient, so the loss of frame k trains only the step that made it from the model's own inputs."""
    model = small(recurrent=True, perturb=True).train()
    video = torch.rand(3, 6, 1, 16, 16)
    energy = Energy(l1=0.01)
    latents = DeterministicObjective(model).frame_latents(energy)
    results, seen = {}, {}
    for grad in (True, False):
        inputs = []

        def spy(k, cond, target, z_prev):
            inputs.append(cond.last)
            return latents(k, cond, target, z_prev)

        results[grad] = free_running(model, video, context=3, energy=energy, latents=spy, feedback_grad=grad)
        seen[grad] = inputs
    assert results[False].loss.item() == pytest.approx(results[True].loss.item(), rel=1e-6)
    assert seen[True][1].requires_grad and not seen[False][1].requires_grad
    assert torch.equal(seen[True][2].detach(), seen[False][2])  # the same fed-back frames
    results[False].loss.backward()  # still trains the weights
    assert model.decoder.out.weight.grad.abs().sum() > 0


def count_encoder_rows(model: VideoPredictor) -> list[int]:
    """Rows (frames) the model's frame encoder sees from now on, one entry per call."""
    rows: list[int] = []
    model.encoder.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    return rows


@pytest.mark.parametrize("recurrent", [False, True])
def test_latent_feedback_advances_on_the_decoders_features_and_encodes_the_context_only(recurrent):
    """feedback='latent': the newest entry of the state is the decoder's features of the predicted frame
    (z included), not its pixels encoded again: the encoder runs once, on the context; what `advance` is
    handed as pixels changes nothing (frame feedback: it does); a frame's z reaches every later frame."""
    context = torch.rand(2, 4, 1, 16, 16)
    z = torch.randn(2, 4, 3)
    model = small(recurrent=recurrent, perturb=True, feedback="latent")
    rows = count_encoder_rows(model)
    frames, zs = model.rollout(context, horizon=4, draw_z=lambda h, k: z[:, k])
    assert frames.shape == (2, 4, 1, 16, 16) and torch.equal(zs, z)
    assert rows == [2 * (4 if recurrent else 2)]  # the context frames the state reads, nothing after
    for feedback, matters in [("latent", False), ("frames", True)]:
        model = small(recurrent=recurrent, perturb=True, feedback=feedback)
        state = model.begin(context)
        cond, memory = model.condition(state)
        logits, levels = model.decode_levels(cond, z[:, 0])
        assert torch.equal(logits, model.decode(cond, z[:, 0]))
        assert [level.shape[1:] for level in levels] == [(8, 16, 16), (16, 8, 8)]  # the encoder's widths, finest first
        after = [model.condition(model.advance(state, memory, pixels, levels))[0].h
                 for pixels in (torch.sigmoid(logits), torch.rand(2, 1, 16, 16))]
        assert (not torch.allclose(after[0], after[1])) == matters
    model = small(recurrent=recurrent, perturb=True, feedback="latent")
    changed = z.clone()
    changed[:, 0] += 1.0
    other, _ = model.rollout(context, horizon=4, draw_z=lambda h, k: changed[:, k])
    assert (other[:, 1:] - frames[:, 1:]).abs().amax(dim=(2, 3, 4)).min() > 0  # z_1 moves frames 2-4 too


def test_latent_feedback_has_no_teacher_forcing_and_trains_free_running_through_the_features():
    """Teacher forcing and a feature-less advance are refused, naming what to do; free-running training
    sends frame k's cost back through the features fed back from frame k - 1, as far as the context's encoding,
    and its futures sample as any model's (the same per-block streams)."""
    from vidpred.sampling import draw_futures

    model = small(perturb=True, feedback="latent").train()
    video = torch.rand(2, 6, 1, 16, 16)
    with pytest.raises(ValueError, match=r"feedback='latent'.*no teacher-forced conditioning.*rollout=true"):
        model.teacher_forced(video, context=3)
    state = model.begin(video[:, :3])
    _, memory = model.condition(state)
    with pytest.raises(ValueError, match="advances on the decoder's features"):
        model.advance(state, memory, video[:, 3])
    energy = Energy(ball=2.0)
    draws = StepDraws(keep=torch.ones(2, 3, 1), noise=torch.zeros(2, 3, 3))
    latents = EnergyObjective(model, fused=True).frame_latents(energy, draws)
    advance, fed = model.advance, []

    def spy(state, memory, frame, levels=None):
        if levels[-1].requires_grad:
            levels[-1].retain_grad()
        fed.append(levels[-1])
        return advance(state, memory, frame, levels)

    model.advance = spy
    for grad in (True, False):
        fed.clear()
        model.zero_grad()
        rows = count_encoder_rows(model)
        result = free_running(model, video, context=3, energy=energy, latents=latents, feedback_grad=grad)
        assert rows == [2 * 2] and len(fed) == 2  # the window's context frames; frames 1 and 2 fed back
        result.loss.backward()
        # the bottleneck fed back from frame 1 only reaches later frames' costs: with gradients through time, it trains
        assert (fed[0].grad is not None and fed[0].grad.abs().sum() > 0) == grad and fed[0].requires_grad == grad
        assert model.encoder.stem[0].weight.grad.abs().sum() > 0
    del model.advance
    model.eval()
    futures, latents_drawn = draw_futures(EnergyObjective(model), video[:, :3], samples=30, horizon=3)
    alone, _ = draw_futures(EnergyObjective(model), video[1:, :3], samples=30, horizon=3, clip_ids=[1])
    assert futures.shape == (2, 30, 3, 1, 16, 16) and torch.allclose(futures[1], alone[0], atol=1e-5)
    assert latents_drawn[0].std(dim=0).mean() > 0  # K different futures


def test_a_latent_feedback_run_trains_validates_and_evaluates(tmp_path):
    """End to end: free-running training with latent feedback, validation and the end-of-run bank on
    rollouts, a checkpoint that rebuilds the same model kind, and an evaluation of its futures."""
    from conftest import tiny_args
    from vidpred.build import load_predictor
    from vidpred.evaluation import EvalConfig, evaluate
    from vidpred.training import train

    run = tmp_path / "run"
    train(parse_args(tiny_args(run, "--model.feedback=latent", "--rollout=true", "--val_every=3", "--val_clips=4")))
    model = load_predictor(str(run / "checkpoints" / "last.pt"))[0]
    assert model.feedback == "latent"
    metrics = evaluate(EvalConfig(ckpt=str(run / "checkpoints" / "last.pt"), samples=3, horizon=4, clips=2,
                                  context=3, out=str(tmp_path / "eval"), video="none"))
    assert len(metrics["best_of_k"]["psnr_per_frame"]) == 4 and (tmp_path / "eval" / "samples.png").is_file()
    # teacher-forced scoring has no state to read: refused by the API, and by `vidpred sample --score` before any work
    from vidpred.sample_cli import SampleConfig
    from vidpred.sample_cli import run as sample_run
    from vidpred.trained import load

    predictor = load(run / "checkpoints" / "last.pt", "cpu")
    clips = torch.rand(1, 6, 1, 16, 16)
    with pytest.raises(ValueError, match=r"model.feedback=latent.*no teacher-forced state.*by rollouts"):
        predictor.energy(clips[:, :3], clips[:, 3:])
    assert predictor.sample(clips[:, :3], k=2, horizon=3).shape == (1, 2, 3, 1, 16, 16)
    with pytest.raises(ConfigError, match=r"--score: this model feeds back the decoder's features"):
        sample_run(SampleConfig(ckpt=str(run / "checkpoints" / "last.pt"), input=str(tmp_path / "never_read.mp4"),
                                score=True, device="cpu"))


def test_latent_feedback_refuses_teacher_forced_steps_in_the_config(tmp_path):
    from conftest import tiny_args

    for extra in ([], ["--rollout=true", "--rollout_start=2"], ["--rollout=true", "--pushforward=1"]):
        with pytest.raises(ConfigError, match="model.feedback=latent .*set --rollout=true"):
            parse_args(tiny_args(tmp_path, "--model.feedback=latent", *extra))
    with pytest.raises(ConfigError, match="model.feedback='sideways': expected one of frames, latent"):
        parse_args(tiny_args(tmp_path, "--model.feedback=sideways", "--rollout=true"))
    assert parse_args(tiny_args(tmp_path, "--model.feedback=latent", "--rollout=true")).model.feedback == "latent"


def test_latent_dropout_mask_zeroes_the_decoded_latent_per_frame():
    model = small(recurrent=True)
    video = torch.rand(2, 5, 1, 16, 16)
    keep = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 2, 1)
    seen = []
    latents = EnergyObjective(model, steps=2, step_size=0.5, encoder_weight=1.0).frame_latents(Energy(),
                                                                                                StepDraws(keep=keep))

    def spy(k, cond, target, z_prev):
        found = latents(k, cond, target, z_prev)
        seen.append(found.z.detach())
        return found

    result = free_running(model, video, context=3, energy=Energy(), latents=spy)
    assert torch.all(seen[0][1] == 0) and torch.all(seen[1][0] == 0)
    assert seen[0][0].abs().sum() > 0 and seen[1][1].abs().sum() > 0
    assert result.kept.abs().sum(dim=1).gt(0).all()  # the bank keeps z*, dropped or not


def test_chained_prior_reads_the_previous_latent():
    torch.manual_seed(0)
    prior = ConditionalPrior(width=16, z_dim=2, components=1, chained=True)
    opt = torch.optim.Adam(prior.parameters(), lr=1e-2)
    h = torch.randn(64, 16, 4, 4)
    for _ in range(1000):  # z_k = z_{k-1}: only the previous latent tells it
        z_prev = torch.randn(64, 2)
        opt.zero_grad()
        prior.nll(h, z_prev, z_prev).mean().backward()
        opt.step()
    z_prev = torch.tensor([[1.0, -0.7]]).repeat(200, 1)
    draws = prior.sample(h[:1].repeat(200, 1, 1, 1), generator=torch.Generator().manual_seed(0), z_prev=z_prev)
    assert torch.allclose(draws.mean(dim=0), z_prev[0], atol=0.25)


def test_chained_drawer_hands_each_step_its_own_previous_draw():
    model = small(recurrent=True, chained=True)
    calls = []
    original = model.prior.sample

    def recording(h, generator=None, z_prev=None, rows=None):
        z = original(h, generator=generator, z_prev=z_prev, rows=rows)
        calls.append((z_prev, z))
        return z

    model.prior.sample = recording
    drawer = EnergyObjective(model).drawer("learned", None, torch.Generator().manual_seed(1))
    model.rollout(torch.rand(2, 3, 1, 16, 16), 3, drawer)
    assert calls[0][0] is None
    assert torch.equal(calls[1][0], calls[0][1]) and torch.equal(calls[2][0], calls[1][1])


@pytest.mark.parametrize("kind, chained", [("energy", False), ("energy", True), ("vae", False)])
def test_a_prior_told_the_rows_draws_each_as_it_would_among_all(kind, chained):
    """Given `Rows`, a prior reads the states of the rows asked for only but draws the noise of all rows.total, so
    each asked row gets the z it draws among all (to float rounding: the trunk runs on fewer rows); none asked, none
    given."""
    model = small(kind=kind, chained=chained, perturb=True)
    h, z_prev = torch.randn(7, 16, 4, 4), torch.randn(7, 3)
    seeded = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    every = model.prior.sample(h, generator=seeded(), z_prev=z_prev)
    index = torch.tensor([1, 4, 5])
    some = model.prior.sample(h[index], generator=seeded(), z_prev=z_prev[index], rows=Rows(index, 7))
    assert some.shape == (3, 3) and torch.allclose(some, every[index], atol=1e-5)
    assert (some != 0).all(dim=1).sum() >= 2 and not torch.allclose(some[0], some[1])  # drawn, and each its own
    assert model.prior.sample(h[:0], generator=seeded(), z_prev=z_prev[:0], rows=Rows(index[:0], 7)).shape == (0, 3)


@pytest.mark.parametrize("prior", ["bank", "fitted"])
def test_a_bank_drawer_told_the_rows_gives_them_their_draws_among_all(prior):
    from vidpred.prior import LatentBank
    bank = LatentBank(3, 16)
    bank.add(torch.randn(16, 3))
    bank.fit()
    drawer = lambda: EnergyObjective(small()).drawer(prior, bank, torch.Generator().manual_seed(2))  # noqa: E731
    h, index = torch.randn(6, 16, 4, 4), torch.tensor([0, 3])
    every, some = drawer()(h, 0), drawer()(h[index], 0, Rows(index, 6))
    assert torch.equal(some, every[index]) and not torch.equal(some, every[:2])


def test_a_free_running_run_resumes_exactly_and_evaluates(tmp_path):
    """The new parts end to end: teacher-forced then free-running steps, a checkpoint that resumes to
    the uninterrupted log, and an evaluation whose futures come from the chained prior."""
    import json

    from conftest import tiny_args
    from vidpred.config import parse_args
    from vidpred.evaluation import EvalConfig, evaluate
    from vidpred.training import train

    new = ["--rollout=true", "--rollout_start=2", "--model.recurrent=true", "--model.decoder=kernels",
           "--model.kernel=5", "--prior.chained=true", "--val_every=3", "--val_clips=4"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(parse_args(tiny_args(whole, *new)))
    train(parse_args(tiny_args(split, *new, "--stop_at=4")))
    train(parse_args(tiny_args(split, *new, "--resume=true")))
    records = [[json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()] for run in (whole, split)]
    losses = [[r["loss"] for r in log if "loss" in r] for log in records]
    assert len(losses[0]) == 3 and losses[0] == pytest.approx(losses[1], rel=1e-6)
    metrics = evaluate(EvalConfig(ckpt=str(whole / "checkpoints" / "last.pt"), samples=3, horizon=4, clips=2,
                                  context=3, out=str(tmp_path / "eval"), video="none"))
    assert len(metrics["best_of_k"]["psnr_per_frame"]) == 4
    assert (tmp_path / "eval" / "samples.png").is_file()


def test_prior_draws_from_given_noise_follow_the_mixture():
    """`draw` picks the component by inverse CDF of its uniform: the point mass at 0 as often as its weight,
    and a Gaussian component's draws with its mean and spread."""
    torch.manual_seed(0)
    prior = ConditionalPrior(width=16, z_dim=2, components=2)
    h = torch.randn(1, 16, 4, 4).expand(20000, -1, -1, -1)
    logits, mu, log_sigma = prior.params(h[:1])
    weights = logits.softmax(dim=1)[0]
    u, normal = torch.rand(20000), torch.randn(20000, 2)
    z = prior.draw(h, u, normal)
    zero = (z == 0).all(dim=1)
    assert zero.float().mean().item() == pytest.approx(weights[0].item(), abs=0.015)
    assert torch.equal(zero, u < weights[0])  # the first share of [0, 1) is the point mass
    first = (u >= weights[0]) & (u < weights[0] + weights[1])
    assert torch.allclose(z[first], mu[0, 0] + log_sigma[0, 0].exp() * normal[first], atol=1e-5)


@pytest.mark.parametrize("proposal", ["prior", "normal"])
def test_inference_starts_from_the_proposed_latent_of_lowest_cost(proposal):
    """Among each frame's M proposals (the learned prior's draws, or a standard normal's), the one whose
    decoded frame costs least; the l1 price does not choose (it would always pick the smallest)."""
    model = small(perturb=True)
    objective = EnergyObjective(model, steps=0, prior_draws=6, proposal=proposal)
    video = torch.rand(2, 5, 1, 16, 16)
    draws = objective.draws(seed=3, step=7, clips=range(2), frames=2)
    assert draws.pick.shape == (4, 6) and draws.spread.shape == (4, 6, 3)
    again = objective.draws(seed=3, step=7, clips=range(1, 2), frames=2)  # one clip of the batch: its own draws
    assert torch.equal(again.pick, draws.pick[2:]) and torch.equal(again.spread, draws.spread[2:])
    energy = Energy(l1=10.0)  # a price that would make the smallest proposal win if it were part of the choice
    cond, target = model.teacher_forced_pairs(video, 3)
    start, guess = objective.start(cond, target, energy, draws)
    not_smallest = []
    with torch.no_grad():
        for i in range(4):  # brute force: decode each of the frame's six proposals alone
            h = cond.h[i:i + 1].expand(6, -1, -1, -1)
            candidates = model.prior.draw(h, draws.pick[i], draws.spread[i]) if proposal == "prior" else draws.spread[i]
            one = cond._replace(h=h, last=cond.last[i:i + 1].expand(6, -1, -1, -1),
                                skips=[s[i:i + 1].expand(6, -1, -1, -1) for s in cond.skips])
            costs = energy.reconstruction(model.decode(one, candidates), target[i:i + 1].expand(6, -1, -1, -1))
            assert torch.allclose(start[i], candidates[costs.argmin()])
            not_smallest.append(bool(costs.argmin() != candidates.abs().sum(dim=1).argmin()))
    assert any(not_smallest)  # with the price in the choice, the smallest proposal would have won every frame
    assert torch.allclose(guess, model.amortized_latent(cond, target))  # A is still trained toward z*
    zero_steps = objective.infer(video, context=3, energy=energy, draws=draws)[3]
    assert torch.equal(zero_steps.z, start)


def test_pushforward_inputs_are_the_models_own_rollout_as_deep_as_the_rounds():
    """After r rounds, the first r predicted frames a target may read are exactly what the model's
    free-running rollout makes from the context (z = 0 for the deterministic kind); the context and
    the frames past round r's reach come from the model's teacher-forced guesses, never the truth."""
    model = small(kind="deterministic", perturb=True)
    video = torch.rand(2, 7, 1, 16, 16)  # 3 context frames, 4 to predict
    rollout, _ = model.rollout(video[:, :3], horizon=4, draw_z=lambda h, k: torch.zeros(h.shape[0], 3))
    energy = Energy()
    for rounds in (1, 2, 3):
        pushed = DeterministicObjective(model, pushforward=rounds).pushed_inputs(video, context=3, energy=energy)
        assert pushed.shape == video.shape
        assert torch.equal(pushed[:, :3], video[:, :3]) and torch.equal(pushed[:, -1], video[:, -1])
        assert torch.allclose(pushed[:, 3:3 + rounds], rollout[:, :rounds], atol=1e-5)
        assert not torch.allclose(pushed[:, 3:6], video[:, 3:6], atol=0.05)
    assert torch.equal(DeterministicObjective(model).loss(video, context=3, energy=energy, draws=StepDraws())[0],
                       DeterministicObjective(model).teacher_forced_loss(video, context=3, energy=energy,
                                                                        draws=StepDraws())[0])


@pytest.mark.parametrize("kind", ["energy", "vae"])
def test_pushforward_loss_reads_the_pushed_frames_and_trains_on_the_true_ones(kind):
    """The loss with pushforward is the teacher-forced loss whose inputs are the pushed frames and
    whose targets are the true ones; the pushed frames carry no gradient, the weights get one."""
    model = small(kind=kind, perturb=True).train()
    video = torch.rand(2, 6, 1, 16, 16)
    energy = Energy(l1=0.01)
    make = (lambda r: EnergyObjective(model, steps=1, step_size=0.03, pushforward=r)) if kind == "energy" else \
        (lambda r: VAEObjective(model, kl_weight=1e-3, pushforward=r))
    draws = make(0).draws(seed=0, step=3, clips=range(2), frames=3)
    pushed = make(1).pushed_inputs(video, context=3, energy=energy)
    assert not pushed.requires_grad and not torch.allclose(pushed[:, 3:5], video[:, 3:5], atol=0.05)
    loss, stats, kept = make(1).loss(video, context=3, energy=energy, draws=draws)
    again, _, _ = make(0).teacher_forced_loss(video, context=3, energy=energy, draws=draws, inputs=pushed)
    plain, _, _ = make(0).loss(video, context=3, energy=energy, draws=draws)
    assert loss.item() == pytest.approx(again.item(), rel=1e-5) and loss.item() != pytest.approx(plain.item())
    assert stats["target_mean"] == pytest.approx(video[:, 3:].mean().item())  # the targets stay true
    loss.backward()
    assert model.encoder.stem[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="pushforward=-1"):
        make(-1)


def test_a_pushforward_run_trains_and_its_objective_pushes(tmp_path, monkeypatch):
    """--pushforward reaches the objective training builds: a run's steps feed its own predictions."""
    import json

    from conftest import tiny_args
    from vidpred.config import parse_args
    from vidpred.training import train

    rounds = []
    original = EnergyObjective.pushed_inputs

    def spy(self, video, **kwargs):
        rounds.append(self.pushforward)
        return original(self, video, **kwargs)

    monkeypatch.setattr(EnergyObjective, "pushed_inputs", spy)
    train(parse_args(tiny_args(tmp_path / "run", "--pushforward=2")))
    assert rounds and set(rounds) == {2}
    assert json.loads((tmp_path / "run" / "config.json").read_text())["pushforward"] == 2
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert losses and all(math.isfinite(x) for x in losses)


def test_channel_noise_decodes_z_star_plus_sigma_eps_and_the_prior_fits_the_noisy_latent(monkeypatch):
    """With latent.noise = σ the decoder is trained at z* + σ·ε (0 on dropped frames), inference and
    the kept latents never see the noise, the prior's NLL is of the noisy latent, and the noise is
    seeded per clip like every other draw of a step."""
    from vidpred.objectives import latent_noise

    model = small(perturb=True).train()
    video = torch.rand(2, 5, 1, 16, 16)
    energy = Energy(ball=1.0)
    quiet = EnergyObjective(model, steps=1, step_size=0.03)
    noisy = EnergyObjective(model, steps=1, step_size=0.03, noise=0.5, dropout=0.5)
    assert quiet.draws(seed=1, step=2, clips=range(2), frames=2).noise is None
    draws = noisy.draws(seed=1, step=2, clips=range(2), frames=2)
    assert torch.equal(draws.noise, 0.5 * latent_noise(seed=1, step=2, clips=range(2), frames=2, dim=3))
    assert torch.equal(noisy.draws(seed=1, step=2, clips=range(1, 2), frames=2).noise, draws.noise[2:])
    keep = torch.tensor([[1.0], [0.0], [1.0], [1.0]])  # frame 2 of clip 1 dropped
    draws = draws._replace(keep=keep)
    decoded = []
    original = model.decode
    monkeypatch.setattr(model, "decode", lambda cond, z: decoded.append(z.detach()) or original(cond, z))
    _, _, kept_quiet = quiet.loss(video, context=3, energy=energy, draws=draws._replace(noise=None))
    loss, stats, kept = noisy.loss(video, context=3, energy=energy, draws=draws)
    assert torch.equal(kept, kept_quiet)  # inference is the same: z* never sees the channel's noise
    assert torch.allclose(decoded[-1], (kept + draws.noise) * keep)
    assert torch.all(decoded[-1][1] == 0)
    cond, _ = model.teacher_forced_pairs(video, 3)
    nll = model.prior.nll(cond.h, kept + draws.noise).mean().item() / 3
    assert stats["prior_nll"] == pytest.approx(nll, rel=1e-5)
    assert stats["prior_nll"] != pytest.approx(model.prior.nll(cond.h, kept).mean().item() / 3, rel=1e-3)
    with pytest.raises(ValueError, match="noise=-1"):
        EnergyObjective(model, noise=-1.0)


def test_channel_noise_in_a_rollout_decodes_noisy_latents_and_keeps_z_star():
    model = small(recurrent=True, perturb=True)
    video = torch.rand(2, 5, 1, 16, 16)
    noise = torch.full((2, 2, 3), 0.25)
    latents = EnergyObjective(model, steps=1, step_size=0.03, noise=0.25).frame_latents(
        Energy(), StepDraws(noise=noise))
    for k in range(2):
        cond, _ = model.condition(model.begin(video[:, :3]))
        found = latents(k, cond, video[:, 3 + k], torch.zeros(2, 3))
        assert torch.allclose(found.z.detach(), found.kept + 0.25)


def test_target_reading_encoder_guesses_from_the_state_and_the_targets_features(tmp_path):
    """model.encoder_reads=target: z⁰ = A(h, Enc(y)), a function of the target frame itself (not of
    the residual); A's gradient stops at its input, so neither the frame encoder nor the predictor is
    trained by it (when they were, the shapes were never learned: bench/README.md); a run with it
    trains, saves and loads back."""
    from conftest import tiny_args
    from vidpred.config import ConfigError, parse_args
    from vidpred.model import TargetEncoder
    from vidpred.trained import load
    from vidpred.training import train

    model = small(reads="target", perturb=True).train()
    assert isinstance(model.latent_encoder, TargetEncoder)
    video = torch.rand(2, 5, 1, 16, 16)
    cond, target = model.teacher_forced_pairs(video, 3)
    guess = model.amortized_latent(cond, target)
    seen = model.encoder(target)[-1]
    assert torch.allclose(guess, model.latent_encoder(torch.cat([cond.h, seen], dim=1)), atol=1e-5)
    assert not torch.allclose(guess, model.amortized_latent(cond, target.flip(0)), atol=1e-4)
    guess.pow(2).sum().backward()  # A's own gradient: into A only
    assert model.latent_encoder.head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in [*model.encoder.parameters(), *model.predictor.parameters()])
    model.zero_grad(set_to_none=True)
    loss, _, _ = EnergyObjective(model, steps=1).loss(video, context=3, energy=Energy(),
                                                      draws=StepDraws(keep=torch.ones(4, 1)))
    loss.backward()
    assert model.latent_encoder.head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="reads='pixels'"):
        small(reads="pixels")
    with pytest.raises(ConfigError, match="model.encoder_reads"):
        parse_args(tiny_args(tmp_path / "bad", "--model.encoder_reads=pixels"))
    ckpt = train(parse_args(tiny_args(tmp_path / "run", "--model.encoder_reads=target")))
    assert isinstance(load(ckpt).model.latent_encoder, TargetEncoder)


def test_joint_prior_adds_weighted_nll_of_the_sent_latent_with_gradients_into_the_state():
    """latent.prior_weight = w adds w·(-log p(z* + σε | h)) on kept frames (0 on dropped ones), ramped
    by kl_warmup, with gradients into the state (the frame encoder), the prior and the amortized
    encoder; w = 0 leaves the loss and every gradient as it was."""
    model = small(perturb=True).train()
    video = torch.rand(2, 5, 1, 16, 16)
    energy = Energy(ball=2.0)
    keep = torch.tensor([[1.0], [0.0], [1.0], [1.0]])  # frame 2 of clip 1 trained at z = 0
    noise = torch.full((4, 3), 0.3)
    draws = StepDraws(keep=keep, noise=noise)

    def grads(objective):
        model.zero_grad()
        loss, stats, kept = objective.loss(video, context=3, energy=energy, draws=draws)
        loss.backward()
        return loss.item(), stats, kept, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    base_loss, base_stats, kept, base = grads(EnergyObjective(model, noise=0.3))
    assert "joint_prior" not in base_stats
    w = 0.05
    joint = EnergyObjective(model, noise=0.3, prior_weight=w, kl_warmup=4)
    joint.at_step(1)  # half of the ramp: the term counts 2/4 of w
    loss, stats, kept_joint, after = grads(joint)
    assert torch.equal(kept_joint, kept)  # inference does not see the term
    cond, _ = model.teacher_forced_pairs(video, 3)
    nll = model.prior.nll(cond.h, kept + noise) * keep.view(-1)
    expected = 0.5 * w * nll.mean().item()
    assert stats["joint_prior"] == pytest.approx(expected, rel=1e-4)
    assert loss == pytest.approx(base_loss + expected, rel=1e-5)
    frame_encoder = [n for n in base if n.startswith("encoder.")]
    assert frame_encoder and any(not torch.allclose(base[n], after[n]) for n in frame_encoder)
    assert any(not torch.allclose(base[n], after[n]) for n in base if n.startswith("latent_encoder."))
    # the same term on the free-running path, where the frame's latent is found on the rollout's state
    latents = joint.frame_latents(energy, StepDraws(keep=keep.view(2, 2, 1), noise=noise.view(2, 2, 3)))
    cond, _ = model.condition(model.begin(video[:, :3]))
    found = latents(0, cond, video[:, 3], torch.zeros(2, 3))
    quiet = EnergyObjective(model, noise=0.3).frame_latents(energy, StepDraws(keep=keep.view(2, 2, 1),
                                                                              noise=noise.view(2, 2, 3)))
    plain = quiet(0, cond, video[:, 3], torch.zeros(2, 3))
    term = 0.5 * w * model.prior.nll(cond.h, found.kept + 0.3) * keep.view(2, 2)[:, 0]
    assert torch.allclose(found.extra - plain.extra, term, rtol=1e-4, atol=1e-6)
    assert torch.allclose(found.stats["joint_prior"], term.detach())
    with pytest.raises(ValueError, match="prior_weight=-1"):
        EnergyObjective(model, prior_weight=-1.0)


def test_joint_prior_is_a_training_term_only():
    """Validation's latents (train=False) neither add the joint prior term nor log it."""
    model = small(perturb=True)
    video = torch.rand(2, 5, 1, 16, 16)
    cond, _ = model.condition(model.begin(video[:, :3]))
    joint = EnergyObjective(model, noise=0.3, prior_weight=0.05).frame_latents(Energy(), train=False)
    plain = EnergyObjective(model, noise=0.3).frame_latents(Energy(), train=False)
    found, base = joint(0, cond, video[:, 3], torch.zeros(2, 3)), plain(0, cond, video[:, 3], torch.zeros(2, 3))
    assert "joint_prior" not in found.stats
    assert torch.equal(found.extra, base.extra)


def test_fused_step_adds_the_pull_of_one_normalized_descent_step_to_the_latents_gradient():
    """latent.fused: the latent sent is z⁰ projected onto the ball (straight-through), and the backward
    adds 2w/rows·(z⁰ - z*) with z* = prox(z⁰ - s·g, s), s = η / rms(g), g a row's gradient of the loss;
    a row the loss sends nothing (a dropped frame) is pulled only onto the ball."""
    model = small()
    energy = Energy(ball=1.0, l1=0.01)
    w, eta, rows = 0.5, 0.1, 3
    objective = EnergyObjective(model, steps=1, step_size=eta, encoder_weight=w, fused=True)
    z0 = torch.tensor([[0.3, -0.2, 0.1], [2.0, 0.0, 0.0], [0.4, 0.4, -0.1]], requires_grad=True)
    z, kept = objective.fused_latent(z0, energy, rows=rows)
    assert torch.allclose(z.detach(), energy.project(z0.detach())) and torch.equal(kept, z.detach())
    assert kept[1].norm().item() == pytest.approx(1.0)  # projected onto the ball
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0], [1.0], [0.0]])  # row 3 is "dropped": the loss sends it no gradient
    loss = ((z * mask - targets) ** 2).sum(dim=1).mean()
    loss.backward()
    g = 2 * (kept * mask - targets) * mask  # each row's gradient of its own term
    rms = g.pow(2).mean(dim=1, keepdim=True).sqrt()
    s = torch.where(rms > 0, eta / rms.clamp(min=1e-30), torch.zeros_like(rms))
    z_star = energy.prox(kept - s * g, s)
    assert torch.equal(z_star[2], kept[2])
    expected = g / rows + 2 * w / rows * (z0.detach() - z_star)
    assert torch.allclose(z0.grad, expected, atol=1e-6)
    # the pull's target z* is a step toward lower energy (the loss plus l1, the ball kept)
    e = lambda z: ((z - targets[:2]) ** 2).sum(dim=1) + energy.l1 * z.abs().sum(dim=1)  # noqa: E731
    assert torch.all(e(z_star[:2]) < e(kept[:2])) and torch.all(z_star.norm(dim=1) <= 1.0 + 1e-6)


def test_fused_training_makes_no_inference_passes_and_trains_a_at_the_sent_latent(monkeypatch):
    """A fused training step decodes twice (the residual's z = 0 and the training pass) against four
    for the separate step; the decoder is trained at z⁰ + σε, kept on the ball; A gets the raw
    gradient plus the pull, and no inference statistics are logged (there is no separate inference)."""
    model = small(perturb=True).train()
    video = torch.rand(2, 5, 1, 16, 16)
    energy = Energy(ball=2.0)
    draws = StepDraws(keep=torch.tensor([[1.0], [0.0], [1.0], [1.0]]), noise=torch.full((4, 3), 0.3))
    calls = []
    original = model.decode
    monkeypatch.setattr(model, "decode", lambda cond, z: calls.append(z.detach()) or original(cond, z))
    EnergyObjective(model, noise=0.3, fused=False).loss(video, context=3, energy=energy, draws=draws)
    assert len(calls) == 4
    calls.clear()
    model.zero_grad()
    fused = EnergyObjective(model, noise=0.3, fused=True)
    loss, stats, kept = fused.loss(video, context=3, energy=energy, draws=draws)
    assert len(calls) == 2 and torch.all(calls[0] == 0)
    cond, target = model.teacher_forced_pairs(video, 3)
    guess = energy.project(model.amortized_latent(cond, target))
    assert torch.allclose(kept, guess, atol=1e-6)
    assert torch.allclose(calls[1], (guess + 0.3) * draws.keep, atol=1e-6)
    assert not {"energy_before", "energy_after", "encoder_loss"} & set(stats)
    loss.backward()
    assert model.latent_encoder.head.weight.grad.abs().sum() > 0
    no_pull = EnergyObjective(model, noise=0.3, fused=True, encoder_weight=0.0)
    model.zero_grad()
    no_pull.loss(video, context=3, energy=energy, draws=draws)[0].backward()
    pulled = dict(model.named_parameters())["latent_encoder.head.weight"].grad.clone()
    model.zero_grad()
    fused.loss(video, context=3, energy=energy, draws=draws)[0].backward()
    assert not torch.allclose(pulled, model.latent_encoder.head.weight.grad)  # the pull reaches A
    assert not EnergyObjective(model, steps=3, fused=True).fused  # more steps run in separate passes
    calls.clear()
    fused.loss(video, context=3, energy=Energy(ball=2.0, l1=0.01), draws=draws)
    assert len(calls) == 4  # sparsity's exact zeros are the proximal step's: an l1 energy infers separately


def test_fused_rollout_pulls_by_the_rollouts_mean_and_validation_still_infers():
    """On the free-running path the fused latent is averaged over b * T frames; validation
    (train=False) runs the separate inference and reports its energies."""
    model = small(recurrent=True, perturb=True).train()
    video = torch.rand(2, 5, 1, 16, 16)
    draws = StepDraws(keep=torch.ones(2, 2, 1), noise=torch.zeros(2, 2, 3))
    fused = EnergyObjective(model, fused=True)
    result = free_running(model, video, context=3, energy=Energy(ball=2.0), latents=fused.frame_latents(Energy(ball=2.0), draws))
    assert "energy_before" not in result.stats and math.isfinite(result.loss.item())
    result.loss.backward()
    assert model.latent_encoder.head.weight.grad.abs().sum() > 0
    checked = free_running(model, video, context=3, energy=Energy(ball=2.0),
                           latents=fused.frame_latents(Energy(ball=2.0), train=False))
    assert checked.stats["energy_after"] <= checked.stats["energy_before"] + 1e-7
    with pytest.raises(ValueError, match=r"b \* T frames its loss averages over"):
        fused.frame_latents(Energy(ball=2.0))  # training without the step's draws: the pull's scale is unknown


@pytest.mark.parametrize("path", ["teacher_forced", "rollout"])
def test_fused_pull_is_the_separate_steps_encoder_loss_without_noise_or_dropout(monkeypatch, path):
    """With no channel noise, no dropped frame and no joint prior, what the fused step adds to the
    gradient at A's guess z⁰ is the gradient of the separate step's w·mean ||z⁰ - z*||², row by row,
    wherever the separate step was accepted (it is checked against the energy; the fused one is not):
    the same z*, the same 1/rows (n teacher-forced, b·T over a rollout). Over a rollout only the first
    frame compares: the later frames' states differ (the separate path decodes the earlier ones at z*,
    the fused at z⁰)."""
    model = small(perturb=True, recurrent=path == "rollout").train()
    torch.manual_seed(1)
    video = torch.rand(2, 5, 1, 16, 16)
    energy = Energy(ball=2.0)
    if path == "rollout":
        draws = StepDraws(keep=torch.ones(2, 2, 1), noise=torch.zeros(2, 2, 3))
    else:
        draws = StepDraws(keep=torch.ones(4, 1), noise=torch.zeros(4, 3))
    guesses = []
    original = model.amortized_latent

    def capture(cond, target):
        z0 = original(cond, target)
        z0.retain_grad()
        guesses.append(z0)
        return z0

    monkeypatch.setattr(model, "amortized_latent", capture)

    def clip_major(tensors: list) -> torch.Tensor:  # teacher-forced: one (n, d); rollout: one (b, d) a frame
        return tensors[0] if len(tensors) == 1 else torch.stack(tensors, dim=1).flatten(0, 1)

    def run(fused: bool, w: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The gradient at A's guesses, the guesses and the latents kept, (b * T, d) clip-major."""
        guesses.clear()
        model.zero_grad()
        objective = EnergyObjective(model, fused=fused, encoder_weight=w)
        assert objective.fused == fused
        if path == "rollout":
            result = free_running(model, video, context=3, energy=energy, latents=objective.frame_latents(energy, draws),
                                  feedback_grad=False)
            loss, kept = result.loss, result.kept
        else:
            loss, _, kept = objective.loss(video, context=3, energy=energy, draws=draws)
        loss.backward()
        return clip_major([z0.grad for z0 in guesses]), clip_major([z0.detach() for z0 in guesses]), kept.detach()

    w, rows = 0.7, 4
    pulled, guess, z_star = run(False, w)
    separate_pull = pulled - run(False, 0.0)[0]
    fused_pull = run(True, w)[0] - run(True, 0.0)[0]
    accepted = (z_star - energy.project(guess)).abs().amax(dim=1) > 0
    if path == "rollout":  # a later frame's state follows the earlier frames, decoded at z* by one and z⁰ by the other
        accepted[1::2] = False
    assert accepted.sum() >= 2  # the 0.03 step lowers the energy of (nearly) every row
    assert torch.allclose(separate_pull, 2 * w / rows * (guess - z_star), atol=1e-6)
    assert torch.allclose(fused_pull[accepted], separate_pull[accepted], rtol=1e-3, atol=1e-7)
    assert fused_pull.abs().amax() > 1e-4  # not two zeros agreeing


def test_fused_step_is_the_default_where_it_applies_and_separate_passes_elsewhere(tmp_path):
    """latent.fused (on by default) takes effect for one step from the amortized guess; more or no
    steps, a start from prior draws or no amortized encoder infer in separate passes."""
    from conftest import tiny_args
    from vidpred.build import build_model, build_objective
    from vidpred.config import parse_args

    def fused(*args):
        cfg = parse_args(tiny_args(tmp_path / "run", *args))
        return build_objective(cfg, build_model(cfg)).fused

    assert fused() and not fused("--latent.fused=false")
    for separate in ("--latent.steps=3", "--latent.steps=0", "--latent.draws=4", "--model.encoder=false"):
        assert not fused(separate)


# --- the glide decoder: the last context frame carried on at constant motion ------------------------------


def test_constant_motion_finds_each_pixels_displacement_and_keeps_what_shows_none_still():
    video = square(2, start=(6, 6), velocity=(2, -1), size=32, side=6)
    video[:, :, :, 0:3, 24:30] = 0.3  # a still patch
    d = constant_motion(video[:, 0], video[:, 1], radius=3)
    assert d.shape == (1, 2, 32, 32) and d.dtype == torch.long
    assert (d[0, :, 8:14, 5:11] == torch.tensor([2, -1]).view(2, 1, 1)).all()  # the square's second position
    # the still patch and the empty corner (farther than the block-matching windows reach from the square)
    assert (d[0, :, 0:3, 25:29] == 0).all() and (d[0, :, 26:, :4] == 0).all()


def test_an_object_at_a_fractional_speed_moves_by_one_displacement_and_touching_objects_keep_their_own():
    """A square moving 5 pixels a frame at 64x64, averaged down to 32x32 (2.5 pixels a frame): block matching gives
    its rows two displacements, which would glide apart; object_motion gives it one, the one that explains the
    whole square best. What does not show (the dark background) and what does not move keep their own."""
    big = torch.zeros(2, 1, 64, 64)
    big[0, 0, 31:47, 20:36] = 0.8  # a 16-pixel square (its edge rows half covered at 32x32), then 5 rows up and 2 right
    big[1, 0, 26:42, 22:38] = 0.8
    big[:, 0, 50:56, 50:56] = 0.5  # a still patch
    small_ = F.avg_pool2d(big, 2)
    each = constant_motion(small_[:1], small_[1:], radius=3)
    one = object_motion(small_[None], radius=3)
    square_ = small_[1, 0] > 0.1
    square_[25:28, 25:28] = False  # (the still patch)
    assert len({tuple(d) for d in each[0][:, square_].T.tolist()}) > 1  # per pixel: bands of rows apart
    assert {tuple(d) for d in one[0][:, square_].T.tolist()} in ({(-2, 1)}, {(-3, 1)})  # one for the whole square
    assert one.shape == (1, 2, 32, 32) and one.dtype == torch.long
    assert (one[0, :, 25:28, 25:28] == 0).all()  # the still patch
    dark = small_[1, 0] <= 0.1
    assert torch.equal(one[0][:, dark], each[0][:, dark])  # the background's displacements as block matching found
    # two touching groups whose displacements span two pixels keep their own; two one pixel apart join
    d = torch.zeros(1, 2, 6, 6, dtype=torch.long)
    d[0, 0, 1:3, 1:5], d[0, 0, 3:5, 1:5] = 1, 3
    member = d.abs().sum(dim=1) > 0
    groups = joined(d, member)
    assert groups[0, 1, 1] != groups[0, 3, 1] and len(groups[0, 1:3, 1:5].unique()) == 1
    assert (groups[0][~member[0]] == 0).all()
    d[0, 0, 3:5, 1:5] = 2
    assert len(joined(d, member)[0, 1:5, 1:5].unique()) == 1


def test_overlapping_objects_split_their_pixels_between_their_two_motions_and_leave_no_fragment():
    """Two squares overlap (combined by max), moving at (2, 2) and (-2, -1): block matching gives the pixels near the
    overlap blends of both, (2, 3), (2, 4), (3, 3), which would glide off as fragments; object_motion gives every
    pixel of the region one of the two, and each square's own corner its own."""
    previous, last = torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)
    for frame, t in ((previous, -1), (last, 0)):
        frame[0, 0, 10 + 2 * t:18 + 2 * t, 9 + 2 * t:17 + 2 * t] = 0.8
        frame[0, 0, 14 - 2 * t:22 - 2 * t, 14 - t:22 - t] = frame[0, 0, 14 - 2 * t:22 - 2 * t, 14 - t:22 - t].clamp(min=0.6)
    shown = last[0, 0] > 0.1
    each = constant_motion(previous, last, radius=4)
    assert len({tuple(d) for d in each[0][:, shown].T.tolist()}) > 2  # per pixel: fragments at blended motions
    one = object_motion(torch.stack([previous, last], dim=1), radius=4)
    assert {tuple(d) for d in one[0][:, shown].T.tolist()} == {(2, 2), (-2, -1)}
    assert (one[0, :, 10:13, 9:12] == torch.tensor([2, 2]).view(2, 1, 1)).all()  # the first square's far corner
    assert (one[0, :, 19:22, 19:22] == torch.tensor([-2, -1]).view(2, 1, 1)).all()  # the second's
    assert (one[0][:, ~shown] == each[0][:, ~shown]).all()  # the background as block matching found it


def test_an_object_that_moved_whole_takes_its_one_displacement_where_the_walls_padding_tore_it():
    """A uniform square leaves the top-left corner at (1, 2): block matching, the frame's edge padded by repeating
    it, finds (0, 0), (0, 2) and (1, 0) as good near the walls (the repeated edge is the square moved along them),
    bands that would glide apart. Moved whole, the square of the frame before lands on every pixel of it at (1, 2)
    only: object_motion gives it that one. Another object, alone and away from the walls, keeps its own."""
    previous, last = torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)
    previous[0, 0, 0:10, 0:10], last[0, 0, 1:11, 2:12] = 0.95, 0.95
    previous[0, 0, 20:27, 20:26], last[0, 0, 18:25, 21:27] = 0.5, 0.5  # moving (-2, 1)
    square_, other = last[0, 0] > 0.9, (last[0, 0] - 0.5).abs() < 0.01
    torn = main_motion_only(previous, last, radius=3)
    assert len({tuple(d) for d in torn[0][:, square_].T.tolist()}) > 1
    one = object_motion(torch.stack([previous, last], dim=1), radius=3)
    assert {tuple(d) for d in one[0][:, square_].T.tolist()} == {(1, 2)}
    assert {tuple(d) for d in one[0][:, other].T.tolist()} == {(-2, 1)}
    assert torch.equal(one[0][:, ~(square_ | other)], torn[0][:, ~(square_ | other)])  # nothing landed there


def main_motion_only(previous: torch.Tensor, last: torch.Tensor, *, radius: int) -> torch.Tensor:
    """object_motion before carried_pieces: what it is given."""
    from unittest import mock
    with mock.patch("vidpred.model.carried_pieces", lambda frames, given, radius: given):
        return object_motion(torch.stack([previous, last], dim=1), radius=radius)


def test_a_piece_no_move_keeps_or_that_is_still_or_tiny_is_not_carried():
    """A piece that no move keeps (a square that dims as it moves: each pixel lands on one darker than itself) is not
    carried: the displacements are left as given. Neither is a piece that stays, nor one of fewer than OBJECT_PIXELS
    pixels."""
    previous, last = torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)
    previous[0, 0, 10:18, 8:16], last[0, 0, 10:18, 6:14] = 0.8, 0.5
    given = constant_motion(previous, last, radius=3)
    assert torch.equal(carried_pieces(torch.stack([previous, last], dim=1), given, radius=3), given)
    still = torch.zeros(1, 1, 32, 32)
    still[0, 0, 4:10, 4:10] = 0.7
    assert torch.equal(carried_pieces(torch.stack([still, still], dim=1), given, radius=3), given)
    tiny_before, tiny = torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)
    tiny_before[0, 0, 4:6, 4:7], tiny[0, 0, 5:7, 6:9] = 0.7, 0.7  # 6 pixels at (1, 2)
    assert torch.equal(carried_pieces(torch.stack([tiny_before, tiny], dim=1), given, radius=3), given)


def test_a_piece_of_two_rigid_objects_gives_each_its_own_motion():
    """Two objects that touch in every frame make one piece that no one move carries: the move that keeps the most of
    it and the move that keeps the most of the rest together keep it all, each on one 4-connected part, so each
    object's pixels take its own motion. Here a square and a block slide past each other along a shared edge through
    all five context frames (block matching alone mixes their moves and the still one in both), and, with only the
    frame before, a square and a block that touched there move apart."""
    frames = torch.zeros(1, 5, 1, 32, 32)
    for t in range(5):
        frames[0, t, 0, 10 - t:20 - t, 4:12] = 0.6  # up
        frames[0, t, 0, 10 + t:20 + t, 12:20] = 0.9  # down, beside it
    last = frames[0, -1, 0]
    moves = lambda d, where: {tuple(v) for v in d[0][:, where].T.tolist()}  # noqa: E731
    alone = main_motion_only(frames[:, -2], frames[:, -1], radius=3)
    assert moves(alone, last == 0.6) != {(-1, 0)} and moves(alone, last == 0.9) != {(1, 0)}
    both = object_motion(frames, radius=3)
    assert moves(both, last == 0.6) == {(-1, 0)} and moves(both, last == 0.9) == {(1, 0)}
    assert torch.equal(both[0][:, last == 0], alone[0][:, last == 0])  # nothing landed on the background
    previous, after = torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)
    previous[0, 0, 10:18, 8:16], previous[0, 0, 10:18, 16:22] = 0.8, 0.5
    after[0, 0, 10:18, 6:14], after[0, 0, 11:19, 19:25] = 0.8, 0.5
    apart = carried_pieces(torch.stack([previous, after], dim=1), torch.zeros(1, 2, 32, 32, dtype=torch.long), radius=3)
    for value, own in ((0.8, (0, -2)), (0.5, (1, 3))):  # a uniform pixel that the other move keeps as often (a tie)
        where = after[0, 0] == value  # claims nothing: its landing pixel keeps what was given
        assert moves(apart, where) <= {own, (0, 0)}
        assert (apart[0][:, where] == torch.tensor(own)[:, None]).all(dim=0).float().mean() >= 0.6


def test_two_moves_that_explain_a_piece_only_in_interleaved_bands_are_refused():
    """`two_objects` splits a piece only where each move's part is mostly one 4-connected region (PART_SHARE): a
    4x8 piece kept by move 3 on rows 0-1 and by move 5 on rows 2-3 is two objects; kept by them on alternate rows
    (bands, as a uniform square at a wall is "explained") it is not. A pixel both keep goes to the move that saw it
    more often; none where neither did."""
    y, x = torch.meshgrid(torch.arange(4), torch.arange(8), indexing="ij")
    y, x = y.flatten() + 5, x.flatten() + 5
    at, piece, pixels = (torch.zeros(32, dtype=torch.long), y, x), torch.zeros(32, dtype=torch.long), torch.tensor([32])
    for lower, expected in ((y >= 7, True), ((y % 2) == 1, False)):
        kept = torch.zeros(32, 9, dtype=torch.bool)
        kept[:, 3], kept[:, 5] = ~lower, lower
        kept[0, 5] = True  # kept by both, seen more often with 5
        sightings = kept.float()
        sightings[0, 5] = 2.0
        held = kept.float().sum(dim=0, keepdim=True)
        j = two_objects(kept, held, sightings, piece, pixels, torch.tensor([True]), at, (1, 16, 16))
        assert (two_objects(kept, held, sightings, piece, pixels, torch.tensor([False]), at, (1, 16, 16)) == -1).all()
        if expected:
            assert j[0] == 5 and (j[1:] == torch.where(lower, 5, 3)[1:]).all()
        else:
            assert (j == -1).all()


def test_objects_that_overlap_in_the_last_two_frames_take_the_motions_they_had_where_they_were_apart():
    """A bright square and a darker diamond-like block pass each other (combined by max, the darker one partly under
    the brighter): in the last two frames they overlap, one piece that no one move carries, and block matching gives
    a band of one the other's motion. Three frames earlier they were apart: each piece of that frame, carried on at
    its own velocity (the darker one's pixels under the brighter one count as kept), claims the pixels it shows in
    the last frame, so every pixel of each takes its own motion. Given only the last two frames, it is as before."""
    frames = torch.zeros(1, 5, 1, 32, 32)
    for t in range(5):
        frames[0, t, 0, 8 + t:16 + t, 2 + 3 * t:10 + 3 * t] = 0.9  # moving (1, 3)
        block = frames[0, t, 0, 12 - t:22 - t, 22 - 2 * t:29 - 2 * t]  # moving (-1, -2), drawn under the square
        block.clamp_(min=0.6)
    last = frames[0, 4, 0]
    square_ = (last - 0.9).abs() < 0.01
    block_ = (last - 0.6).abs() < 0.01
    two = object_motion(frames[:, 3:], radius=4)
    moves = lambda d, where: {tuple(v) for v in d[0][:, where].T.tolist()}  # noqa: E731
    assert moves(two, square_) != {(1, 3)} or moves(two, block_) != {(-1, -2)}  # torn by the two frames alone
    apart = object_motion(frames, radius=4)
    assert moves(apart, square_) == {(1, 3)} and moves(apart, block_) == {(-1, -2)}
    shown = last > 0.1
    assert torch.equal(apart[0][:, ~shown], two[0][:, ~shown])  # nothing landed on the background


def test_matching_costs_are_the_per_plane_window_means_laid_out_with_the_displacements_innermost():
    """The block-matching cost, pooled channels-last for speed, equals pooling each displacement's plane on its own
    (the same sums, bit for bit), and `by_pixel` reads it as (n, H·W, k²) without a copy."""
    torch.manual_seed(0)
    previous, last = torch.rand(2, 3, 12, 10), torch.rand(2, 3, 12, 10)
    radius, k = 2, 5
    cost, dy, dx = matching_costs(previous, last, radius=radius)
    padded = F.pad(previous, (radius,) * 4, mode="replicate")
    planes = []
    for j in range(k * k):  # previous at p - d_j, d_j = (dy[j], dx[j])
        moved = padded[:, :, radius - dy[j]:radius - dy[j] + 12, radius - dx[j]:radius - dx[j] + 10]
        diff = (moved - last).pow(2).mean(dim=1, keepdim=True).contiguous()
        planes.append(sum(box_mean(diff, side) for side in GLIDE_WINDOWS) + GLIDE_TIE * float(dy[j] ** 2 + dx[j] ** 2))
    assert torch.equal(cost, torch.cat(planes, dim=1))
    flat = by_pixel(cost)
    assert flat.shape == (2, 12 * 10, k * k) and flat.data_ptr() == cost.data_ptr()
    assert torch.equal(flat[1, 3 * 10 + 4], cost[1, :, 3, 4])


def test_main_motion_keeps_the_displacements_a_region_holds_and_gives_each_pixel_the_cheapest():
    """A region of 10 pixels: 5 at displacement a, 4 at b, 1 at c (under REGION_SHARE): the c pixel takes whichever
    of a, b costs least at it; a separate one-pixel region keeps its own displacement (the most common of it)."""
    radius, k = 1, 3
    dy, dx = torch.arange(k).repeat_interleave(k) - radius, torch.arange(k).repeat(k) - radius
    member = torch.zeros(1, 3, 12, dtype=torch.bool)
    member[0, 0, :10] = True
    member[0, 2, 11] = True
    d = torch.zeros(1, 2, 3, 12, dtype=torch.long)
    d[0, :, 0, :5] = torch.tensor([0, 1]).view(2, 1)  # a: channel 5
    d[0, :, 0, 5:9] = torch.tensor([1, 0]).view(2, 1)  # b: channel 7
    d[0, :, 0, 9] = torch.tensor([-1, -1])  # c: channel 0, cheapest where it is
    d[0, :, 2, 11] = torch.tensor([-1, 1])  # alone: channel 2
    cost = torch.ones(1, k * k, 3, 12)
    cost[0, 0, 0, 9], cost[0, 7, 0, 9], cost[0, 5, 0, 9] = 0.0, 0.2, 0.5
    cost[0, 5, 0, :5], cost[0, 7, 0, 5:9] = 0.1, 0.1
    cost[0, 2, 2, 11] = 0.1
    out = main_motion(cost, d, member, dy, dx, radius=radius)
    assert out[0, :, 0, 9].tolist() == [1, 0]  # c joined b, its cheapest of a and b
    assert torch.equal(out[0, :, 0, :9], d[0, :, 0, :9]) and out[0, :, 2, 11].tolist() == [-1, 1]
    assert torch.equal(out[0][:, ~member[0]], d[0][:, ~member[0]])


def test_glide_moves_pixels_whole_lets_moving_ones_win_and_leaves_holes():
    frame = torch.zeros(1, 1, 10, 10)
    square_ = torch.tensor([[0.5, 0.6], [0.7, 0.8]])
    frame[0, 0, 2:4, 2:4] = square_  # moves by (1, 2) a frame
    frame[0, 0, 6, 8] = 1.0  # a still bright pixel on the square's path
    d = torch.zeros(1, 2, 10, 10, dtype=torch.long)
    d[0, 0, 2:4, 2:4], d[0, 1, 2:4, 2:4] = 1, 2
    holes = torch.zeros(10, 10, dtype=torch.bool)
    holes[2:4, 2:4] = True  # the square's first place: only its own pixels came from there, and they left
    for steps, place in [(1, (3, 4)), (3, (5, 8)), (4, None)]:  # at 3 its 0.7 lands on the still 1.0; at 4 it has left
        out = glide(frame, d, torch.tensor([steps]))
        expected = torch.zeros(10, 10)
        expected[6, 8] = 1.0
        if place is not None:
            expected[place[0]:place[0] + 2, place[1]:place[1] + 2] = square_
        assert out.shape == (1, 2, 10, 10)
        assert torch.equal(out[0, 0], expected), steps
        assert torch.equal(out[0, 1] == 0, holes), steps


def test_glide_is_per_row_and_per_channel():
    torch.manual_seed(0)
    frames = torch.rand(3, 2, 8, 8)
    d = torch.randint(-1, 2, (3, 2, 8, 8))
    steps = torch.tensor([1, 2, 3])
    together = glide(frames, d, steps)
    assert together.shape == (3, 3, 8, 8)
    for i in range(3):
        assert torch.equal(together[i], glide(frames[i:i + 1], d[i:i + 1], steps[i:i + 1])[0])
    still = glide(frames, torch.zeros_like(d), steps)
    assert torch.equal(still[:, :2], frames) and (still[:, 2] == 1).all()  # nothing moves: the frame, fully covered


def test_glide_model_starts_at_the_constant_motion_floor_and_learns_where_it_fails():
    """Untrained, the glide decoder carries the last context frame on at constant motion for the whole horizon
    (the mask starts at the glided frame); its heads read the glided frame, and a step of training moves them."""
    video = square(9, start=(1, 1), velocity=(1, 1))
    model = small(output="glide", kernel=5)
    frames, _ = model.rollout(video[:, :3], horizon=6, draw_z=lambda h, k: torch.zeros(1, 3))
    assert (frames - video[:, 3:]).abs().max() < 0.01  # (the mask's 0.7% of a dark generated frame)
    model.train()
    cond, target = model.teacher_forced_pairs(video[:, :6], context=3)
    assert cond.glided.shape == (3, 3, 16, 16)  # the glided frame, its coverage, its age
    assert torch.equal(cond.glided[:, :1], video[0, 3:6])  # target j carried j + 1 frames on, as the rollout
    assert torch.equal(cond.glided[:, 2], torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1).expand(3, 16, 16))
    perturbed = small(output="glide", kernel=5, perturb=True)  # the heads read the age: older, another blend
    cond = perturbed.teacher_forced(video[:, :6], context=3)
    older = cond._replace(glided=torch.cat([cond.glided[:, :2], cond.glided[:, 2:] + 1.0], dim=1))
    z = torch.randn(3, 3)
    assert not torch.allclose(perturbed.decode(cond, z), perturbed.decode(older, z), atol=1e-4)
    Energy()(model.decode(cond, torch.randn(3, 3)), target, torch.zeros(3, 3)).sum().backward()
    assert model.decoder.mask.weight.grad.abs().sum() > 0 and model.decoder.out.weight.grad.abs().sum() > 0
    one_frame = predictor_of_kind("energy", channels=1, size=16, widths=(8, 16), window=1, skip_frames=1, z_dim=3,
                                  output="glide", kernel=5)  # a window of one frame, which a context of one fills
    with pytest.raises(ValueError, match="context=1: the glide decoder continues the motion of the last two frames"):
        one_frame.rollout(video[:, :1], horizon=2, draw_z=lambda h, k: torch.zeros(1, 3))


def test_glide_decoder_in_the_config():
    cfg = parse_args(["--model.decoder=glide", "--model.kernel=9", "--model.generate=false"])
    assert cfg.model.decoder == "glide" and not cfg.model.generate
    assert parse_args(["--model.decoder=glide", "--model.sharp=true"]).model.sharp
    assert parse_args(["--model.decoder=glide", "--model.glide_mask=trust"]).model.glide_mask == "trust"
    for wrong in (["--model.decoder=kernels", "--model.glide_mask=trust"],
                  ["--model.decoder=glide", "--model.generate=false", "--model.glide_mask=trust"]):
        with pytest.raises(ConfigError, match="model.glide_mask=trust sets the glide decoder's mask.*needs model.decoder=glide "
                                              "with model.generate=true"):
            parse_args(wrong)
    with pytest.raises(ConfigError, match="model.glide_mask"):
        parse_args(["--model.decoder=glide", "--model.glide_mask=sure"])
    with pytest.raises(ValueError, match="glide_mask='trust' sets the glide decoder's mask; output='kernels'"):
        Decoder(channels=1, widths=(8, 16), z_dim=3, output="kernels", glide_mask="trust")
    trust = ["--model.decoder=glide", "--model.glide_mask=trust", "--data.size=64"]
    assert parse_args(trust + ["--model.bounce_box=28"]).model.bounce_box == 28
    assert build_model(parse_args(trust + ["--model.bounce_box=28"])).bounce_box == 28
    for wrong in (["--model.decoder=glide", "--model.glide_mask=features", "--model.bounce_box=28"],
                  trust + ["--model.bounce_box=65"], trust + ["--model.bounce_box=-1"]):
        with pytest.raises(ConfigError, match=r"model.bounce_box=-?\d+: the side of the square objects bounce in.*expected 0 "
                                              r"\(their visible box\) or 1 .. data.size="):
            parse_args(wrong)
    saved = to_dict(parse_args(trust))
    del saved["model"]["bounce_box"]
    assert saved_config(saved).model.bounce_box == 0  # a checkpoint saved before the key: its visible boxes meet the walls


def stopping_square(frames: int, *, stop: int) -> torch.Tensor:
    """`square` moving by (1, 1) a frame until frame `stop`, then still: constant motion fails after it."""
    video = square(frames, start=(1, 1), velocity=(1, 1))
    video[:, stop:] = video[:, stop - 1:stop]
    return video


def test_trust_mask_learns_where_constant_motion_holds_from_its_own_cost_only():
    """glide_mask='trust': the mask reads the glided frame, its coverage and age, never z or the decoder's features;
    untrained it is the glided frame (the constant-motion floor); its cost is a BCE against where the glided frame
    is right, and only that cost trains it, so it learns where constant motion fails (a square that stops)."""
    video = stopping_square(9, stop=3)  # context of 3 frames, in motion; 6 still ones to predict
    model = small(output="glide", kernel=5, glide_mask="trust")
    assert model.decoder.mask is None and model.trust_cost(video, context=3).shape == ()
    moving = square(9, start=(1, 1), velocity=(1, 1))
    frames, _ = model.rollout(moving[:, :3], horizon=6, draw_z=lambda h, k: torch.zeros(1, 3))
    assert (frames - moving[:, 3:]).abs().max() < 0.01  # untrained: constant motion
    model.train()
    cond, target = model.teacher_forced_pairs(video, context=3)
    Energy()(model.decode(cond, torch.randn(6, 3)), target, torch.zeros(6, 3)).sum().backward()
    assert all(p.grad is None for p in model.decoder.trust.parameters())  # the blend does not train it
    assert model.decoder.out.weight.grad.abs().sum() > 0
    glided = model.glided_targets(video, context=3)
    right = ((glided[:, :1] - target).abs() < 0.1).squeeze(1)
    assert right.all(dim=(1, 2)).logical_not().all()  # every frame has pixels that constant motion gets wrong
    optimizer = torch.optim.Adam(model.decoder.trust.parameters(), lr=0.01)
    for _ in range(150):
        optimizer.zero_grad()
        model.trust_cost(video, context=3).backward()
        optimizer.step()
    trust = torch.sigmoid(model.decoder.trust(glided)).squeeze(1).detach()
    assert trust[right].mean() > 0.9 and trust[~right].mean() < 0.5
    assert predictor_of_kind("energy", channels=1, size=16, widths=(8, 16), window=2, z_dim=3, output="glide",
                             kernel=5).trust_cost(video, context=3) is None  # the features mask: no such cost


def test_glide_age_stops_at_the_trained_horizon_while_the_frame_glides_on():
    """`trained_horizon`: past the frames a training clip predicts, the age channel the heads read stays the horizon's
    (they never saw older ages), and the glided frame still carries the objects on; the config's horizon sets it,
    so a checkpoint samples with the cap of its own training, and 0 (a model built without one) caps nothing."""
    moving = square(12, start=(1, 1), velocity=(1, 1))
    capped, free = small(output="glide", kernel=5, trained_horizon=3), small(output="glide", kernel=5)
    source = capped.glide_source(moving[:, 1:3])
    steps = torch.arange(1, 10)
    glided = capped.glided(source.expand(9, -1, -1, -1), steps)
    unbounded = free.glided(source.expand(9, -1, -1, -1), steps)
    assert glided[:, -1, 0, 0].tolist() == pytest.approx([0.1, 0.2, 0.3] + [0.3] * 6)
    assert unbounded[:, -1, 0, 0].tolist() == pytest.approx([s / 10 for s in range(1, 10)])
    assert torch.equal(glided[:, :-1], unbounded[:, :-1])  # the frame and its coverage: the same, frame 9 included
    assert (glided[:, 0] - moving[0, 3:12, 0]).abs().max() < 1e-6  # the square carried on, 9 frames
    assert build_model(parse_args(["--model.decoder=glide", "--model.glide_mask=trust", "--horizon=7",
                                  "--data.frames=12"])).trained_horizon == 7
    with pytest.raises(ValueError, match="trained_horizon=-1"):
        small(output="glide", kernel=5, trained_horizon=-1)


@pytest.mark.parametrize("mask", ["features", "trust"])
def test_sharp_glide_takes_each_pixel_whole_from_the_glided_or_the_generated_frame(mask):
    """sharp=True with the glide decoder: forward, each output pixel is the glided one where the mask is over 1/2 and
    the generated one elsewhere, never a blend; the features mask still gets the soft mix's gradient."""
    video = stopping_square(9, stop=3)
    model = small(output="glide", kernel=5, glide_mask=mask, sharp=True, perturb=True).train()
    decoder = model.decoder
    with torch.no_grad():  # a mask around 1/2, so that the perturbed heads hand some pixels to each source
        (decoder.trust[-1] if mask == "trust" else decoder.mask).bias.fill_(0.0)
    cond, target = model.teacher_forced_pairs(video, context=3)
    z = torch.randn(6, 3)
    logits = model.decode(cond, z)
    pixels = torch.sigmoid(logits)
    features = torch.cat([decoder.levels(cond.h, z, cond.skips)[0], cond.glided], dim=1)
    share = cond.trust if mask == "trust" else decoder.moved_share(features)
    picked = share > 0.5
    assert picked.any() and (~picked).any()
    either = torch.where(picked, cond.glided[:, :1], torch.sigmoid(decoder.out(features)))
    assert torch.allclose(pixels, 1e-3 + (1 - 2e-3) * either, atol=1e-5)  # (the blend's pixels lie in [eps, 1 - eps])
    Energy()(logits, target, torch.zeros(6, 3)).sum().backward()
    if mask == "features":
        assert decoder.mask.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("rollout", [False, True])
def test_the_training_loss_adds_the_trust_cost(rollout):
    video = stopping_square(7, stop=3).repeat(2, 1, 1, 1, 1)
    for mask in ("features", "trust"):
        model = small(output="glide", kernel=5, glide_mask=mask).train()
        objective = EnergyObjective(model)
        torch.manual_seed(1)
        draws = objective.draws(seed=0, step=0, clips=range(2), frames=4)
        loss, stats, _ = objective.loss(video, context=3, energy=Energy(), draws=draws, rollout=rollout)
        if mask == "features":
            assert "trust_cost" not in stats
            continue
        trust = model.trust_cost(video, context=3).item()
        assert stats["trust_cost"] == pytest.approx(trust) and trust > 0.1  # sure that the stop glides on: ~5 nats a wrong pixel
        assert stats["loss"] == pytest.approx(loss.item())
        if not rollout:  # the loss is the objective's own plus the trust cost
            own, _, _ = objective.teacher_forced_loss(video, context=3, energy=Energy(), draws=draws)
            assert loss.item() == pytest.approx(own.item() + trust, rel=1e-5)
        loss.backward()
        assert model.decoder.trust[-1].weight.grad.abs().sum() > 0  # (the zero-initialized last layer first)


@pytest.mark.parametrize("mask", ["features", "trust"])
def test_a_glide_run_trains_samples_from_repeats_and_evaluates(tmp_path, mask):
    """End to end: teacher-forced training with the glide decoder, a checkpoint that rebuilds it, K futures drawn
    in one batch of repeated contexts equal to those drawn one context at a time, and an evaluation."""
    from conftest import tiny_args
    from vidpred.build import load_predictor
    from vidpred.evaluation import EvalConfig, evaluate
    from vidpred.training import train

    run = tmp_path / "run"
    train(parse_args(tiny_args(run, "--model.decoder=glide", "--model.kernel=5", "--val_every=3", "--val_clips=4",
                               f"--model.glide_mask={mask}")))
    model = load_predictor(str(run / "checkpoints" / "last.pt"))[0]
    assert model.decoder.output == "glide" and model.glide_radius == 2
    assert (model.decoder.trust is not None) == (mask == "trust") and (model.decoder.mask is None) == (mask == "trust")
    context = torch.rand(2, 3, 1, 16, 16)
    z = torch.randn(5, 4, 4)
    repeats = torch.tensor([2, 3])
    together, _ = model.rollout(context, 4, lambda h, k: z[:, k], repeats=repeats)
    first, _ = model.rollout(context[:1].expand(2, -1, -1, -1, -1), 4, lambda h, k: z[:2, k])
    second, _ = model.rollout(context[1:].expand(3, -1, -1, -1, -1), 4, lambda h, k: z[2:, k])
    assert torch.allclose(together, torch.cat([first, second]), atol=1e-5)
    if mask == "trust":  # each future's draw of the mask travels with its row
        from vidpred.sampling import glide_draws
        draws = glide_draws(5, seed=0, objects=model.glide_objects)
        given = lambda part: lambda h, k, rows=None: among(part[:, k], rows)  # noqa: E731  the rows asked for
        together, _ = model.rollout(context, 4, given(z), repeats=repeats, draws=draws)
        first, _ = model.rollout(context[:1].expand(2, -1, -1, -1, -1), 4, given(z[:2]), draws=draws.rows(slice(0, 2)))
        second, _ = model.rollout(context[1:].expand(3, -1, -1, -1, -1), 4, given(z[2:]), draws=draws.rows(slice(2, 5)))
        assert torch.allclose(together, torch.cat([first, second]), atol=1e-5)
    metrics = evaluate(EvalConfig(ckpt=str(run / "checkpoints" / "last.pt"), samples=3, horizon=4, clips=2,
                                  context=3, out=str(tmp_path / "eval"), video="none"))
    assert len(metrics["best_of_k"]["psnr_per_frame"]) == 4 and (tmp_path / "eval" / "samples.png").is_file()


def still_paths(n: int, count: int):
    """Every object of n futures where the last context frame has it, still (`bounce_step`'s paths)."""
    return start_paths(torch.zeros(n, count, 2, dtype=torch.long))


def draws_of(levels: torch.Tensor, *, fill=None, bounce=None, split=0, speeds=None, near_wall=None) -> GlideDraws:
    """Draws for n futures of `levels` (n, L); `speeds` (n, L, 2): every bounce's uniforms, or (n, L, B, 2)."""
    n, count = levels.shape
    speeds = torch.zeros(n, count, 2) if speeds is None else speeds
    none = torch.zeros(n, count, dtype=torch.bool)
    return GlideDraws(fill=torch.zeros(n) if fill is None else fill, levels=levels,
                      bounce=none if bounce is None else bounce, split=torch.full((n, count, 2), split),
                      speeds=speeds[:, :, None] if speeds.dim() == 3 else speeds,
                      near_wall=none if near_wall is None else near_wall)


def test_drawn_glide_keeps_the_glided_pixels_over_their_objects_level_and_fills_the_rest():
    """A sampled future realizes the trust mask with one level per object: it keeps the glided pixels whose trust is
    over their object's level (so each pixel is kept with probability trust when the levels are uniform, pixels of
    one object and equal trust go together, and two objects independently), and fills the rest with the generated
    pixels (mask 0 there) or, when its fill draw is 1, the background."""
    source = torch.rand(3, 1, 4, 4)
    glided = torch.cat([source, torch.rand(3, 2, 4, 4)], dim=1)  # frame, coverage, age: nothing moves
    trust = torch.linspace(0.05, 0.95, 16).view(1, 1, 4, 4).expand(3, 1, 4, 4)
    back = torch.full((3, 1, 4, 4), 0.25)
    objects = torch.zeros(3, 4, 4, dtype=torch.long)  # all object 0; object 1 is the still one (of 3)
    draws = draws_of(torch.tensor([[0.5, 0.9, 0.9], [0.5, 0.9, 0.9], [0.0, 0.9, 0.9]]), fill=torch.tensor([0.0, 1.0, 0.0]))
    frame, mask = drawn_glide(source, objects, still_paths(3, 3), trust, glided, draws, back)
    keep = trust[0, 0] > 0.5
    assert torch.equal(mask[0, 0], keep.float()) and torch.equal(frame[0], glided[0])  # the generated pixels fill in
    assert (mask[1] == 1).all() and torch.equal(frame[1, 0], torch.where(keep, glided[1, 0], back[1, 0]))  # the background
    assert torch.equal(frame[1, 1:], glided[1, 1:])  # coverage and age as glided
    assert (mask[2] == 1).all()  # level 0: every pixel of object 0 glided
    _, mask = drawn_glide(source, torch.full_like(objects, 2), still_paths(3, 3), trust, glided, draws, back)
    assert torch.equal(mask[0, 0], (trust[0, 0] > 0.9).float())  # all object 2's: level 0.9
    # two objects of equal trust (left and right half), levels drawn uniformly: each kept with probability trust, alone
    many = 4000
    halves = torch.zeros(many, 4, 4, dtype=torch.long)
    halves[..., 2:] = 2
    even = torch.full((many, 1, 4, 4), 0.6)
    levels = torch.rand(many, 3, generator=torch.Generator().manual_seed(0))
    _, kept = drawn_glide(source[:1].expand(many, -1, -1, -1), halves, still_paths(many, 3), even,
                          glided[:1].expand(many, -1, -1, -1), draws_of(levels), back[:1].expand(many, -1, -1, -1))
    left, right = kept[:, 0, 0, 0], kept[:, 0, 0, 3]
    assert torch.equal(kept[:, 0, :, :2], left[:, None, None].expand(-1, 4, 2))  # an object's pixels go together
    assert abs(left.mean() - 0.6) < 0.03 and abs(right.mean() - 0.6) < 0.03
    assert abs((left * right).mean() - 0.36) < 0.03  # independently: both kept with probability 0.6²


def test_objects_are_the_pixels_that_share_a_displacement_and_show_in_their_box():
    """The pixels that share a displacement are one object, named by the displacement's index (k = 2r + 1 columns
    per row of dy); its box spans the pixels that stand out of the background, and an object of too few such pixels
    (a fringe of odd displacements) is not present. `placed_objects` says where each object's pixels arrived."""
    frame = torch.zeros(1, 1, 8, 8)
    frame[0, 0, 2:5, 2:5] = 1.0  # a 3x3 block moving by (1, 2) a frame ...
    frame[0, 0, 6, 0] = 0.5  # ... and a still pixel
    displacement = torch.zeros(1, 2, 8, 8, dtype=torch.long)
    displacement[0, :, 1:5, 1:6] = torch.tensor([1, 2]).view(2, 1, 1)  # the block's displacement reaches a dark rim
    objects = displacement_objects(displacement, radius=2)
    moved = (1 + 2) * 5 + (2 + 2)  # d = (1, 2): index (dy + r) * k + dx + r
    assert objects[0, 2, 2] == moved and objects[0, 6, 0] == objects[0, 0, 0] == 12  # still: (k² - 1) / 2
    boxes, present = object_boxes(frame, torch.zeros_like(frame), objects, 25)
    assert boxes[0, moved].tolist() == [2, 4, 2, 4]  # rows and columns 2-4: the rim does not show
    assert present[0, moved] and not present[0, 0] and not present[0, 12]  # object 0 has no pixel, the still one 1
    _, few = object_boxes(frame[..., :3, :3], torch.zeros(1, 1, 3, 3), objects[:, :3, :3], 25)
    assert not few[0, moved]  # one pixel of it shows: under OBJECT_PIXELS
    by = 2 * displacement
    named = placed_objects(objects, *arrivals(frame, by, objects != 12)[:2], still=12)
    expected = torch.full((1, 1, 8, 8), 12)
    expected[0, 0, 3:7, 5:8] = moved  # the block and its rim, 2 frames on (what leaves the frame is gone)
    assert torch.equal(named, expected)
    assert torch.equal(shift(frame, by, objects != 12), glide(frame, displacement, torch.tensor([2])))


def test_a_bouncing_object_is_put_back_inside_the_wall_margin_and_leaves_at_a_drawn_velocity():
    """bounce_step: an object drawn to bounce whose box crosses a wall's margin is put back on it, leaves it at a
    speed of 1..r away and -r..r along it (from its uniform draws), and counts the hit; a corner draws both normal
    speeds; an object not drawn to bounce goes straight on, out of the frame."""
    boxes = torch.tensor([[[2, 5, 10, 13], [2, 5, 10, 13], [1, 4, 1, 4]]])  # (1 future, 3 objects, top bottom left right)
    velocity = torch.tensor([[[-2, 1], [-2, 1], [-3, -3]]])
    paths = start_paths(velocity)
    draws = draws_of(torch.zeros(1, 3), bounce=torch.tensor([[True, False, True]]),
                     speeds=torch.tensor([[[0.99, 0.0], [0.5, 0.5], [0.0, 0.3]]]))
    step = bounce_step(paths, boxes, draws, size=(16, 16), radius=4, box=6)  # 4-pixel boxes in 6: a margin of 1
    # object 0: top 2 - 2 = 0 < margin 1: back to top 1 (offset -1), then down at 1 + floor(0.99 * 4) = 4, along -4
    assert step.offsets[0, 0].tolist() == [-1, 1] and step.velocity[0, 0].tolist() == [4, -4] and step.hits[0, 0] == 1
    assert step.offsets[0, 1].tolist() == [-2, 1] and step.velocity[0, 1].tolist() == [-2, 1] and step.hits[0, 1] == 0
    # object 2: both walls at once (a corner): both components away from their wall, speeds 1 and 1 + floor(1.2) = 2
    assert step.offsets[0, 2].tolist() == [0, 0] and step.velocity[0, 2].tolist() == [1, 2] and step.hits[0, 2] == 1
    again = bounce_step(step, boxes, draws, size=(16, 16), radius=4, box=6)
    assert again.offsets[0, 0].tolist() == [3, -3] and again.hits[0, 0] == 1  # on its way, no new hit
    far = bounce_step(start_paths(velocity.abs())._replace(offsets=torch.tensor([[[10, 0]] * 3])),
                      boxes, draws, size=(16, 16), radius=4, box=6)
    assert far.offsets[0, 0, 0] == 16 - 1 - 1 - 5 and far.velocity[0, 0, 0] == -4  # the bottom wall: back up


def test_an_object_bounces_where_the_box_it_is_drawn_in_meets_the_wall():
    """bounce_step's margins: the box (side `box`, an MNIST digit's image) bounces, so the visible box stays inside by
    the box's slack, half of it (rounded down) plus the drawn split on the low side, the rest on the high side; an
    object as wide as the box, or box 0, meets the wall with its visible box."""
    boxes = torch.tensor([[[3, 12, 5, 7], [3, 12, 5, 7], [3, 12, 5, 7]]])  # 10 rows, 3 columns
    velocity = torch.tensor([[[-4, -4], [-4, -4], [4, 4]]])
    paths = start_paths(velocity)
    split = torch.tensor([[[0, 0], [1, 1], [0, 1]]])
    draws = draws_of(torch.zeros(1, 3), bounce=torch.ones(1, 3, dtype=torch.bool))._replace(split=split)
    step = bounce_step(paths, boxes, draws, size=(20, 20), radius=4, box=12)
    # rows: slack 2, low margin 1 (+ split); columns: slack 9, low margin 4 (+ split)
    assert step.offsets[0, 0].tolist() == [1 - 3, 4 - 5] and step.offsets[0, 1].tolist() == [2 - 3, 5 - 5]
    assert step.hits[0].tolist() == [1, 1, 0]  # object 2 moves toward the high walls, not yet reached
    far = bounce_step(paths._replace(offsets=torch.tensor([[[6, 12]] * 3])), boxes, draws, size=(20, 20), radius=4, box=12)
    # object 2 reaches the bottom and the right: high margins 2 - 1 = 1 and 9 - 5 = 4 (the low side took 1 and 5)
    assert far.offsets[0, 2].tolist() == [19 - 1 - 12, 19 - 4 - 7] and far.hits[0, 2] == 1
    for box in (0, 3):  # no slack (an object as wide as its box): the visible box meets the wall, whatever the split
        step = bounce_step(paths, boxes, draws, size=(20, 20), radius=4, box=box)
        assert step.offsets[0, 1].tolist() == [-3, -4]  # the rows back on the top wall; the columns not at the left yet
    with pytest.raises(ValueError, match=r"bounce_box=28: .*needs glide_mask='trust' \(got 'features'\)"):
        small(output="glide", kernel=5, bounce_box=28)
    with pytest.raises(ValueError, match=r"0 < bounce_box <= size \(16\)"):
        small(output="glide", kernel=5, glide_mask="trust", bounce_box=28)


def test_a_future_that_bounces_a_square_off_the_wall_shows_it_where_the_bounce_puts_it():
    """End to end (a rollout with given draws): a square gliding into the right wall, drawn to bounce with margin 0,
    is put back on the wall and comes back at the drawn velocity, its texture whole; a future that does not bounce
    it loses it behind the wall, unless it is drawn to bounce objects that meet a wall within WALL_NEAR frames, as
    this one does at the third."""
    model = small(output="glide", kernel=5, glide_mask="trust", sharp=True)
    wall = square(3, start=(6, 4), velocity=(0, 2))  # the last context frame has it at rows 6-9, columns 8-11
    count = model.glide_objects
    bounce, near_wall = torch.zeros(3, count, dtype=torch.bool), torch.zeros(3, count, dtype=torch.bool)
    bounce[0], near_wall[2] = True, True
    speeds = torch.tensor([0.5, 0.99]).expand(3, count, 2)  # along the wall 0; away from it 1 + floor(0.99 * 2) = 2
    # level 1: no trust suffices
    draws = draws_of(torch.ones(3, count), fill=torch.ones(3), bounce=bounce, speeds=speeds, near_wall=near_wall)
    frames, _ = model.rollout(wall.expand(3, -1, -1, -1, -1), 4, lambda h, k: torch.zeros(3, 3), draws=draws)
    assert WALL_NEAR >= 3 and torch.equal(frames[2], frames[0])
    # columns 10-13, 12-15, then 14-17: over the wall, put back at 12-15 (a hit), then 2 a frame back: 10-13
    expected = torch.zeros(16, 16)
    expected[6:10, 10:14] = wall[0, -1, 0, 6:10, 8:12]
    assert torch.allclose(frames[0, 3, 0], expected, atol=2e-3)
    expected = torch.zeros(16, 16)
    expected[6:10, 12:16] = wall[0, -1, 0, 6:10, 8:12]
    assert torch.allclose(frames[0, 2, 0], expected, atol=2e-3)  # on the wall at the hit
    assert frames[1, 3].max() < 2e-3  # straight on, with no trust kept: gone, the background (black) fills


def test_an_object_meets_a_wall_within_the_frames_its_constant_motion_takes_to_reach_it():
    """meets_wall: an object heading for a wall meets it at the predicted frame where its box first crosses it (in the
    margin its box and split leave); a still one, or one not among the objects that move, does not."""
    boxes = torch.tensor([[[6, 9, 8, 11]] * 5])  # rows 6-9, columns 8-11 of a 16 x 16 frame
    # right (past column 15 at frame 3), left (past 0 at frame 5), down (past row 15 at frame 3), still, right
    velocity = torch.tensor([[[0, 2], [0, -2], [3, 0], [0, 0], [0, 2]]])
    moves = torch.tensor([[True, True, True, True, False]])
    split = torch.zeros(1, 5, 2, dtype=torch.long)
    met = [meets_wall(velocity, boxes, moves, split, frames=frames, size=(16, 16))[0].tolist()
           for frames in (1, 2, 3, 4, 5, 40)]
    never = [False, False]
    assert met == [[False] * 3 + never] * 2 + [[True, False, True] + never] * 2 + [[True] * 3 + never] * 2
    # drawn in a square of side 8 (4 pixels of slack, half on each side), boxes meet the walls a frame sooner
    assert meets_wall(velocity, boxes, moves, split, frames=2, size=(16, 16), box=8)[0].tolist() == [True, False, True,
                                                                                                    False, False]


def test_sampled_futures_that_keep_every_glided_pixel_run_no_decoder():
    """A future whose mask keeps every glided pixel (one that fills with the background) shows the glided frame
    whatever the decoder generates: a rollout with draws runs the decoder on the other futures only, and its frames
    are those of the decoder run on every row (to float rounding: the convolutions see fewer rows)."""
    model = small(output="glide", kernel=5, glide_mask="trust", sharp=True, perturb=True)
    wall = square(3, start=(6, 4), velocity=(0, 2)).expand(4, -1, -1, -1, -1)
    levels = torch.tensor([0.0, 1.0, 0.0, 1.0])[:, None].expand(4, model.glide_objects)  # keep all, or none
    draws = draws_of(levels, fill=torch.tensor([1.0, 0.0, 1.0, 0.0]))
    draw_z = lambda h, k, rows=None: torch.ones(h.shape[0], 3)  # noqa: E731
    rows = []
    hook = model.decoder.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    frames, _ = model.rollout(wall, 3, draw_z, draws=draws)
    hook.remove()
    assert rows == [2, 2, 2]  # the two futures that fill with generated pixels, at each of the 3 frames
    every_row = lambda cond, z, glided_only=None: (model.decode(cond, z), None)  # noqa: E731
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model, "decode_step", every_row)
        expected, _ = model.rollout(wall, 3, draw_z, draws=draws)
    assert torch.allclose(frames, expected, atol=1e-5) and frames[0, 0].amax() > 0.5  # the square, glided


def test_futures_that_fill_with_the_background_run_no_network_and_read_no_latent():
    """A future that fills with the background shows only glided and background pixels: a rollout with draws runs the
    encoder, predictor and decoder on the other futures only, its frames are those of a rollout that runs the network
    on every row (to float rounding), the drawer is told which of all the rows it is given (it draws every row's noise:
    its random stream, and so each other future's z, is unchanged) and the futures that read no z report z = 0. With
    every future filled the network never runs."""
    model = small(output="glide", kernel=5, glide_mask="trust", sharp=True, perturb=True)
    wall = square(3, start=(6, 4), velocity=(0, 2)).expand(2, -1, -1, -1, -1)
    repeats = torch.tensor([3, 2])
    fill = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0])
    draws = draws_of(torch.tensor([0.0, 1.0, 0.3, 1.0, 0.6])[:, None].expand(5, model.glide_objects), fill=fill)
    seen = []

    def draw_z(h, k, rows=None):  # a drawer that draws every row's noise from its own stream
        seen.append((h.shape[0], None if rows is None else (rows.index.tolist(), rows.total)))
        noise = torch.randn(drawn_count(h.shape[0], rows), 3, generator=generator)
        return among(noise, rows) + h.flatten(1)[:, :1]

    rows = []
    hook = model.predictor.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    generator = torch.Generator().manual_seed(0)
    frames, z = model.rollout_logits(wall, 3, draw_z, repeats=repeats, draws=draws)
    hook.remove()
    assert rows == [3, 3, 3] and seen == [(3, ([1, 2, 4], 5))] * 3  # the three generated-fill futures, of five
    assert torch.equal(z[fill == 1], torch.zeros(2, 3, 3)) and (z[fill == 0] != 0).all()
    generator = torch.Generator().manual_seed(0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model, "unread_network", lambda state: torch.zeros(state.last.shape[0], dtype=torch.bool))
        every, every_z = model.rollout_logits(wall, 3, draw_z, repeats=repeats, draws=draws)
    assert torch.allclose(torch.sigmoid(frames), torch.sigmoid(every), atol=1e-5)
    assert torch.allclose(z[fill == 0], every_z[fill == 0], atol=1e-5) and (every_z[fill == 1] != 0).all()
    assert torch.sigmoid(frames[0, 0]).amax() > 0.5  # the square, glided
    rows.clear()
    hook = model.predictor.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    alone, _ = model.rollout_logits(wall, 3, draw_z, repeats=repeats, draws=draws._replace(fill=torch.ones(5)))
    hook.remove()
    assert rows == [] and torch.equal(alone[0], frames[0]) and alone.shape == frames.shape


def test_a_bounced_object_is_kept_while_its_path_is_likely_whatever_its_trust():
    """In drawn_glide an object drawn to bounce is shown where its path has it while the chance of what its bounces
    drew is BOUNCE_KEEP or more, however many they were (its trust was learnt of objects that go straight), then
    dropped to the fill; the others follow their level and trust."""
    source = torch.zeros(1, 1, 8, 8)
    source[0, 0, 1:3, 1:3] = 1.0  # object 6 of 9 (radius 1): d = (1, 0)
    objects = torch.full((1, 8, 8), 4)
    objects[0, 1:3, 1:3] = 6
    glided = torch.zeros(1, 3, 8, 8)
    paths = still_paths(1, 9)._replace(offsets=torch.zeros(1, 9, 2, dtype=torch.long).index_put_(
        (torch.tensor([0]), torch.tensor([6])), torch.tensor([[3, 4]])))
    trust = torch.zeros(1, 1, 8, 8)  # no trust anywhere
    draws = draws_of(torch.full((1, 9), 0.5), fill=torch.ones(1), bounce=torch.arange(9).eq(6)[None])
    frame, mask = drawn_glide(source, objects, paths, trust, glided, draws, torch.zeros(1, 1, 8, 8))
    assert (frame[0, 0, 4:6, 5:7] == 1).all() and frame[0, 0].sum() == 4  # moved by (3, 4), kept
    assert (mask == 1).all()  # kept there, the background (fill) elsewhere
    likely = paths._replace(hits=torch.full((1, 9), 3), chance=torch.full((1, 9), BOUNCE_KEEP))
    again, _ = drawn_glide(source, objects, likely, trust, glided, draws, torch.zeros(1, 1, 8, 8))
    assert torch.equal(again, frame)  # after three likely bounces: still there
    unlikely = likely._replace(chance=torch.full((1, 9), BOUNCE_KEEP * 0.99))
    dropped, _ = drawn_glide(source, objects, unlikely, trust, glided, draws, torch.zeros(1, 1, 8, 8))
    assert dropped[0, 0].sum() == 0  # a path fewer futures would follow: dropped to the background
    _, mask = drawn_glide(source, objects, paths, trust, glided, draws._replace(fill=torch.zeros(1)), torch.zeros(1, 1, 8, 8))
    assert mask[0, 0].sum() == 4  # with the generated fill: only the bounced object is glided


def test_background_is_what_no_object_covers_in_every_context_frame():
    context = torch.zeros(1, 3, 1, 8, 8)
    context[0, :, 0] = 0.2  # a still grey background
    for t in range(3):
        context[0, t, 0, 2, 2 + t] = 1.0  # a moving bright pixel
    context[0, :, 0, 6, 6] = 0.9  # a still object
    expected = torch.full((1, 1, 8, 8), 0.2)
    expected[0, 0, 6, 6] = 0.9
    assert torch.equal(background(context), expected)


def test_sampled_futures_of_a_trust_glide_model_differ_in_their_mask_draws():
    """draw_futures gives each future of a glide_mask='trust' model its own draws of how it realizes the glided frame,
    from a seeded stream per block: the K futures differ even where the latents change nothing, and are the same for
    the same seed. Other models take no draws, which rollouts refuse."""
    from vidpred.sampling import BACKGROUND_FILL, BOUNCE_SHARE, BOUNCE_SPLIT, NEAR_WALL_SHARE, draw_futures, glide_draws
    torch.manual_seed(0)
    model = small(output="glide", kernel=5, glide_mask="trust", sharp=True)
    with torch.no_grad():
        model.decoder.trust[-1].bias.fill_(0.0)  # trust 1/2 everywhere
        model.decoder.out.bias.fill_(3.0)  # the generated pixels bright, the background black
    objective = EnergyObjective(model)
    video = stopping_square(9, stop=3)
    fixed = lambda *args, **kwargs: (lambda h, k, rows=None: torch.zeros(h.shape[0], 3))  # noqa: E731  every z = 0
    objective.drawer = fixed
    logits, _ = draw_futures(objective, video[:, :3], samples=100, horizon=4, seed=0)
    again, _ = draw_futures(objective, video[:, :3], samples=100, horizon=4, seed=0)
    assert torch.equal(logits, again)
    frames = torch.sigmoid(logits[0])  # (K, T, 1, H, W)
    square_at = frames[:, 0, 0, 4:7, 4:7].mean(dim=(1, 2))  # where the glided square is at the first predicted frame
    kinds = {round(v, 2) for v in square_at.tolist()}
    assert len(kinds) == 3  # glided (the square), the background (black) and the generated pixels (bright, sigmoid(3))
    draws = glide_draws(1000, seed=3, objects=25)
    assert draws.levels.shape == draws.bounce.shape == (1000, 25) and draws.split.shape == (1000, 25, 2)
    assert set(draws.fill.tolist()) == {0.0, 1.0} and abs(draws.fill.mean() - BACKGROUND_FILL) < 0.05
    assert 0.45 < draws.levels.mean() < 0.55 and abs(torch.corrcoef(draws.levels[:, :2].T)[0, 1]) < 0.1  # levels apart
    assert abs(draws.bounce.float().mean() - BOUNCE_SHARE) < 0.05 and set(draws.split.unique().tolist()) == set(range(
        BOUNCE_SPLIT[0], BOUNCE_SPLIT[1] + 1))
    assert abs(draws.near_wall.float().mean() - NEAR_WALL_SHARE) < 0.05  # drawn apart from the bounce
    assert abs((draws.near_wall & draws.bounce).float().mean() - NEAR_WALL_SHARE * BOUNCE_SHARE) < 0.05
    assert model.glide_objects == 25  # one object per displacement of radius 2
    with pytest.raises(ValueError, match=r"draws: expected levels \(n = 2, L = 25\) for a glide decoder with glide_mask="):
        small(output="glide", kernel=5).rollout(video[:2, :3].expand(2, -1, -1, -1, -1), 2, fixed(), draws=draws.rows(slice(0, 2)))
    with pytest.raises(ValueError, match=r"draws: expected levels \(n = 2, L = 25\).*got \(3, 25\)"):
        model.rollout(video[:2, :3].expand(2, -1, -1, -1, -1), 2, fixed(), draws=draws.rows(slice(0, 3)))


def test_the_futures_that_run_the_network_draw_what_they_draw_when_every_future_does():
    """draw_futures tells each block's drawer which of its rows run the network (the others fill with the background):
    those futures, frames and latents, are the ones drawn when every future runs it (background_fill=0 draws the same
    levels and bounces), in every block of a chunk; the others read no z."""
    from vidpred.sampling import SAMPLE_BLOCK, block_seed, draw_futures, glide_draws
    model = small(perturb=True, output="glide", kernel=5, glide_mask="trust", sharp=True)
    objective = EnergyObjective(model)
    video = stopping_square(9, stop=3)[:, :3]
    context = torch.cat([video, video.flip(-1)])
    sizes = (SAMPLE_BLOCK, 7)  # two blocks a clip, all four in one chunk
    drawn = {share: draw_futures(objective, context, samples=sum(sizes), horizon=3, seed=0, background_fill=share,
                                 max_batch=4 * SAMPLE_BLOCK) for share in (0.5, 0.0)}
    fill = torch.stack([torch.cat([glide_draws(n, block_seed(0, clip, block, 1), model.glide_objects,
                                               background_fill=0.5).fill for block, n in enumerate(sizes)])
                        for clip in range(2)])
    run = fill == 0
    assert run[:, :SAMPLE_BLOCK].any(dim=1).all() and run[:, SAMPLE_BLOCK:].any(dim=1).all() and (~run).any()
    (half, half_z), (every, every_z) = drawn[0.5], drawn[0.0]
    assert torch.allclose(half_z[run], every_z[run], atol=1e-5) and (half_z[~run] == 0).all()
    assert torch.allclose(torch.sigmoid(half[run]), torch.sigmoid(every[run]), atol=1e-4)
    assert len({tuple(z.tolist()) for z in half_z[run][:, 0]}) > 2  # each future its own draw


def test_background_fill_sets_how_many_futures_show_the_latents_where_they_drop_an_object():
    """draw_futures' background_fill: the share of a trust-glide model's futures whose dropped objects leave the
    background. The same seed draws nested fills (a future that leaves the background at 1/2 leaves it at 3/4); at 1
    the drawn latents change no future (only the glide's draws do), at 0 every future shows them; outside [0, 1] it
    is refused."""
    from vidpred.sampling import draw_futures, glide_draws
    fills = {share: glide_draws(400, seed=1, objects=9, background_fill=share).fill for share in (0.0, 0.5, 0.75, 1.0)}
    assert fills[0.0].sum() == 0 and fills[1.0].sum() == 400 and abs(fills[0.5].mean() - 0.5) < 0.08
    assert torch.all(fills[0.5] <= fills[0.75])
    model = small(perturb=True, output="glide", kernel=5, glide_mask="trust", sharp=True)
    with torch.no_grad():
        model.decoder.trust[-1].bias.fill_(0.0)  # trust 1/2 everywhere: each future keeps the square or drops it
    objective = EnergyObjective(model)
    video = stopping_square(9, stop=3)
    zero = lambda *args, **kwargs: (lambda h, k: torch.zeros(h.shape[0], 3))  # noqa: E731
    loud = lambda *args, **kwargs: (lambda h, k: torch.full((h.shape[0], 3), 3.0))  # noqa: E731

    def futures(drawer, share):
        objective.drawer = drawer
        return draw_futures(objective, video[:, :3], samples=50, horizon=3, seed=0, background_fill=share)[0]

    assert torch.equal(futures(zero, 1.0), futures(loud, 1.0))
    assert not torch.allclose(futures(zero, 0.0), futures(loud, 0.0))
    with pytest.raises(ValueError, match=r"background_fill=1.5: expected a share between 0 and 1"):
        futures(zero, 1.5)
