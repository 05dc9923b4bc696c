"""K futures per clip: autoregressive rollouts, a new z per predicted frame drawn from a prior.

The deterministic prediction is the same rollout with z = 0: with latent dropout in training this
is the model's best single guess, the blurry mean that sampled futures must beat on best-of-K.
The baselines (baselines.py): the deterministic model's K samples are K copies of its one
prediction; the VAE samples z from its learned Gaussian prior p(z | h), and its deterministic
prediction decodes the prior mean.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .model import VideoPredictor
from .prior import LatentBank

PRIOR_KINDS = ("bank", "fitted", "learned")


def latent_drawer(model: VideoPredictor, kind: str, bank: LatentBank | None, generator: torch.Generator):
    """A `draw_z(h, k)` for `VideoPredictor.rollout` that samples from the named prior."""
    if kind not in PRIOR_KINDS:
        raise ValueError(f"prior {kind!r}: expected one of {', '.join(PRIOR_KINDS)}")
    if model.kind == "deterministic":  # no latent to draw, whatever the prior
        return lambda h, k: h.new_zeros(h.shape[0], model.z_dim)
    if kind == "learned":
        return lambda h, k: model.prior.sample(h, generator=generator)
    if bank is None:
        raise ValueError(f"prior {kind!r} needs the latent bank saved in the checkpoint")
    return lambda h, k: bank.sample(h.shape[0], kind, generator=generator).to(h.device, h.dtype)


@torch.no_grad()
def sample_futures(model: VideoPredictor, context: Tensor, *, samples: int, horizon: int, prior: str = "learned",
                   bank: LatentBank | None = None, seed: int = 0, max_batch: int = 1024) -> Tensor:
    """(b, C0, c, H, W) -> (b, samples, horizon, c, H, W). The same seed gives the same futures.

    Rollouts run `max_batch` at a time (clips x samples), so memory stays bounded for K = 100.
    """
    logits, _ = draw_futures(model, context, samples=samples, horizon=horizon, prior=prior, bank=bank, seed=seed,
                             max_batch=max_batch)
    return torch.sigmoid(logits)


@torch.no_grad()
def draw_futures(model: VideoPredictor, context: Tensor, *, samples: int, horizon: int, prior: str = "learned",
                 bank: LatentBank | None = None, seed: int = 0, max_batch: int = 1024) -> tuple[Tensor, Tensor]:
    """`sample_futures` as logits (b, samples, horizon, c, H, W), with the latents drawn (b, samples, horizon, d),
    so that each future can be scored by the energy (ranking samples against a partial observation)."""
    b = context.shape[0]
    if model.kind == "deterministic":  # all K futures are the one prediction: roll it out once
        logits, z = model.rollout_logits(context, horizon, latent_drawer(model, prior, bank, None))
        return logits[:, None].repeat(1, samples, 1, 1, 1, 1), z[:, None].repeat(1, samples, 1, 1)
    generator = torch.Generator(device=context.device if prior == "learned" else "cpu").manual_seed(seed)
    draw = latent_drawer(model, prior, bank, generator)
    per_chunk = max(1, max_batch // max(b, 1))
    logits, latents = [], []
    for start in range(0, samples, per_chunk):
        k = min(per_chunk, samples - start)
        ctx = context.repeat_interleave(k, dim=0)  # (b k, C0, ...), clip-major
        out, z = model.rollout_logits(ctx, horizon, draw)
        logits.append(out.view(b, k, *out.shape[1:]))
        latents.append(z.view(b, k, *z.shape[1:]))
    return torch.cat(logits, dim=1), torch.cat(latents, dim=1)


@torch.no_grad()
def deterministic_future(model: VideoPredictor, context: Tensor, *, horizon: int) -> Tensor:
    """(b, C0, c, H, W) -> (b, horizon, c, H, W), the rollout with z = 0 at every step (the VAE:
    with the mean of its prior p(z | h) at every step)."""
    if model.kind == "vae":
        return model.rollout(context, horizon, lambda h, k: model.prior.params(h)[0])[0]
    zeros = lambda h, k: h.new_zeros(h.shape[0], model.z_dim)  # noqa: E731
    return model.rollout(context, horizon, zeros)[0]
