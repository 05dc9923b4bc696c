"""Checkpoints as plain data: state dicts, optimizer, step, RNG states, the config, the latent prior.

Nothing is pickled but tensors and builtins, so `torch.load(weights_only=True)` reads them and a
checkpoint never depends on the code's class layout. Writes go to a temporary file that is then
renamed over the target, so an interrupted save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import Config, ConfigError, _flatten, from_dict, to_dict
from .files import atomic_path
from .model import VideoPredictor
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


def training_state(model, optimizer, bank: LatentBank, cfg: Config, step: int, progress: dict) -> dict:
    """Everything a run needs to go on exactly where it stopped: weights, optimizer, the step, the
    torch RNG, the config as plain data, the latent bank, and `progress` (plain data the loop keeps)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
            "config": to_dict(cfg), "prior": fitted_copy(bank).state_dict(),
            "rng": {"torch": torch.get_rng_state()}, "progress": dict(progress)}


def trained_l1(state: dict, cfg: Config) -> float:
    """The sparsity weight the model ended training with (lowered by steering while too few latents are active: latent.min_active)."""
    return float(state.get("progress", {}).get("l1", cfg.latent.l1))


def config_changes(saved: dict, cfg: Config) -> list[str]:
    """`key old -> new` for each setting a resumed run changes from the checkpoint's config."""
    before, now = _flatten(saved), _flatten(to_dict(cfg))
    return [f"{k} {before.get(k)} -> {v}" for k, v in now.items()
            if before.get(k) != v and k not in ("resume", "stop_at")]


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


def build_model(cfg: Config) -> VideoPredictor:
    """The predictor a config describes, with weights in channels-last memory (faster convolutions)."""
    return VideoPredictor(channels=cfg.data.channels, size=cfg.data.size, widths=cfg.model.widths,
                          window=cfg.model.window, blocks=cfg.model.blocks, z_dim=cfg.latent.dim,
                          skip_frames=cfg.model.skip_frames,
                          residual=cfg.model.residual, amortized=cfg.model.encoder,
                          prior_components=cfg.prior.components, kind=cfg.model.kind,
                          recurrent=cfg.model.recurrent, output=cfg.model.decoder, kernel=cfg.model.kernel,
                          chained_prior=cfg.prior.chained,
                          ).to(memory_format=torch.channels_last)


def load_predictor(path: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode, its config, its latent bank, the raw checkpoint) from a checkpoint file."""
    state = load_checkpoint(path)
    try:
        cfg = from_dict(state["config"], source=f"config saved in {path}")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    model = build_model(cfg)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit the model its config describes "
                              f"(saved by another version of vidpred?): {str(e).splitlines()[1].strip()}") from None
    model.to(device).eval()
    return model, cfg, LatentBank.from_state_dict(state["prior"]), state
