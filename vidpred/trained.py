"""Use a trained predictor on any clip: sample futures, score a given future, fill in the blanks.

    from vidpred import load                                             # vidpred.trained.load
    predictor = load("runs/default/checkpoints/last.pt")                  # on the GPU if there is one
    futures = predictor.sample(context, k=8, horizon=10, seed=0)          # (b, 8, 10, c, H, W)
    score = predictor.energy(context, future)                             # score.per_frame, score.total
    filled = predictor.infer(context, observed, mask)                     # filled.future (b, T, c, H, W)
    ranked = predictor.rank(context, observed, mask, k=16)                # samples, most compatible first

Clips are batch-first `(b, t, c, H, W)` (one clip `(t, c, H, W)` is a batch of one), pixels in [0, 1],
at the model's size and channels (`vidpred.media.to_model_frames` converts other frames).

**Scoring** is teacher-forced, as training is: each future frame y_k is predicted from the true
frames before it, and its free energy is F_k = min_z [C(y_k, Dec(h_k, z)) + λR(z)], found by
proximal-gradient inference with more steps than training uses. Σ_k F_k ranks candidate futures;
a frame whose F_k stands out is one the model finds implausible (anomaly scoring).

**Filling in the blanks**: only part of the future is observed (a region, some pixels, some
frames such as a goal frame), so the unobserved frames are rolled out autoregressively and one
latent trajectory z (T, d) per clip is inferred through the whole rollout:
min_z Σ_k C(mask · y_k, mask · ŷ_k(z_1..z_k)) + λR(z_k); then the whole future is decoded from z.
Inference starts from z = 0 and from latents drawn from the prior, and keeps the lowest energy:
the energy is not convex in z, and a multimodal future has one basin per mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from einops import rearrange, repeat
from torch import Tensor

from .build import build_energy, build_objective, load_predictor, trained_l1
from .choices import PriorKind, check_choice
from .devices import resolve_device
from .energy import Energy
from .inference import infer_latent
from .objectives import Objective
from .prior import LatentBank
from .sampling import BACKGROUND_FILL, draw_futures


class Score(NamedTuple):
    """The free energy of given futures, teacher-forced."""

    total: Tensor  # (b,) sum over the frames
    per_frame: Tensor  # (b, T) F_k = cost + penalty at z*_k
    cost: Tensor  # (b, T) C(y_k, Dec(h_k, z*_k)): mean per-pixel cost
    penalty: Tensor  # (b, T) λR(z*_k)
    z: Tensor  # (b, T, d) z*


class Filled(NamedTuple):
    """The whole future decoded from the latents inferred on part of it."""

    future: Tensor  # (b, T, c, H, W) pixels in [0, 1]
    z: Tensor  # (b, T, d)
    energy: Tensor  # (b,) the masked energy reached: sum over the frames of per_frame
    per_frame: Tensor  # (b, T) masked cost + penalty of each frame


class Ranked(NamedTuple):
    """K sampled futures ordered by their energy against a partial observation, lowest first."""

    futures: Tensor  # (b, K, T, c, H, W)
    energy: Tensor  # (b, K) ascending
    z: Tensor  # (b, K, T, d) the latents each future was drawn with
    order: Tensor  # (b, K) indices of these futures in `sample(..., k=K, seed=seed)`


# `energy` scores each frame from the true frames before it, which a model with latent feedback cannot read
TEACHER_FORCED_SCORE_REFUSAL = ("this model feeds back the decoder's features of its own predictions (model.feedback=latent), "
                                "so a frame has no teacher-forced state to score it from; its futures are sampled, "
                                "ranked and filled in by rollouts (sample, rank, infer) instead")


class TrainedPredictor:
    """A trained model with its objective, energy and latent prior, frozen, on one device.

    `context` and `horizon` are the frames it was trained with, `prior` the prior its futures draw
    from unless told otherwise, `step_size` its inference's first step (see inference.py).
    """

    def __init__(self, objective: Objective, bank: LatentBank, *, energy: Energy, device: torch.device,
                 context: int, horizon: int, prior: PriorKind, step_size: float):
        self.objective, self.model, self.bank, self.device = objective, objective.model.eval(), bank, device
        self.model.requires_grad_(False)  # inference moves z only; no weight gradients are ever needed
        self.energy_fn = energy
        self.context, self.horizon, self.prior, self.step_size = context, horizon, prior, step_size

    @property
    def channels(self) -> int:
        return self.model.channels

    @property
    def size(self) -> int:
        return self.model.size

    # --- inputs ---------------------------------------------------------------------------------

    def _on_device(self, x) -> Tensor:
        """An array-like or a tensor as a float32 tensor on the device."""
        return torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).to(self.device, torch.float32)

    def as_clips(self, frames, name: str) -> Tensor:
        """Array-like clips (b, t, c, H, W), or one clip (t, c, H, W), as a float tensor on the device."""
        x = self._on_device(frames)
        if x.ndim == 4:
            x = x[None]
        self.model.check_video(x, name)
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"{name} has pixels in [{x.min():.3g}, {x.max():.3g}]; expected [0, 1]")
        return x

    def _mask(self, mask, observed: Tensor) -> Tensor:
        m = self._on_device(mask)
        try:
            fits = torch.broadcast_shapes(m.shape, observed.shape) == observed.shape
        except RuntimeError:
            fits = False
        if not fits:
            b, t, c, h, w = observed.shape
            raise ValueError(f"mask has shape {tuple(m.shape)}; expected a shape that broadcasts to the observed "
                             f"future (b, T, c, H, W) = ({b}, {t}, {c}, {h}, {w}), e.g. (T, 1, H, W) or (H, W)")
        if m.numel() and (m.min() < 0 or m.max() > 1):
            raise ValueError(f"mask has values in [{m.min():.3g}, {m.max():.3g}]; expected 1 where observed, "
                             "0 where not (or weights in between)")
        return m.expand_as(observed)

    # --- sampling -------------------------------------------------------------------------------

    def sample(self, context, k: int = 8, horizon: int | None = None, seed: int = 0,
               prior: str | None = None, background_fill: float = BACKGROUND_FILL) -> Tensor:
        """K futures per clip: (b, C0, c, H, W) -> (b, k, horizon, c, H, W). The same seed, the same futures.
        `background_fill` (a glide decoder with glide_mask='trust'): the share of futures that leave the background
        where they drop a glided object, the rest showing the generated pixels there (`sampling.draw_futures`)."""
        logits, _ = self._draw(self.as_clips(context, "context"), k=k, horizon=horizon or self.horizon, seed=seed,
                               prior=prior, background_fill=background_fill)
        return torch.sigmoid(logits)

    def deterministic(self, context, horizon: int | None = None) -> Tensor:
        """The rollout of the model's single best guess (b, horizon, c, H, W): z = 0 (the VAE: its prior mean)."""
        return self.objective.deterministic(self.as_clips(context, "context"), horizon=horizon or self.horizon)

    def _draw(self, context: Tensor, *, k: int, horizon: int, seed: int, prior: str | None,
              background_fill: float = BACKGROUND_FILL):
        prior = check_choice("prior", prior or self.prior, PriorKind)
        if k <= 0 or horizon <= 0:
            raise ValueError(f"k={k}, horizon={horizon}: expected positive numbers")
        return draw_futures(self.objective, context, samples=k, horizon=horizon, prior=prior, bank=self.bank, seed=seed,
                            background_fill=background_fill)

    # --- scoring --------------------------------------------------------------------------------

    @torch.no_grad()
    def energy(self, context, future, *, steps: int = 40) -> Score:
        """The teacher-forced free energy of `future` (b, T, c, H, W) after `context` (b, C0, c, H, W).

        Each frame's z is inferred with `steps` proximal-gradient steps from two starts, the
        amortized guess A(y - Dec(h, 0)) and z = 0; the lower energy is kept (inference is monotone,
        so this is never above the energy at either start).
        """
        if self.model.feedback == "latent":
            raise ValueError(TEACHER_FORCED_SCORE_REFUSAL)
        context, future = self.as_clips(context, "context"), self.as_clips(future, "future")
        if context.shape[0] != future.shape[0]:
            raise ValueError(f"context holds {context.shape[0]} clips but future holds {future.shape[0]}")
        b, t = future.shape[:2]
        cond, target = self.model.teacher_forced_pairs(torch.cat([context, future], dim=1), context.shape[1])  # n = b T
        guess = self.model.amortized_latent(cond, target)  # (n, d)
        starts = torch.stack([guess, torch.zeros_like(guess)], dim=1)  # (n, 2, d)
        twice = cond.repeat(2)
        inference = infer_latent(lambda z: self.model.decode(twice, z), target.repeat_interleave(2, dim=0),
                                 starts.flatten(0, 1), self.energy_fn, steps=steps,
                                 step_size=self.step_size)
        best = inference.energy_after.view(-1, 2).argmin(dim=1)
        z = inference.z.view(-1, 2, self.model.z_dim)[torch.arange(best.shape[0], device=best.device), best]
        cost = self.energy_fn.reconstruction(self.model.decode(cond, z), target).view(b, t)
        penalty = self.energy_fn.penalty(z).view(b, t)
        per_frame = cost + penalty
        return Score(per_frame.sum(dim=1), per_frame, cost, penalty, z.view(b, t, -1))

    # --- conditioning on part of the future -----------------------------------------------------

    def _rollout_energy(self, observed: Tensor, mask: Tensor, logits: Tensor, z: Tensor) -> Tensor:
        """Masked energy per frame (n, T) of rollout logits (n, T, c, H, W) made with latents z (n, T, d)."""
        n, t = z.shape[:2]
        flat = lambda x: rearrange(x, "n t c h w -> (n t) c h w")  # noqa: E731
        cost = self.energy_fn.reconstruction(flat(logits), flat(observed), flat(mask)).view(n, t)
        return cost + self.energy_fn.penalty(rearrange(z, "n t d -> (n t) d")).view(n, t)

    @torch.no_grad()
    def rank(self, context, observed, mask, *, k: int = 16, seed: int = 0, prior: str | None = None,
             background_fill: float = BACKGROUND_FILL) -> Ranked:
        """Draw K futures and order them by energy against what is observed of the future.

        `observed` (b, T, c, H, W) holds the future where `mask` (broadcastable to it) is 1; other
        pixels are ignored. A sample's energy is its masked cost plus λR of the latents it was drawn
        with (z = 0 for a trust-glide future that fills with the background and so reads none: `draw_futures`).
        The futures are those of `sample(context, k, T, seed, prior, background_fill)`, reordered.
        """
        context, observed = self.as_clips(context, "context"), self.as_clips(observed, "observed")
        mask = self._mask(mask, observed)
        b, t = observed.shape[:2]
        logits, z = self._draw(context, k=k, horizon=t, seed=seed, prior=prior,  # (b, K, T, ...), (b, K, T, d)
                               background_fill=background_fill)
        per_frame = self._rollout_energy(observed.repeat_interleave(k, dim=0),
                                         mask.repeat_interleave(k, dim=0), logits.flatten(0, 1), z.flatten(0, 1))
        energy, order = per_frame.sum(dim=1).view(b, k).sort(dim=1)
        rows = torch.arange(b, device=order.device)[:, None]
        return Ranked(torch.sigmoid(logits[rows, order]), energy, z[rows, order], order)

    @torch.no_grad()
    def infer(self, context, observed, mask, *, steps: int = 50, starts: int = 8, seed: int = 0,
              prior: str | None = None) -> Filled:
        """Fill in the blanks: the whole future (b, T, c, H, W) from the part of `observed` where `mask` is 1.

        z (b, T, d) is inferred through the autoregressive rollout by `steps` proximal-gradient
        steps from `starts` points (z = 0 and `starts - 1` latent trajectories drawn from the
        prior with `seed`); each clip keeps its lowest masked energy.
        """
        context, observed = self.as_clips(context, "context"), self.as_clips(observed, "observed")
        mask = self._mask(mask, observed)
        if starts <= 0:
            raise ValueError(f"starts={starts}: expected at least 1 (z = 0)")
        b, t = observed.shape[:2]
        z0 = context.new_zeros(b, starts, t, self.model.z_dim)
        if starts > 1:
            z0[:, 1:] = self._draw(context, k=starts - 1, horizon=t, seed=seed, prior=prior)[1]
        repeats = torch.full((b,), starts, device=context.device)  # rows clip-major like z0.flatten(0, 1)
        obs, msk = observed.repeat_interleave(starts, dim=0), mask.repeat_interleave(starts, dim=0)

        def decode(z: Tensor) -> Tensor:  # (m, T, d) -> rollout logits (m, T, c, H, W), differentiable in z
            return self.model.rollout_logits(context, t, lambda h, k: z[:, k], repeats=repeats)[0]

        inference = infer_latent(decode, obs, z0.flatten(0, 1), self.energy_fn, steps=steps,
                                 step_size=self.step_size, mask=msk)
        best = inference.energy_after.view(b, starts).argmin(dim=1)
        z = inference.z.view(b, starts, t, -1)[torch.arange(b, device=best.device), best]  # (b, T, d)
        logits, _ = self.model.rollout_logits(context, t, lambda h, k: z[:, k])
        per_frame = self._rollout_energy(observed, mask, logits, z)
        return Filled(torch.sigmoid(logits), z, per_frame.sum(dim=1), per_frame)


