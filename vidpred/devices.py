"""Which device a run uses: `auto` is the first GPU when there is one, else the CPU."""

from __future__ import annotations

import torch

from .config import check_device


def resolve_device(name: str) -> torch.device:
    """`auto`, `cpu`, `cuda`, `cuda:N` or `mps` as a torch device."""
    if check_device(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
