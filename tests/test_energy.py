import pytest
import torch

from vidpred.energy import Energy
from vidpred.inference import infer_latent
from vidpred.model import VideoPredictor
from vidpred.training import infer_clip_latents


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = VideoPredictor(channels=1, size=16, widths=(8, 16), window=2, blocks=1, z_dim=6)
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
    model, video = setup
    z0 = torch.randn(8, 6, generator=torch.Generator().manual_seed(1))
    result = _infer(model, video, Energy(cost=cost, l1=0.01, l2=0.01), z0)
    assert result.z.shape == z0.shape
    assert torch.all(result.energy_after <= result.energy_before)
    assert result.energy_after.mean() < result.energy_before.mean() - 1e-3
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
    cond, target, z0, result = infer_clip_latents(model, video, context=3, energy=Energy(l1=0.01), steps=0,
                                                  step_size=1.0)
    assert torch.equal(result.z, z0.detach()) and torch.equal(result.energy_before, result.energy_after)
