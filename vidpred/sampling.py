"""K futures per clip: autoregressive rollouts, a new z per predicted frame drawn from a prior.

How a future draws its z, and what the single deterministic prediction is, is the model kind's
(objectives.py `Objective.drawer` and `Objective.deterministic`): the energy model draws from its
learned prior or its latent bank and predicts with z = 0 (with latent dropout in training, its best
single guess: the blurry mean that sampled futures must beat on best of K); the VAE draws from its
Gaussian prior and predicts with the prior mean; the deterministic model's K futures are K copies
of its one prediction. A glide decoder with glide_mask='trust' also draws, per future and object, how long the
glided object is kept or, instead, how it bounces off the walls, and what fills the rest (`glide_draws`,
`model.drawn_glide`), so that its futures differ in whether and how each object's constant motion holds (its
latents alone barely changed them: diversity 0.001).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .choices import PriorKind
from .model import GlideDraws, Rows
from .objectives import Objective
from .prior import LatentBank


SAMPLE_BLOCK = 25  # futures of one clip that draw their latents from one random stream
BACKGROUND_FILL = 0.75  # glide_draws' default: the share of futures whose glided pixels not kept leave the background (else generated)
BOUNCE_SHARE = 0.5  # glide_draws: the share of objects (per future) that bounce off the walls instead of gliding on
BOUNCE_DRAWS = 8  # glide_draws: the bounces of an object that draw their own velocity (later ones reuse the last draw)
BOUNCE_SPLIT = (0, 1)  # glide_draws: pixels beyond half of its box's slack on an object's low side (per axis), drawn uniformly
NEAR_WALL_SHARE = 0.8  # glide_draws: of the objects that do not bounce, the share that does near a wall (model.WALL_NEAR)


GLIDE_ONLY_COST = 1 / 8  # a future that runs no network (`VideoPredictor.unread_network`) against one that does (CPU, 64x64: 0.59 s a clip of K = 100 against 4.7-5.1)


def auto_rollout_batch(device: torch.device, height: int, width: int, network_share: float = 1.0) -> int:
    """Futures rolled out together: ~10^5 pixels per frame on a CPU (100 futures at 32x32, 25 at
    64x64: larger chunks measured no faster there, and cost ~4.5 MB each at 64x64), 16x more on a GPU; more where only
    `network_share` of the futures run the network (a trust glide model's futures that fill with the background run
    none, at GLIDE_ONLY_COST of one that does: 50 at 64x64 for 3 in 4, 200 for all)."""
    cost = network_share + (1 - network_share) * GLIDE_ONLY_COST
    rows = int(100 * 32 * 32 // (height * width) * (16 if device.type == "cuda" else 1) / cost)
    return max(SAMPLE_BLOCK, rows // SAMPLE_BLOCK * SAMPLE_BLOCK)


def block_seed(seed: int, clip: int, block: int, stream: int = 0) -> int:
    """The seed of samples block * SAMPLE_BLOCK ... of clip `clip`: independent streams per triple (and per `stream`:
    0 the latents, 1 the glide decoder's mask draws)."""
    return int(np.random.SeedSequence([seed, clip, block, stream] if stream else [seed, clip, block]).generate_state(1)[0])


def glide_draws(rows: int, seed: int, objects: int, *, background_fill: float = BACKGROUND_FILL) -> GlideDraws:
    """How `rows` futures of a glide decoder with glide_mask='trust' realize their glided frame, per object (`model.
    drawn_glide`): the background as the fill for `background_fill` of them on average (else the generated pixels), a
    uniform level per object, and for BOUNCE_SHARE of the objects a bounce off the walls instead, its box's slack split
    by BOUNCE_SPLIT (`model.bounce_step`) and a uniform draw of the velocity for each of its first BOUNCE_DRAWS bounces;
    of the other objects, NEAR_WALL_SHARE bounce too if their constant motion meets a wall within the first
    `model.WALL_NEAR` predicted frames (so 90% of the futures bounce such an object, half of the others)."""
    generator = torch.Generator().manual_seed(seed)
    uniform = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    return GlideDraws(fill=(uniform(rows) < background_fill).float(), levels=uniform(rows, objects),
                      bounce=uniform(rows, objects) < BOUNCE_SHARE,
                      split=torch.randint(BOUNCE_SPLIT[0], BOUNCE_SPLIT[1] + 1, (rows, objects, 2), generator=generator),
                      speeds=uniform(rows, objects, BOUNCE_DRAWS, 2),
                      near_wall=uniform(rows, objects) < NEAR_WALL_SHARE)


@torch.no_grad()
def sample_futures(objective: Objective, context: Tensor, *, samples: int, horizon: int, prior: PriorKind = "learned",
                   bank: LatentBank | None = None, seed: int = 0, clip_ids: Sequence[int] | None = None,
                   max_batch: int | None = None, background_fill: float = BACKGROUND_FILL) -> Tensor:
    """(b, C0, c, H, W) -> (b, samples, horizon, c, H, W).

    The futures of clip i depend only on (seed, clip_ids[i]) (default: i), never on which clips or
    how many futures are rolled out together: each block of SAMPLE_BLOCK samples of a clip draws
    its latents from its own generator. Rollouts run whole blocks, about `max_batch` futures at a
    time (default `auto_rollout_batch`: 25 at 64x64 on a CPU, more for the futures that run no network), so memory
    stays bounded for K = 100; each context is encoded once per block. `background_fill`: see `draw_futures`.
    """
    logits, _ = draw_futures(objective, context, samples=samples, horizon=horizon, prior=prior, bank=bank, seed=seed,
                             clip_ids=clip_ids, max_batch=max_batch, background_fill=background_fill)
    return torch.sigmoid(logits)


@torch.no_grad()
def draw_futures(objective: Objective, context: Tensor, *, samples: int, horizon: int, prior: PriorKind = "learned",
                 bank: LatentBank | None = None, seed: int = 0, clip_ids: Sequence[int] | None = None,
                 max_batch: int | None = None, background_fill: float = BACKGROUND_FILL) -> tuple[Tensor, Tensor]:
    """`sample_futures` as logits (b, samples, horizon, c, H, W), with the latents drawn (b, samples, horizon, d),
    so that each future can be scored by the energy (ranking samples against a partial observation).

    `background_fill` (a glide decoder with glide_mask='trust'; other models ignore it): the share of futures that
    leave the background where they drop a glided object, the rest filling in the generated pixels, where the drawn
    z shows. 1: z changes no sampled future, only the glide's draws do; 0: every dropped object is generated. The
    futures that fill with the background read nothing of the network, which runs on the others only
    (`VideoPredictor.unread_network`); their latents are returned as 0 (z = 0 is their energy's least over z: their
    cost does not depend on it), the others' are those drawn: each block's drawer is told which of its rows run
    (`Rows`), draws the noise of them all and runs the prior on these, so that a future's z is the same whatever the
    others are."""
    if not 0 <= background_fill <= 1:
        raise ValueError(f"background_fill={background_fill}: expected a share between 0 and 1")
    model, b = objective.model, context.shape[0]
    if not objective.stochastic:  # all K futures are the one prediction: roll it out once
        logits, z = model.rollout_logits(context, horizon, objective.drawer(prior, bank, None))
        return logits[:, None].repeat(1, samples, 1, 1, 1, 1), z[:, None].repeat(1, samples, 1, 1)
    clip_ids = list(range(b)) if clip_ids is None else list(clip_ids)
    if len(clip_ids) != b:
        raise ValueError(f"clip_ids names {len(clip_ids)} clips for a context of {b}")
    draws_glide = model.decoder.trust is not None  # the glide's draws, and futures that fill with the background
    share = 1 - background_fill if draws_glide else 1.0  # the futures that run the network
    max_batch = max_batch or auto_rollout_batch(context.device, *context.shape[-2:], network_share=share)
    generator_device = context.device if prior == "learned" else "cpu"
    blocks = [(i, first, min(SAMPLE_BLOCK, samples - first)) for i in range(b) for first in range(0, samples, SAMPLE_BLOCK)]
    logits = context.new_empty(b, samples, horizon, *context.shape[2:])
    latents = context.new_empty(b, samples, horizon, model.z_dim)
    while blocks:
        chunk = [blocks.pop(0)]
        while blocks and sum(n for *_, n in chunk) + blocks[0][2] <= max_batch:
            chunk.append(blocks.pop(0))
        drawers = [objective.drawer(prior, bank, torch.Generator(device=generator_device).manual_seed(
            block_seed(seed, clip_ids[i], first // SAMPLE_BLOCK))) for i, first, _ in chunk]
        sizes = [n for *_, n in chunk]
        starts = np.cumsum([0] + sizes[:-1]).tolist()  # each block's first row in the chunk
        ends = torch.tensor(starts[1:], device=context.device)

        def draw(h: Tensor, k: int, rows: Rows | None = None) -> Tensor:  # each block draws from its own stream
            if rows is None:
                return torch.cat([d(part, k) for d, part in zip(drawers, h.split(sizes))])
            block = torch.bucketize(rows.index, ends, right=True)  # the block of each row h holds (rows.index ascends)
            held = torch.bincount(block, minlength=len(sizes)).tolist()
            return torch.cat([d(part, k, Rows(index - start, n)) for d, part, index, start, n
                              in zip(drawers, h.split(held), rows.index.split(held), starts, sizes)])

        ctx = context[[i for i, *_ in chunk]]
        draws = None if not draws_glide else GlideDraws(*(  # the glide's draws, a stream per block too
            torch.cat(parts).to(context.device) for parts in zip(*(
                glide_draws(n, block_seed(seed, clip_ids[i], first // SAMPLE_BLOCK, 1), model.glide_objects,
                            background_fill=background_fill)
                for i, first, n in chunk))))
        out, z = model.rollout_logits(ctx, horizon, draw, repeats=torch.tensor(sizes, device=context.device), draws=draws)
        for (i, first, n), part, part_z in zip(chunk, out.split(sizes), z.split(sizes)):
            logits[i, first:first + n] = part
            latents[i, first:first + n] = part_z
    return logits, latents
