"""Free-running training: the model is trained on the rollouts it will be asked to make.

Teacher-forced training predicts each future frame from the *true* frames before it, while
sampling feeds the model's own predictions back for 20 frames: errors the model never saw in
training compound (exposure bias), and a predictor trained that way blurs and melts objects within
a few frames. Here a clip's T future frames are predicted one after the other from the model's
own outputs, as in sampling, with gradients through the whole rollout (back-propagation through
the fed-back frames), and each frame's latent is found *on the rollout's state*:

    s_0 = begin(context)
    for k = 1 .. T:     h_k = Pred(s_{k-1})
                        z_k = latent of frame k given h_k and the true y_k      (per model kind)
                        ŷ_k = Dec(h_k, z_k);   s_k = advance(s_{k-1}, ŷ_k)
    loss = mean_k [E(y_k, ŷ_k, z_k) + the kind's own terms]

The model kinds differ only in how a frame's latent is found (`FrameLatents`):

- energy: z⁰ = A(y_k - Dec(h_k, 0)), z* = argmin_z E by proximal steps with the weights frozen,
  straight-through into A, latent dropout (z = 0 for a share of the frames); the learned prior
  p(z_k | h_k [, z_{k-1}]) is fitted to z* on the rollout's own states — the states sampling
  will give it — and with the previous z*, so a chained prior learns how latents follow each other.
- vae (SVG-LP): z_k ~ q(z_k | h_k, y_k) reparameterized, plus β·KL(q || p(z_k | h_k)).
- deterministic: z = 0.

Because the rollout follows z* (or the posterior draw), the fed-back frames stay on the true
branch of a multimodal future, which is what makes the latent worth inferring: with z = 0 the
rollout would drift to the blurry average and every later frame would be trained from there.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from .baselines import gaussian_kl
from .energy import Energy
from .inference import infer_latent
from .model import Conditioning, VideoPredictor


class FrameLatent(NamedTuple):
    """What a model kind gives for one predicted frame of a batch (n rows)."""

    z: Tensor  # (n, d) the latent the frame is decoded with (carries gradients where the kind trains through it)
    kept: Tensor  # (n, d) the latent to keep: the bank's entry, the prior's target, the next frame's z_{k-1}
    extra: Tensor  # (n,) the kind's loss terms besides the energy at z (encoder pull, prior NLL, KL)
    stats: dict[str, Tensor]  # (n,) per-row figures averaged into the step's statistics


FrameLatents = Callable[[int, Conditioning, Tensor, Tensor], FrameLatent]  # (k, cond, y_k, z_{k-1}) -> latent


def energy_latents(model: VideoPredictor, energy: Energy, *, steps: int, step_size: float, encoder_weight: float,
                   keep: Tensor | None = None, score_zero: bool = False) -> FrameLatents:
    """The energy model's latent of frame k: inference from the amortized guess, on the rollout state.

    `keep` (b, T, 1) is the latent-dropout mask (1: use z*, 0: train the frame with z = 0); None keeps
    every frame. `score_zero` adds the energy at z = 0 to the statistics (validation reads it).
    """

    def latent(k: int, cond: Conditioning, target: Tensor, z_prev: Tensor) -> FrameLatent:
        z0 = model.amortized_latent(cond, target)  # (n, d)
        frozen = cond.detach()
        inference = infer_latent(lambda z: model.decode(frozen, z), target, z0, energy, steps=steps,
                                 step_size=step_size)
        z_star = inference.z
        z = z0 + (z_star - z0).detach()  # straight-through into A
        if keep is not None:
            z = z * keep[:, k].to(z)
        encoder_loss = (z0 - z_star).pow(2).sum(dim=1)
        prior_nll = model.prior.nll(cond.h.detach(), z_star, z_prev) / model.z_dim
        stats = {"energy_before": inference.energy_before, "energy_after": inference.energy_after,
                 "encoder_loss": encoder_loss.detach(), "prior_nll": prior_nll.detach(),
                 "latent_norm": z_star.norm(dim=1), "latent_active": (z_star != 0).float().mean(dim=1)}
        if score_zero:
            with torch.no_grad():
                zero = torch.zeros_like(z0)
                stats["energy_zero"] = energy(model.decode(frozen, zero), target, zero)
        return FrameLatent(z, z_star, encoder_weight * encoder_loss + prior_nll, stats)

    return latent


def vae_latents(model: VideoPredictor, *, kl_weight: float, noise: Tensor | None) -> FrameLatents:
    """SVG-LP's latent of frame k: a reparameterized posterior draw (its mean when `noise` (b, T, d) is None)."""

    def latent(k: int, cond: Conditioning, target: Tensor, z_prev: Tensor) -> FrameLatent:
        mu_q, log_sigma_q = model.posterior_params(cond, target)  # (n, d) each
        mu_p, log_sigma_p = model.prior.params(cond.h)
        z = mu_q if noise is None else mu_q + log_sigma_q.exp() * noise[:, k].to(mu_q)
        kl = gaussian_kl(mu_q, log_sigma_q, mu_p, log_sigma_p)  # (n,) nats per frame
        stats = {"kl": kl.detach(), "latent_norm": z.detach().norm(dim=1),
                 "posterior_sigma": log_sigma_q.detach().exp().mean(dim=1),
                 "prior_sigma": log_sigma_p.detach().exp().mean(dim=1)}
        return FrameLatent(z, z.detach(), kl_weight * kl, stats)

    return latent


