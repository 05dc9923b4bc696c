"""The baselines of objectives.py: trained by the same loop, saved, reloaded and sampled by kind."""

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from conftest import tiny_args
from vidpred.build import build_objective, load_predictor, predictor_of_kind
from vidpred.checkpoint import load_checkpoint
from vidpred.config import ConfigError, parse_args
from vidpred.energy import Energy
from vidpred.evaluation import EvalConfig, evaluate
from vidpred.objectives import StepDraws, VAEObjective, gaussian_kl, latent_noise
from vidpred.sampling import sample_futures
from vidpred.training import train


@pytest.fixture(scope="module", params=["deterministic", "vae"])
def trained(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    return request.param, train(parse_args(tiny_args(out, f"--model.kind={request.param}")))


def test_each_kind_trains_saves_and_reloads_as_its_kind(trained):
    kind, ckpt = trained
    state = load_checkpoint(ckpt)
    assert state["step"] == 6 and state["config"]["model"]["kind"] == kind
    model, cfg, _, _ = load_predictor(ckpt)
    assert build_objective(cfg, model).kind == cfg.model.kind == kind
    assert model.latent_encoder is None  # neither baseline has the energy model's amortized encoder
    names = {name.split(".")[0] for name in state["model"]} - {"bounce_normal", "bounce_tangential"}  # the bounce law's counts
    assert names == ({"encoder", "predictor", "decoder"} if kind == "deterministic" else
                     {"encoder", "predictor", "decoder", "prior", "posterior"})


def test_samples_have_the_protocol_shape_and_the_kind_s_spread(trained):
    kind, ckpt = trained
    model, cfg, bank, _ = load_predictor(ckpt)
    objective = build_objective(cfg, model)
    context = torch.rand(2, 3, 1, 16, 16)
    futures = sample_futures(objective, context, samples=6, horizon=4, bank=bank, seed=3)
    assert futures.shape == (2, 6, 4, 1, 16, 16)
    det = objective.deterministic(context, horizon=4)
    spread = (futures - futures[:, :1]).abs().amax().item()
    if kind == "deterministic":  # its K samples are all the one prediction
        assert spread == 0.0 and torch.equal(futures[:, 0], det)
    else:  # draws from p(z | h) differ; the deterministic prediction decodes the prior mean
        assert spread > 1e-4
        mean_rollout, _ = model.rollout(context, 4, lambda h, k: model.prior.params(h)[0])
        assert torch.equal(det, mean_rollout)


def test_evaluation_of_the_deterministic_baseline_has_no_spread(tmp_path):
    ckpt = train(parse_args(tiny_args(tmp_path / "run", "--model.kind=deterministic")))
    metrics = evaluate(EvalConfig(ckpt=str(ckpt), out=str(tmp_path / "eval"), samples=4, context=3, horizon=3,
                                  clips=4, batch=2), {})
    assert metrics["diversity"] == 0.0
    for key in ("psnr", "ssim"):
        assert metrics["best_of_k"][key] == pytest.approx(metrics["deterministic"][key])
        assert metrics["mean_of_k"][key] == pytest.approx(metrics["deterministic"][key])


def test_gaussian_kl_matches_torch_and_is_zero_only_for_equal_gaussians():
    g = torch.Generator().manual_seed(0)
    mu_q, mu_p = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    ls_q, ls_p = 0.5 * torch.randn(5, 4, generator=g), 0.5 * torch.randn(5, 4, generator=g)
    kl = gaussian_kl(mu_q, ls_q, mu_p, ls_p)
    reference = kl_divergence(Normal(mu_q, ls_q.exp()), Normal(mu_p, ls_p.exp())).sum(dim=1)
    assert kl.shape == (5,) and torch.allclose(kl, reference, atol=1e-5)
    assert torch.all(kl > 0)
    assert torch.allclose(gaussian_kl(mu_q, ls_q, mu_q, ls_q), torch.zeros(5), atol=1e-6)


def test_vae_step_decodes_the_reparameterized_posterior_draw_and_its_kl_vanishes_when_q_is_p():
    torch.manual_seed(0)
    model = predictor_of_kind("vae", channels=1, size=16, widths=(8, 16), window=2, blocks=1, z_dim=3)
    objective = VAEObjective(model, kl_weight=1e-3)
    video = torch.rand(2, 5, 1, 16, 16)
    noise = latent_noise(seed=0, step=7, clips=range(2), frames=2, dim=3)
    assert torch.equal(noise, latent_noise(seed=0, step=7, clips=range(2), frames=2, dim=3))
    assert torch.equal(noise[2:], latent_noise(seed=0, step=7, clips=range(1, 2), frames=2, dim=3))  # per clip
    loss, stats, z = objective.loss(video, context=3, energy=Energy(), draws=StepDraws(noise=noise))
    cond = model.teacher_forced(video, 3)
    mu_q, log_sigma_q = model.posterior_params(cond, video[:, 3:].flatten(0, 1))
    assert torch.allclose(z, mu_q + log_sigma_q.exp() * noise, atol=1e-6)
    assert stats["kl"] > 0 and loss.item() == pytest.approx(stats["energy"] + 1e-3 * stats["kl"], rel=1e-5)
    # With the posterior made to ignore the target and share the prior's weights on h, q = p and KL = 0.
    with torch.no_grad():
        for q_param, p_param in zip(model.posterior.parameters(), model.prior.parameters()):
            if q_param.shape == p_param.shape:
                q_param.copy_(p_param)
        first = model.posterior.trunk[0][0].weight  # conv over [h, Enc(y)]: keep h's half, zero the target's
        first[:, :16] = model.prior.trunk[0][0].weight
        first[:, 16:] = 0
    _, stats, _ = objective.loss(video, context=3, energy=Energy(), draws=StepDraws(noise=noise))
    assert stats["kl"] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("rollout", [False, True])
def test_kl_warmup_ramps_beta_in_training_and_validation_prices_it_in_full(rollout):
    torch.manual_seed(0)
    model = predictor_of_kind("vae", channels=1, size=16, widths=(8, 16), window=2, blocks=1, z_dim=3)
    objective = VAEObjective(model, kl_weight=1e-2, kl_warmup=10)
    video = torch.rand(2, 5, 1, 16, 16)
    noise = latent_noise(seed=0, step=0, clips=range(2), frames=2, dim=3)
    for step, scale in [(0, 0.1), (4, 0.5), (9, 1.0), (50, 1.0)]:
        objective.at_step(step)
        loss, stats, _ = objective.loss(video, context=3, energy=Energy(), draws=StepDraws(noise=noise),
                                        rollout=rollout)
        assert loss.item() == pytest.approx(stats["energy"] + scale * 1e-2 * stats["kl"], rel=1e-5)
    if rollout:  # (free-running validation scores the cost alone, KL or not)
        return
    objective.at_step(0)  # beta at a tenth in training ...
    ramped = objective.clip_latents(video, context=3, energy=Energy(), rollout=rollout)
    objective.kl_warmup = 0
    objective.at_step(0)  # ... or in full: validation prices the KL in full either way
    assert torch.allclose(objective.clip_latents(video, context=3, energy=Energy(), rollout=rollout).after,
                          ramped.after)
    assert (ramped.after > ramped.before).any()  # (the KL is in it: after = cost at mu_q + beta KL)


def test_bad_kind_and_negative_kl_weight_are_refused(tiny_config):
    with pytest.raises(ConfigError, match="model.kind='gan': expected one of energy, deterministic, vae"):
        tiny_config("--model.kind=gan")
    with pytest.raises(ConfigError, match="latent.kl_weight=-1.0: expected a number >= 0"):
        tiny_config("--latent.kl_weight=-1")


def test_max_minutes_stops_after_the_step_that_runs_out_of_time(tmp_path, capsys):
    ckpt = train(parse_args(tiny_args(tmp_path / "run", "--max_minutes=1e-9")))
    assert load_checkpoint(ckpt)["step"] == 1
    assert "stopped after step 1 as asked (--max_minutes=1e-09)" in capsys.readouterr().out
