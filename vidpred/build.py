"""The one place that turns a config into objects: the model, its objective, the energy, the data source.

Modules below this one (model, objectives, energy, inference, prior, sampling, data) take explicit
keyword arguments and never read a `Config`; the training loop, evaluation, the trained-model API
and the command lines call these builders.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import CheckpointError, load_checkpoint, mismatch_detail
from .choices import DataKind, EncoderInput, ModelKind, check_choice
from .config import PATH_NEEDS, Config, ConfigError, DataConfig, saved_config
from .data import ArrayClips, ClipSource, DataError, ForkToy, FrameFolders, MovingMNIST, MovingSprites, VideoFolder
from .energy import Energy
from .model import VideoPredictor
from .objectives import Objective, objective_class
from .prior import LatentBank

__all__ = ["build_model", "predictor_of_kind", "build_objective", "build_energy", "build_source", "load_predictor", "run_home", "trained_l1"]


def build_model(cfg: Config) -> VideoPredictor:
    """The predictor a config describes, with its kind's heads, weights in channels-last memory (faster convolutions)."""
    return predictor_of_kind(
        cfg.model.kind, amortized=cfg.model.encoder, reads=cfg.model.encoder_reads, components=cfg.prior.components, chained=cfg.prior.chained,
        channels=cfg.data.channels, size=cfg.data.size, widths=cfg.model.widths, window=cfg.model.window,
        blocks=cfg.model.blocks, z_dim=cfg.latent.dim, skip_frames=cfg.model.skip_frames, skips=cfg.model.skips, content=cfg.model.content, recall=cfg.model.recall, residual=cfg.model.residual,
        recurrent=cfg.model.recurrent, output=cfg.model.decoder, kernel=cfg.model.kernel, sharp=cfg.model.sharp, generate=cfg.model.generate,
        generate_after=cfg.model.generate_after, feedback=cfg.model.feedback, glide_mask=cfg.model.glide_mask, bounce_box=cfg.model.bounce_box,
        trained_horizon=cfg.horizon,
    ).to(memory_format=torch.channels_last)


def predictor_of_kind(kind: ModelKind = "energy", *, amortized: bool = True, reads: EncoderInput = "residual",
                      components: int = 4, chained: bool = False, **network) -> VideoPredictor:
    """A `VideoPredictor(**network)` with the heads of model kind `kind` (objectives.py): for the energy
    model the amortized encoder (`amortized`, reading `reads`) and the conditional prior (`components`, `chained`)."""
    model = VideoPredictor(**network)
    objective_class(kind).heads(model, amortized=amortized, reads=reads, components=components, chained=chained)
    return model


def build_objective(cfg: Config, model: VideoPredictor) -> Objective:
    """The model kind's objective (objectives.py) over `model`, with the configured inference and loss weights."""
    return objective_class(cfg.model.kind)(
        model, steps=cfg.latent.steps, step_size=cfg.latent.step_size, encoder_weight=cfg.latent.encoder_weight,
        kl_weight=cfg.latent.kl_weight, dropout=cfg.latent.dropout,
        feedback_grad=cfg.rollout_grad, prior_draws=cfg.latent.draws,
        proposal=cfg.latent.proposal, kl_warmup=cfg.latent.kl_warmup, pushforward=cfg.pushforward,
        noise=cfg.latent.noise, prior_weight=cfg.latent.prior_weight,
        fused=cfg.latent.fused, still_weight=cfg.still_weight, still_steps=cfg.still_steps)


def build_energy(cfg: Config, step: int | None = None, l1: float | None = None) -> Energy:
    """The configured energy, with sparsity weight `l1` (default: the configured one); during
    training (`step` given) its l1 and l2 weights ramp up over `latent.warmup` steps. A kind whose z
    is not regularized by R (the baselines: the VAE's regularizer is its KL) gets the cost alone."""
    if not objective_class(cfg.model.kind).regularized:
        return Energy(cost=cfg.cost)
    ramp = 1.0 if step is None or cfg.latent.warmup == 0 else min(1.0, (step + 1) / cfg.latent.warmup)
    l1 = cfg.latent.l1 if l1 is None else l1
    return Energy(cost=cfg.cost, l1=l1 * ramp, l2=cfg.latent.l2 * ramp, ball=cfg.latent.ball)


