"""The energy E(x, y, z) = C(y, Dec(h(x), z)) + λ·R(z), computed here and nowhere else.

Per predicted frame (one unit of inference):

    C(y, ŷ)  mean per-pixel cost (BCE on logits by default; MSE or L1 on sigmoid pixels),
             optionally restricted to observed pixels by a mask;
    R(z)     l1 · ||z||₁ + l2 · ||z||²₂, and the constraint ||z||₂ <= ball when ball > 0.

The l1 term and the ball are not differentiated: they are handled by the proximal operator
(soft-thresholding, then projection), which is what makes inference ISTA rather than subgradient
descent and lets it reach exact zeros (sparse coding). Latent dimension and latent dropout, the
other capacity limits, live in the model and the training step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .choices import Cost, check_choice



@dataclass(frozen=True)
class Energy:
    cost: Cost = "bce"
    l1: float = 0.0
    l2: float = 0.0
    ball: float = 0.0

    def __post_init__(self):
        check_choice("cost", self.cost, Cost)

    def reconstruction(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """C per unit: (n, [T,] c, H, W) -> (n,), the mean cost over a frame's pixels, summed over
        the frames of a unit. With a mask, unobserved pixels cost nothing and the rest keep their
        weight, so a full mask gives exactly the unmasked cost."""
        if self.cost == "bce":
            per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        elif self.cost == "mse":
            per_pixel = (torch.sigmoid(logits) - target) ** 2
        else:
            per_pixel = (torch.sigmoid(logits) - target).abs()
        if mask is not None:
            per_pixel = per_pixel * mask
        return per_pixel.mean(dim=(-3, -2, -1)).reshape(per_pixel.shape[0], -1).sum(dim=1)

    def smooth_penalty(self, z: Tensor) -> Tensor:
        """The differentiable part of λ·R(z): (n, [T,] d) -> (n,)."""
        return self.l2 * z.pow(2).reshape(z.shape[0], -1).sum(dim=1)

    def penalty(self, z: Tensor) -> Tensor:
        """λ·R(z) in full: (n, [T,] d) -> (n,). (The ball is a constraint, kept by `prox`, not a cost.)"""
        return self.smooth_penalty(z) + self.l1 * z.abs().reshape(z.shape[0], -1).sum(dim=1)

    def __call__(self, logits: Tensor, target: Tensor, z: Tensor, mask: Tensor | None = None) -> Tensor:
        """E per unit (n,)."""
        return self.reconstruction(logits, target, mask) + self.penalty(z)

    def project(self, z: Tensor) -> Tensor:
        """The nearest z that satisfies the constraint ||z_k||₂ <= ball (each z_k; identity if no ball)."""
        if self.ball > 0:
            z = z * (self.ball / z.norm(dim=-1, keepdim=True).clamp(min=self.ball))
        return z

    def prox(self, z: Tensor, step: Tensor) -> Tensor:
        """Proximal operator of the non-smooth part at step size `step` (n, 1): soft-threshold, project."""
        if self.l1 > 0:
            z = torch.sign(z) * (z.abs() - step * self.l1).clamp(min=0.0)
        return self.project(z)

