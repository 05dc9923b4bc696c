"""Baselines trained by the same loop (training.py) and scored by the same evaluation as the energy model.

Both share the frame encoder, the window predictor and the decoder of model.py; they differ only
in where the decoder's z comes from (`--model.kind`):

- `deterministic`: no latent. The decoder always gets z = 0 and the loss is the per-pixel cost
  C(y_k, Dec(h_k, 0)). Its K "samples" are K copies of the one prediction: the blurry mean of the
  futures, which a multimodal model must beat on best-of-K.
- `vae` (SVG-LP, Denton & Fergus 2018): a posterior q(z_k | x_<=k) = N(mu_q, sigma_q) from the
  state h_k and the encoded target frame y_k, and a learned prior p(z_k | x_<k) = N(mu_p, sigma_p)
  from h_k alone. Training decodes a reparameterized draw z_k ~ q and minimizes, per frame,

      C(y_k, Dec(h_k, z_k)) + beta * KL(q(z_k | x_<=k) || p(z_k | x_<k))

  with both q and p trained by the KL (no stop-gradient, as in SVG). Futures draw z_k from p; the
  single "deterministic" prediction decodes the prior mean mu_p (z = 0 need not be likely under p).

The scale of beta (`latent.kl_weight`). SVG uses beta = 1e-4 on nn.MSELoss — a per-pixel *mean*
squared error, summed over frames — with the KL summed over z's dimensions: that is the negative
ELBO of a Gaussian pixel likelihood of variance beta * H * W / 2 = 0.2 at 64x64. Our C is a per-pixel
mean too, BCE on logits by default, i.e. the Bernoulli negative log-likelihood in nats per pixel,
so beta = 1 / (c * H * W) is the exact negative ELBO per pixel: 9.8e-4 for 32x32 grey frames (the
default data), 2.4e-4 at 64x64. The default 1e-3 is that ELBO on the default data; a smaller beta
lets z carry more (sharper best-of-K, a prior that matches the posterior less well).

For validation and the latent bank the baselines fill in the energy model's `Inference` with their
own meaning: z⁰ is the guess made without the target (0; the prior mean for the VAE), z* what the
target tells (0; the posterior mean), and the energies are the cost (+ beta * KL for the VAE) at each.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .energy import Energy
from .inference import Inference
from .model import VideoPredictor


def gaussian_kl(mu_q: Tensor, log_sigma_q: Tensor, mu_p: Tensor, log_sigma_p: Tensor) -> Tensor:
    """KL(N(mu_q, sigma_q²) || N(mu_p, sigma_p²)) of diagonal Gaussians, summed over the last dim: (n, d) -> (n,)."""
    var_ratio = (2 * (log_sigma_q - log_sigma_p)).exp()
    mean_term = ((mu_q - mu_p) / log_sigma_p.exp()).pow(2)
    return 0.5 * (var_ratio + mean_term - 1.0).sum(dim=-1) - (log_sigma_q - log_sigma_p).sum(dim=-1)


def latent_noise(*, seed: int, step: int, clips: range, frames: int, dim: int) -> Tensor:
    """The VAE's reparameterization noise (len(clips) * frames, dim), clip-major like the predicted
    frames; like the latent-dropout mask, a function of (seed, step, clip position) only, so a resumed
    run and N torchrun ranks draw what one uninterrupted process draws."""
    draws = [np.random.default_rng([seed, step, i, 0x6E6F6973]).standard_normal((frames, dim)) for i in clips]
    if not draws:
        return torch.zeros(0, dim)
    return torch.from_numpy(np.concatenate(draws)).float()


def deterministic_step(model: VideoPredictor, video: Tensor, *, context: int,
                       energy: Energy) -> tuple[Tensor, dict, Tensor]:
    """The loss of one batch (b, t, c, H, W) for the deterministic baseline, its statistics, and z = 0 (n, d)."""
    cond, target = model.teacher_forced_pairs(video, context)
    z = target.new_zeros(target.shape[0], model.z_dim)
    logits = model.decode(cond, z)
    cost = energy.reconstruction(logits, target)  # (n,)
    loss = cost.mean()
    stats = {"loss": loss.item(), "energy": loss.item(), "out_mean": torch.sigmoid(logits).mean().item(),
             "target_mean": target.mean().item()}
    return loss, stats, z


def vae_step(model: VideoPredictor, video: Tensor, *, context: int, energy: Energy, kl_weight: float,
             noise: Tensor | None = None, generator: torch.Generator | None = None) -> tuple[Tensor, dict, Tensor]:
    """The loss of one batch (b, t, c, H, W) for the VAE baseline, its statistics, and the posterior draw z (n, d).

    `noise` (n, d) is the reparameterization noise (see `latent_noise`); without it, it is drawn from `generator`.
    """
    cond, target = model.teacher_forced_pairs(video, context)
    mu_q, log_sigma_q = model.posterior_params(cond, target)  # (n, d) each
    mu_p, log_sigma_p = model.prior.params(cond.h)
    if noise is None:
        noise = torch.randn(mu_q.shape, generator=generator)
    z = mu_q + log_sigma_q.exp() * noise.to(mu_q)  # reparameterized z ~ q
    logits = model.decode(cond, z)
    cost = energy.reconstruction(logits, target)  # (n,)
    kl = gaussian_kl(mu_q, log_sigma_q, mu_p, log_sigma_p)  # (n,) nats per frame
    loss = cost.mean() + kl_weight * kl.mean()
    stats = {"loss": loss.item(), "energy": cost.mean().item(), "kl": kl.mean().item(),
             "latent_norm": z.norm(dim=1).mean().item(), "posterior_sigma": log_sigma_q.exp().mean().item(),
             "prior_sigma": log_sigma_p.exp().mean().item(), "out_mean": torch.sigmoid(logits).mean().item(),
             "target_mean": target.mean().item()}
    return loss, stats, z.detach()


@torch.no_grad()
def baseline_latents(model: VideoPredictor, video: Tensor, *, context: int, energy: Energy, kl_weight: float):
    """What `training.infer_clip_latents` gives for a baseline: conditioning, targets, z⁰ and an
    `Inference` (see the module docstring for what z⁰, z* and the energies mean here)."""
    cond, target = model.teacher_forced_pairs(video, context)
    n = target.shape[0]
    if model.kind == "deterministic":
        z = target.new_zeros(n, model.z_dim)
        cost = energy.reconstruction(model.decode(cond, z), target)
        return cond, target, z, Inference(z, cost, cost)
    mu_q, log_sigma_q = model.posterior_params(cond, target)
    mu_p, log_sigma_p = model.prior.params(cond.h)
    before = energy.reconstruction(model.decode(cond, mu_p), target)  # KL(p || p) = 0
    after = energy.reconstruction(model.decode(cond, mu_q), target) + \
        kl_weight * gaussian_kl(mu_q, log_sigma_q, mu_p, log_sigma_p)
    return cond, target, mu_p, Inference(mu_q, before, after)
