"""K futures per clip: autoregressive rollouts, a new z per predicted frame drawn from a prior.

The deterministic prediction is the same rollout with z = 0: with latent dropout in training this
is the model's best single guess, the blurry mean that sampled futures must beat on best-of-K.
The baselines (baselines.py): the deterministic model's K samples are K copies of its one
prediction; the VAE samples z from its learned Gaussian prior p(z | h), and its deterministic
prediction decodes the prior mean.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .config import CHOICES
from .model import VideoPredictor
from .prior import LatentBank

PRIOR_KINDS = CHOICES["prior.kind"]


def latent_drawer(model: VideoPredictor, kind: str, bank: LatentBank | None, generator: torch.Generator):
    """A `draw_z(h, k)` for `VideoPredictor.rollout` that samples from the named prior."""
    if kind not in PRIOR_KINDS:
        raise ValueError(f"prior {kind!r}: expected one of {', '.join(PRIOR_KINDS)}")
    if model.kind == "deterministic":  # no latent to draw, whatever the prior
        return lambda h, k: h.new_zeros(h.shape[0], model.z_dim)
    if kind == "learned":
        if not model.prior.chained:
            return lambda h, k: model.prior.sample(h, generator=generator)
        previous: list[Tensor] = []  # the z this drawer gave at the step before, which a chained prior reads

        def draw_chained(h: Tensor, k: int) -> Tensor:
            z = model.prior.sample(h, generator=generator, z_prev=previous[-1] if k > 0 and previous else None)
            previous[:] = [z]
            return z
        return draw_chained
    if bank is None:
        raise ValueError(f"prior {kind!r} needs the latent bank saved in the checkpoint")
    return lambda h, k: bank.sample(h.shape[0], kind, generator=generator).to(h.device, h.dtype)


SAMPLE_BLOCK = 25  # futures of one clip that draw their latents from one random stream


def block_seed(seed: int, clip: int, block: int) -> int:
    """The seed of samples block * SAMPLE_BLOCK ... of clip `clip`: independent streams per triple."""
    return int(np.random.SeedSequence([seed, clip, block]).generate_state(1)[0])


@torch.no_grad()
def sample_futures(model: VideoPredictor, context: Tensor, *, samples: int, horizon: int, prior: str = "learned",
                   bank: LatentBank | None = None, seed: int = 0, clip_ids: Sequence[int] | None = None,
                   max_batch: int = 1024) -> Tensor:
    """(b, C0, c, H, W) -> (b, samples, horizon, c, H, W).

    The futures of clip i depend only on (seed, clip_ids[i]) (default: i), never on which clips or
    how many futures are rolled out together: each block of SAMPLE_BLOCK samples of a clip draws
    its latents from its own generator. Rollouts run whole blocks, about `max_batch` futures at a
    time, so memory stays bounded for K = 100; each context is encoded once per block.
    """
    logits, _ = draw_futures(model, context, samples=samples, horizon=horizon, prior=prior, bank=bank, seed=seed,
                             clip_ids=clip_ids, max_batch=max_batch)
    return torch.sigmoid(logits)


@torch.no_grad()
def draw_futures(model: VideoPredictor, context: Tensor, *, samples: int, horizon: int, prior: str = "learned",
                 bank: LatentBank | None = None, seed: int = 0, clip_ids: Sequence[int] | None = None,
                 max_batch: int = 1024) -> tuple[Tensor, Tensor]:
    """`sample_futures` as logits (b, samples, horizon, c, H, W), with the latents drawn (b, samples, horizon, d),
    so that each future can be scored by the energy (ranking samples against a partial observation)."""
    b = context.shape[0]
    if model.kind == "deterministic":  # all K futures are the one prediction: roll it out once
        logits, z = model.rollout_logits(context, horizon, latent_drawer(model, prior, bank, None))
        return logits[:, None].repeat(1, samples, 1, 1, 1, 1), z[:, None].repeat(1, samples, 1, 1)
    clip_ids = list(range(b)) if clip_ids is None else list(clip_ids)
    if len(clip_ids) != b:
        raise ValueError(f"clip_ids names {len(clip_ids)} clips for a context of {b}")
    generator_device = context.device if prior == "learned" else "cpu"
    blocks = [(i, first, min(SAMPLE_BLOCK, samples - first)) for i in range(b) for first in range(0, samples, SAMPLE_BLOCK)]
    logits = context.new_empty(b, samples, horizon, *context.shape[2:])
    latents = context.new_empty(b, samples, horizon, model.z_dim)
    while blocks:
        chunk = [blocks.pop(0)]
        while blocks and sum(n for *_, n in chunk) + blocks[0][2] <= max_batch:
            chunk.append(blocks.pop(0))
        drawers = [latent_drawer(model, prior, bank, torch.Generator(device=generator_device).manual_seed(
            block_seed(seed, clip_ids[i], first // SAMPLE_BLOCK))) for i, first, _ in chunk]
        sizes = [n for *_, n in chunk]

        def draw(h: Tensor, k: int) -> Tensor:  # every block draws its rows from its own stream
            return torch.cat([d(part, k) for d, part in zip(drawers, h.split(sizes))])

        ctx = context[[i for i, *_ in chunk]]
        out, z = model.rollout_logits(ctx, horizon, draw, repeats=torch.tensor(sizes, device=context.device))
        for (i, first, n), part, part_z in zip(chunk, out.split(sizes), z.split(sizes)):
            logits[i, first:first + n] = part
            latents[i, first:first + n] = part_z
    return logits, latents


@torch.no_grad()
def deterministic_future(model: VideoPredictor, context: Tensor, *, horizon: int) -> Tensor:
    """(b, C0, c, H, W) -> (b, horizon, c, H, W), the rollout with z = 0 at every step (the VAE:
    with the mean of its prior p(z | h) at every step)."""
    if model.kind == "vae":
        return model.rollout(context, horizon, lambda h, k: model.prior.params(h)[0])[0]
    zeros = lambda h, k: h.new_zeros(h.shape[0], model.z_dim)  # noqa: E731
    return model.rollout(context, horizon, zeros)[0]
