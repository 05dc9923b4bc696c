import pytest
import torch

from vidpred.energy import Energy
from vidpred.inference import infer_latent
from vidpred.build import predictor_of_kind
from vidpred.objectives import EnergyObjective


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = predictor_of_kind("energy", channels=1, size=16, widths=(8, 16), window=2, blocks=1, z_dim=6)
    # The output layer starts at zero (a blank frame), where nothing depends on z; give it weights
    # like a trained decoder's so that z matters (|dC/dz| ~ 1e-2).
    torch.nn.init.normal_(model.decoder.out.weight, 0.0, 0.3)
    video = torch.rand(4, 5, 1, 16, 16).round()
    return model, video


def _infer(model, video, energy, z0, steps=8, step_size=0.5):
    cond = model.teacher_forced(video, context=3)
    target = video[:, 3:].flatten(0, 1)
    return infer_latent(lambda z: model.decode(cond, z), target, z0, energy, steps=steps, step_size=step_size)


def test_energy_is_reconstruction_plus_penalty():
    logits, target, z = torch.randn(3, 1, 4, 4), torch.rand(3, 1, 4, 4), torch.randn(3, 5)
    e = Energy(cost="mse", l1=0.3, l2=0.2)
    expected = ((torch.sigmoid(logits) - target) ** 2).mean(dim=(1, 2, 3)) + 0.3 * z.abs().sum(1) + 0.2 * z.pow(2).sum(1)
    assert torch.allclose(e(logits, target, z), expected)
    mask = torch.zeros(3, 1, 4, 4)
    mask[..., :2, :] = 1  # observe the top half: the cost is that half's share of the full cost
    per_pixel = (torch.sigmoid(logits) - target) ** 2
    assert torch.allclose(e.reconstruction(logits, target, mask), (per_pixel * mask).mean(dim=(1, 2, 3)))


def test_prox_soft_thresholds_and_projects():
    e = Energy(l1=1.0, ball=1.0)
    z = torch.tensor([[0.5, -3.0, 2.0, 0.0]])
    out = e.prox(z, torch.tensor([[1.0]]))
    assert torch.allclose(out, torch.tensor([[0.0, -2.0, 1.0, 0.0]]) / 5 ** 0.5)


@pytest.mark.parametrize("cost", ["bce", "mse", "l1"])
def test_inference_lowers_the_energy_of_every_sample(setup, cost):
    """8 steps of 0.5 go most of the way to what 5 times as many steps reach, for every sample.
    (E(z*) <= E(z⁰) alone holds by construction: inference keeps the best iterate.)"""
    model, video = setup
    z0 = torch.randn(8, 6, generator=torch.Generator().manual_seed(1))
    result = _infer(model, video, Energy(cost=cost, l1=0.01, l2=0.01), z0)
    assert result.z.shape == z0.shape
    reference = _infer(model, video, Energy(cost=cost, l1=0.01, l2=0.01), z0, steps=40).energy_after
    closed = (result.energy_before - result.energy_after) / (result.energy_before - reference)
    assert torch.all(result.energy_before - reference > 0.01)  # from z⁰ there is a long way down
    assert torch.all(closed > 0.9), closed
    again = Energy(cost=cost, l1=0.01, l2=0.01)(model.decode(model.teacher_forced(video, 3), result.z),
                                                 video[:, 3:].flatten(0, 1), result.z)
    assert torch.allclose(again, result.energy_after, atol=1e-5)  # the reported energy is E(z*)


def test_inference_leaves_the_weights_unchanged(setup):
    model, video = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _infer(model, video, Energy(l1=0.01), torch.randn(8, 6))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_a_strong_sparsity_weight_gives_sparser_smaller_latents(setup):
    model, video = setup
    z0 = torch.randn(8, 6, generator=torch.Generator().manual_seed(2))
    weak = _infer(model, video, Energy(l1=1e-4), z0).z
    strong = _infer(model, video, Energy(l1=0.05), z0).z
    assert (strong == 0).float().mean() > (weak == 0).float().mean() + 0.5
    assert strong.abs().sum() < 0.5 * weak.abs().sum()


def test_l2_penalty_and_ball_bound_the_norm(setup):
    model, video = setup
    z0 = 3 * torch.randn(8, 6, generator=torch.Generator().manual_seed(3))
    free = _infer(model, video, Energy(), z0).z.norm(dim=1)
    penalized = _infer(model, video, Energy(l2=0.5), z0).z.norm(dim=1)
    assert penalized.mean() < 0.5 * free.mean()
    balled = _infer(model, video, Energy(ball=0.5), z0, steps=2).z.norm(dim=1)
    assert torch.all(balled <= 0.5 + 1e-5)


def test_amortized_start_is_used_and_zero_steps_return_it(setup):
    model, video = setup
    cond, target, z0, result = EnergyObjective(model, steps=0, step_size=1.0).infer(video, context=3,
                                                                                    energy=Energy(l1=0.01))
    assert z0.abs().sum() > 0  # the encoder's guess, not z = 0
    assert torch.equal(result.z, z0.detach()) and torch.equal(result.energy_before, result.energy_after)


# --- a problem with a closed-form minimizer, and one step at the configured defaults ----------------