def deterministic_latents(model: VideoPredictor) -> FrameLatents:
    """The deterministic baseline's latent: always z = 0."""

    def latent(k: int, cond: Conditioning, target: Tensor, z_prev: Tensor) -> FrameLatent:
        z = target.new_zeros(target.shape[0], model.z_dim)
        return FrameLatent(z, z, target.new_zeros(target.shape[0]), {})

    return latent


class RolloutPass(NamedTuple):
    loss: Tensor  # () the mean over the rollout's frames of energy + the kind's terms
    stats: dict[str, float]  # means over the frames, the keys the teacher-forced steps log
    kept: Tensor  # (b * T, d) clip-major, the latents the kind keeps
    per_frame: dict[str, Tensor]  # (b, T) the energy at z and each latent statistic, per frame


def free_running(model: VideoPredictor, video: Tensor, *, context: int, energy: Energy,
                 latents: FrameLatents) -> RolloutPass:
    """Roll out the future of `video` (b, t, c, H, W) from its first `context` frames on the model's
    own predictions, each frame decoded with the latent `latents` finds for it; see the module docstring."""
    model.check_video(video)
    b, horizon = video.shape[0], video.shape[1] - context
    state = model.begin(video[:, :context])
    z_prev = video.new_zeros(b, model.z_dim)
    terms, kept, frames, outputs, per_frame = [], [], [], [], {}
    for k in range(horizon):
        cond, memory = model.condition(state)
        target = video[:, context + k]
        found = latents(k, cond, target, z_prev)
        logits = model.decode(cond, found.z)
        e = energy(logits, target, found.z)  # (b,)
        terms.append(e + found.extra)
        for name, value in {"energy": e.detach(), **found.stats}.items():
            per_frame.setdefault(name, []).append(value)
        pixels = torch.sigmoid(logits)
        outputs.append(pixels.detach().mean())
        if k + 1 < horizon:
            state = model.advance(state, memory, pixels)  # fed back with gradients: the rollout is trained whole
        kept.append(found.kept)
        z_prev = found.kept.detach()
    loss = torch.stack(terms, dim=1).mean()
    per_frame = {name: torch.stack(values, dim=1) for name, values in per_frame.items()}
    stats = {"loss": loss.item(), **{name: values.float().mean().item() for name, values in per_frame.items()},
             "out_mean": torch.stack(outputs).mean().item(), "target_mean": video[:, context:].mean().item()}
    return RolloutPass(loss, stats, torch.stack(kept, dim=1).flatten(0, 1), per_frame)
