"""Latent inference: z* = argmin_z E(x, y, z) by proximal gradient descent (ISTA), weights frozen.

Steps are normalized: a unit (one predicted frame in teacher-forced training, or one whole clip
when z spans a rollout) moves its latents by about `step_size` (RMS per entry) along the gradient,
whatever the scale of the energy — a per-pixel mean cost gives gradients that change by orders of
magnitude as the decoder learns to use z. The proximal operator uses the matching effective step,
so the soft-threshold stays exact ISTA. Each unit keeps its own step size: an accepted step grows
it by 1.25, a step that would raise that unit's energy is rejected and halves it. So inference is
monotone: E(z*) <= E(z⁰) for every unit.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from .energy import Energy


class Inference(NamedTuple):
    z: Tensor  # z*, same shape as z⁰
    energy_before: Tensor  # (n,) E at z⁰
    energy_after: Tensor  # (n,) E at z*, never above energy_before


def infer_latent(decode: Callable[[Tensor], Tensor], target: Tensor, z0: Tensor, energy: Energy, *,
                 steps: int, step_size: float, mask: Tensor | None = None) -> Inference:
    """`steps` proximal-gradient steps on z from z0; `decode(z)` gives the logits `target` is scored on.

    `step_size` is the first step's length in latent units (RMS change per entry).

    Inference starts from z0 projected onto the constraint set. Only z receives gradients (`torch.autograd.grad` on z alone), so the weights are neither changed
    nor given `.grad`; `decode` should close over detached conditioning so no graph outlives a step.
    Costs `steps` decoder forward+backward passes and one forward pass.
    """
    z = energy.project(z0.detach())  # start feasible: inside the ball, if there is one
    n = z.shape[0]
    eta = torch.full((n,) + (1,) * (z.ndim - 1), float(step_size), device=z.device, dtype=z.dtype)
    best_z = best_e = best_g = e_first = None
    for i in range(steps + 1):
        if i < steps:
            with torch.enable_grad():
                z_var = z.clone().requires_grad_(True)
                smooth = energy.reconstruction(decode(z_var), target, mask) + energy.smooth_penalty(z_var)
                (grad,) = torch.autograd.grad(smooth.sum(), z_var)
            e = smooth.detach() + energy.l1 * z.abs().reshape(n, -1).sum(dim=1)
        else:
            with torch.no_grad():
                e = energy(decode(z), target, z, mask)
            grad = None
        if i == 0:
            best_z, best_e, best_g, e_first = z, e, grad, e
        else:
            better = e < best_e
            sel = better.view(eta.shape)  # broadcast each unit's verdict over its latents
            best_z = torch.where(sel, z, best_z)
            best_e = torch.where(better, e, best_e)
            if grad is not None:
                best_g = torch.where(sel, grad, best_g)
            eta = torch.where(sel, eta * 1.25, eta * 0.5)
        if i < steps:
            rms = best_g.pow(2).reshape(n, -1).mean(dim=1).sqrt().view(eta.shape)
            step = eta / (rms + 1e-12)  # the gradient step that moves z by about eta per entry
            z = energy.prox(best_z - step * best_g, step)
    return Inference(best_z, e_first, best_e)