def build_source(data: DataConfig, *, seed: int, split: str, frames: int, context: int) -> ClipSource:
    """The clip source named by `data.kind`, producing clips of `frames` frames.

    `context` places the fork of the fork toy right after the given frames, and is where the
    enumerated futures of discrete bounces branch.
    """
    bouncing = dict(seed=seed, split=split, size=data.size, channels=data.channels, frames=frames,
                    objects=data.objects, max_speed=data.max_speed, bounce=data.bounce, branches=data.branches,
                    context=context, composite=data.composite)
    if data.kind in PATH_NEEDS and not data.path:  # (config.validate_data says so first; other callers reach here)
        raise DataError(f"data.kind={data.kind} needs --data.path: {PATH_NEEDS[data.kind]}")
    if data.kind == "sprites":
        return MovingSprites(sprite_min=data.sprite_min, sprite_max=data.sprite_max, **bouncing)
    if data.kind == "mmnist":
        return MovingMNIST(data.path, download=data.download, **bouncing)
    if data.kind == "fork":
        return ForkToy(seed=seed, split=split, size=data.size, channels=data.channels, frames=frames,
                       fork_at=context, branches=data.branches, sprite=data.sprite_min, speed=data.max_speed)
    folders = dict(seed=seed, split=split, frames=frames, size=data.size, channels=data.channels,
                   frame_step=data.frame_step, stride=data.clip_stride, val_share=data.val_share,
                   split_by=data.split_by, test_subjects=data.test_subjects)
    if data.kind == "video":
        return VideoFolder(data.path, **folders)
    if data.kind == "frames":
        return FrameFolders(data.path, **folders)
    if data.kind == "array":
        return ArrayClips(data.path, seed=seed, frames=frames, size=data.size, channels=data.channels,
                          layout=data.layout, frame_step=data.frame_step, stride=data.clip_stride)
    check_choice("data.kind", data.kind, DataKind)
    raise AssertionError(f"data.kind={data.kind!r} has no source")


def trained_l1(state: dict, cfg: Config) -> float:
    """The sparsity weight the model ended training with (lowered by steering while too few latents are active: latent.min_active)."""
    return float(state.get("progress", {}).get("l1", cfg.latent.l1))


def run_home(path: str | Path) -> Path:
    """Where outputs about a model go by default: the run folder of a checkpoint (RUN/checkpoints/x.pt),
    or an exported folder itself."""
    from .export import is_export

    path = Path(path).resolve()
    return path if is_export(path) else path.parent.parent


WEIGHTS = ("average", "raw")


def load_predictor(path: str | Path, device: str | torch.device = "cpu", weights: str = "average"):
    """(model in eval mode, its config, its latent bank, the raw checkpoint) from a checkpoint file
    or a folder that `vidpred export` wrote. A run trained with --ema saved a weight average beside
    its weights: `weights="average"` loads it (where there is none, the weights), `"raw"` the weights.
    The returned state's "weights" says which were loaded ("average" or "raw")."""
    from .export import is_export, read_export

    state = read_export(path) if is_export(path) else load_checkpoint(path)
    try:
        cfg = saved_config(state["config"], source=f"config saved in {path}")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    if weights not in WEIGHTS:
        raise ValueError(f"weights={weights!r}: expected one of {', '.join(WEIGHTS)}")
    if weights == "raw" and state.get("weights") == "average":  # an export of an --ema run
        raise CheckpointError(f"{path} holds only the weight average of an --ema run (export keeps the weights "
                              f"evaluation uses); its raw weights are in the checkpoint it was exported from")
    averaged = weights == "average" and ("ema" in state or state.get("weights") == "average")
    state["weights"] = "average" if averaged else "raw"
    model = build_model(cfg)
    try:
        model.load_state_dict(state["ema"] if averaged and "ema" in state else state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit the model its config describes "
                              f"(saved by another version of vidpred?): {mismatch_detail(e)}") from None
    model.to(device).eval()
    return model, cfg, LatentBank.from_state_dict(state["prior"]), state