def load(ckpt: str | Path, device: str = "auto") -> TrainedPredictor:
    """The predictor saved in checkpoint `ckpt` (or a folder `vidpred export` wrote), on `device` (auto: the GPU if there is one)."""
    target = resolve_device(device)
    model, cfg, bank, state = load_predictor(ckpt, target)
    # the full regularizer, with the sparsity weight training ended with
    return TrainedPredictor(build_objective(cfg, model), bank, energy=build_energy(cfg, l1=trained_l1(state, cfg)),
                            device=target, context=cfg.context, horizon=cfg.horizon, prior=cfg.prior.kind,
                            step_size=cfg.latent.step_size)


def future_mask(*, horizon: int, size: int, channels: int = 1, region: str = "all",
                frames: list[int] | None = None) -> Tensor:
    """A mask (T, c, H, W) of what is observed of the future: `region` of each frame in `frames`.

    region: all | top | bottom | left | right (a half of the frame) | R0:R1,C0:C1 (rows and columns,
    in pixels of the model's frame, Python slices). frames: indices of observed future frames
    (0 the first predicted, -1 the last); None: every frame.
    """
    spatial = torch.zeros(size, size)
    half = size // 2
    boxes = {"all": (slice(None), slice(None)), "top": (slice(0, half), slice(None)),
             "bottom": (slice(half, None), slice(None)), "left": (slice(None), slice(0, half)),
             "right": (slice(None), slice(half, None))}
    if region in boxes:
        spatial[boxes[region]] = 1.0
    else:
        spatial[_parse_box(region)] = 1.0
    if not spatial.any():
        raise ValueError(f"region {region!r} observes no pixel of a {size}x{size} frame")
    observed_frames = torch.zeros(horizon)
    for f in range(horizon) if frames is None else frames:
        if not -horizon <= f < horizon:
            raise ValueError(f"observed frame {f} is outside the {horizon} predicted frames "
                             f"(0..{horizon - 1}, or -{horizon}..-1 from the end)")
        observed_frames[f] = 1.0
    return repeat(observed_frames, "t -> t c h w", c=channels, h=size, w=size) * spatial


def _parse_box(region: str) -> tuple[slice, slice]:
    """'R0:R1,C0:C1' -> (slice(R0, R1), slice(C0, C1)); empty bounds as in Python slices."""
    parts = region.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        bounds = [[int(v) if v.strip() else None for v in part.split(":")] for part in parts]
        if any(len(b) != 2 for b in bounds):
            raise ValueError
    except ValueError:
        raise ValueError(f"region {region!r}: expected all, top, bottom, left, right, or rows and columns "
                         "R0:R1,C0:C1 such as 16:32,0:32") from None
    return slice(*bounds[0]), slice(*bounds[1])