def _linear_problem():
    """A decoder whose pixels are linear in z, b + A z (logits: their logit), with orthogonal columns
    A^T A = 16 c² I over P = 16 pixels. With the MSE cost the energy separates per latent:
    (c² + l2) z_i² - 2 a_i z_i + l1 |z_i| (+ const), a = A^T (y - b) / P, so the minimizer is the
    soft-threshold z_i = sign(a_i) max(|a_i| - l1 / 2, 0) / (c² + l2), projected onto the ball
    (the quadratic is isotropic, so projecting its unconstrained minimizer is exact). In float64:
    in float32 the energy cannot tell z* from points ~1e-3 away, the curvature being c² = 0.0025."""
    h = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    hadamard = h
    for _ in range(3):
        hadamard = torch.kron(hadamard, h)  # 16 x 16, orthogonal columns of +-1
    c, b = 0.05, 0.5
    A = c * hadamard[:, 1:5]  # (P, d) = (16, 4)
    z_true = torch.tensor([[1.5, -0.8, 0.1, 0.0], [0.05, 2.0, -1.2, 0.6], [-0.3, 0.0, 0.9, -2.0]],
                          dtype=torch.float64)
    y = b + z_true @ A.T + 0.01 * torch.randn(3, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def decode(z):
        return torch.logit(b + z @ A.T).view(-1, 1, 4, 4)

    def minimizer(energy: Energy):
        a = (y - b) @ A / 16
        z = torch.sign(a) * (a.abs() - energy.l1 / 2).clamp(min=0) / (c ** 2 + energy.l2)
        return energy.project(z)

    return decode, y.view(3, 1, 4, 4), minimizer


@pytest.mark.parametrize("l1, l2, ball", [(0.0, 0.0, 0.0), (2e-3, 0.0, 0.0), (2e-3, 1e-3, 0.0), (2e-3, 0.0, 1.5)],
                         ids=["least squares", "lasso", "elastic net", "lasso in a ball"])
def test_inference_reaches_the_closed_form_minimizer_of_a_linear_decoder(l1, l2, ball):
    decode, y, minimizer = _linear_problem()
    energy = Energy(cost="mse", l1=l1, l2=l2, ball=ball)
    z_star = minimizer(energy)
    if l1 > 0:
        assert (z_star == 0).any() and (z_star != 0).any()  # the soft-threshold zeroes some latents, not all
    if ball > 0:
        norms = z_star.norm(dim=1)
        assert (norms < ball - 0.1).any() and (norms > ball - 1e-6).any()  # one inside, others on the sphere
    result = infer_latent(decode, y, torch.zeros(3, 4, dtype=torch.float64), energy, steps=40, step_size=0.5)
    assert torch.allclose(result.z, z_star, atol=1e-5), (result.z, z_star)
    assert torch.equal(result.z == 0, z_star == 0)  # exact zeros where the closed form has them, and only there
    assert torch.allclose(result.energy_after, energy(decode(z_star), y, z_star), rtol=0, atol=1e-10)


@pytest.mark.parametrize("cost", ["bce", "mse"])
@pytest.mark.parametrize("sparse", [False, True], ids=["no l1", "configured l1"])
def test_one_inference_step_at_the_configured_defaults(setup, cost, sparse):
    """latent.steps=1 of latent.step_size (what training runs): without l1 the step moves every
    sample's z by exactly step_size RMS per entry along -grad, and lowers the energy by about the
    first-order amount step_size * ||g||² / rms(g); with l1 it is one ISTA step, the gradient step
    soft-thresholded at (its step) * l1."""
    from vidpred.config import Config

    latent = Config().latent
    assert (latent.steps, latent.step_size) == (1, 0.03)  # the settings this test is about
    model, video = setup
    energy = Energy(cost=cost, l1=latent.l1 if sparse else 0.0)
    z0 = torch.randn(8, 6, generator=torch.Generator().manual_seed(4))
    result = _infer(model, video, energy, z0, steps=latent.steps, step_size=latent.step_size)
    # the reference step, written out from the docstring of inference.py
    cond, target = model.teacher_forced(video, context=3), video[:, 3:].flatten(0, 1)
    z = z0.clone().requires_grad_(True)
    smooth = energy.reconstruction(model.decode(cond, z), target) + energy.smooth_penalty(z)
    (g,) = torch.autograd.grad(smooth.sum(), z)
    rms = g.pow(2).mean(dim=1, keepdim=True).sqrt()
    assert torch.all(rms > 1e-3)  # the gradient is informative: the decoder uses z
    step = latent.step_size / rms
    moved = z0 - step * g
    expected = torch.sign(moved) * (moved.abs() - step * energy.l1).clamp(min=0)
    assert torch.allclose(result.z, expected, atol=1e-6)  # every sample took the step: it lowered E
    assert torch.all(result.energy_after < result.energy_before)
    if not sparse:
        assert torch.allclose((result.z - z0).pow(2).mean(dim=1).sqrt(), torch.full((8,), latent.step_size))
        first_order = latent.step_size * g.pow(2).sum(dim=1) / rms.squeeze(1)
        ratio = (result.energy_before - result.energy_after) / first_order
        assert torch.all((ratio > 0.8) & (ratio < 1.2)), ratio
