"""An exponential moving average of a model's weights (Polyak averaging), kept beside training.

`--ema=d` keeps avg <- d·avg + (1 - d)·weights after every optimizer step, starting from the
*initial* weights, and the checkpoint saves it as `ema`. Evaluation, sampling, scoring, export,
validation and the previews use the average; training goes on from the raw weights. Started from
the initial weights, the average of an early run still leans on them: for a decoder that starts as a
copy of the last frame (`model.decoder=kernels`), the first minutes' average stays near that copy
while the raw weights wander off it, and later the average smooths the last ~1 / (1 - d) steps.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor, nn


class WeightAverage:
    """The running average of `model`'s state dict (floating-point parameters and buffers averaged,
    integer buffers copied), from the weights `model` has when it is made."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay={decay}: expected a number in (0, 1), e.g. 0.99")
        self.decay = decay
        self.values: dict[str, Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.floats = [k for k, v in self.values.items() if v.is_floating_point()]  # averaged
        self.copied = [k for k, v in self.values.items() if not v.is_floating_point()]  # (step counters) copied

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step: every floating-point entry moves (1 - decay) of the way to the model's."""
        current = model.state_dict()
        torch._foreach_lerp_([self.values[k] for k in self.floats], [current[k].detach() for k in self.floats],
                             1.0 - self.decay)
        for k in self.copied:
            self.values[k].copy_(current[k])

    def state_dict(self) -> dict[str, Tensor]:
        return self.values

    def load_state_dict(self, values: dict[str, Tensor]) -> None:
        """Take a saved average; ValueError naming the entries when it is not of this model."""
        missing, extra = sorted(set(self.values) - set(values)), sorted(set(values) - set(self.values))
        if missing or extra:
            raise ValueError(f"the saved weight average does not fit the model (missing: {', '.join(missing[:3]) or 'none'}; "
                             f"unexpected: {', '.join(extra[:3]) or 'none'})")
        for k, v in values.items():
            if v.shape != self.values[k].shape:
                raise ValueError(f"the saved weight average's {k} has shape {tuple(v.shape)}, the model's "
                                 f"{tuple(self.values[k].shape)}")
            self.values[k].copy_(v)

    @contextmanager
    def applied(self, model: nn.Module):
        """Within the block `model` holds the average; its own weights are put back after."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.values)
        try:
            yield model
        finally:
            model.load_state_dict(raw)
