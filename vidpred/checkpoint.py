"""Checkpoints as plain data: state dicts, optimizer, step, RNG states, the config, the latent prior.

Nothing is pickled but tensors and builtins, so `torch.load(weights_only=True)` reads them and a
checkpoint never depends on the code's class layout. Writes go to a temporary file that is then
renamed over the target, so an interrupted save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .files import atomic_path
from .prior import LatentBank

FORMAT = 1


class CheckpointError(FileNotFoundError):
    """A checkpoint that is missing or unreadable; the message names the path."""


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write `state` to `path` atomically: a save that fails or is killed leaves the old file as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        torch.save({"format": FORMAT, **state}, f)
        f.flush()
        os.fsync(f.fileno())  # the bytes are on disk before the name points at them
    return path


def fitted_copy(bank: LatentBank) -> LatentBank:
    """A copy of a training run's latent bank with its distribution fitted, so that `fitted` sampling
    works from a mid-run checkpoint; the running bank stays as training left it."""
    copy = LatentBank.from_state_dict(bank.state_dict())
    if len(copy):
        copy.fit()
    return copy


def training_state(model, optimizer, bank: LatentBank, config: dict, step: int, progress: dict) -> dict:
    """Everything a run needs to go on exactly where it stopped: weights, optimizer, the step, the
    torch RNG, the config as plain data, the latent bank, and `progress` (plain data the loop keeps)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
            "config": config, "prior": fitted_copy(bank).state_dict(),
            "rng": {"torch": torch.get_rng_state()}, "progress": dict(progress)}


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        hint = " (a run folder holds it at checkpoints/last.pt)" if path.is_dir() else ""
        raise CheckpointError(f"checkpoint not found: {path}{hint}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"checkpoint {path} could not be read ({type(e).__name__}: {e})") from None
    missing = {"model", "config", "prior", "step"} - set(state)
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a vidpred checkpoint: it lacks {sorted(missing)}")
    return state
