"""Priors over z for sampling, since z is found by minimization and has no encoder-given prior.

- `bank`: an empirical bank of inferred z* drawn at random (EEN);
- `fitted`: per dimension, a point mass at 0 with the observed share of exact zeros (sparse codes)
  and a Laplace fitted to the nonzero values (median and mean absolute deviation);
- `learned`: p(z | h) from the model's `ConditionalPrior` head (see model.py), so the spread of the
  futures depends on the context.
The bank and the fitted parameters are plain tensors saved in the checkpoint.
"""

from __future__ import annotations

import torch
from torch import Tensor


class LatentBank:
    """A ring buffer of inferred latents (capacity, d) and the per-dimension distribution fitted to it."""

    def __init__(self, dim: int, capacity: int):
        self.dim, self.capacity = dim, capacity
        self.z = torch.zeros(capacity, dim)
        self.seen = 0  # latents ever added; the buffer holds the last min(seen, capacity)
        self.zero_prob = torch.ones(dim)
        self.loc = torch.zeros(dim)
        self.scale = torch.ones(dim)

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def add(self, z: Tensor) -> None:
        z = z.detach().reshape(-1, self.dim).float().cpu()[-self.capacity:]
        idx = (torch.arange(z.shape[0]) + self.seen) % self.capacity
        self.z[idx] = z
        self.seen += z.shape[0]

    def fit(self) -> None:
        """Fit the spike-and-Laplace distribution of each dimension to the latents held."""
        if len(self) == 0:
            raise ValueError("cannot fit the latent prior: the bank holds no latents yet")
        z = self.z[:len(self)]
        nonzero = z != 0
        self.zero_prob = 1.0 - nonzero.float().mean(dim=0)
        for d in range(self.dim):
            values = z[nonzero[:, d], d]
            if values.numel() == 0:
                self.loc[d], self.scale[d] = 0.0, 1e-6
                continue
            self.loc[d] = values.median()
            self.scale[d] = (values - self.loc[d]).abs().mean().clamp(min=1e-6)

    def sample(self, n: int, kind: str, *, generator: torch.Generator | None = None) -> Tensor:
        """(n, d) latents drawn from the bank or from the fitted distribution."""
        if len(self) == 0:
            raise ValueError("the latent bank is empty: train (or fit the prior) before sampling")
        if kind == "bank":
            return self.z[torch.randint(len(self), (n,), generator=generator)]
        if kind == "fitted":
            u = torch.rand(n, self.dim, generator=generator) - 0.5
            laplace = self.loc - self.scale * torch.sign(u) * torch.log1p(-2 * u.abs()).clamp(min=-30)
            zero = torch.rand(n, self.dim, generator=generator) < self.zero_prob
            return torch.where(zero, torch.zeros_like(laplace), laplace)
        raise ValueError(f"prior kind {kind!r}: the bank draws 'bank' or 'fitted'")

    def state_dict(self) -> dict:
        return {"z": self.z[:len(self)].clone(), "seen": self.seen, "capacity": self.capacity,
                "zero_prob": self.zero_prob.clone(), "loc": self.loc.clone(), "scale": self.scale.clone()}

    @classmethod
    def from_state_dict(cls, state: dict) -> "LatentBank":
        z = state["z"]
        bank = cls(z.shape[1], int(state["capacity"]))
        held = z.shape[0]
        bank.z[:held] = z
        bank.seen = int(state["seen"])  # rows were saved in ring order, so the write position still holds
        bank.zero_prob, bank.loc, bank.scale = state["zero_prob"].clone(), state["loc"].clone(), state["scale"].clone()
        return bank
