"""Training: minimize the energy over z for every sample, then over the weights at that z.

    z⁰  = A(y - Dec(h, 0))                        amortized guess (0 without an encoder)
    z*  = argmin_z E(x, y, z)                     N proximal steps from z⁰, weights frozen
    loss = E(x, y, z*) + β·||z⁰ - sg(z*)||² + NLL of z* under the conditional prior

z* enters the weight update straight-through (z⁰ + sg(z* - z⁰)): the decoder is trained at z*,
and with N = 0 the encoder A gets the full autoencoder gradient (EEN); with N > 0 it is also pulled
toward z*. With probability `dropout` a frame is trained with z = 0, so the deterministic path
must predict all that is predictable (PPUU) and z carries only what the context cannot tell.

Runs that last: every random draw of a step is a function of (seed, step, clip index) — the data
(clip = f(seed, index), the loader yields indices step * batch_size + i), the crop, the latent
dropout mask — and the checkpoint holds everything else (weights, optimizer, latent bank, the
partial log window, the best validation energy), so a resumed run logs what an uninterrupted one
would, and N torchrun ranks (each with its slice of the global batch) compute what one process does.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from .baselines import baseline_latents, deterministic_step, latent_noise, vae_step
from .checkpoint import build_model, config_changes, fitted_copy, load_checkpoint, save_checkpoint, training_state
from .config import Config, to_dict
from .data import build_source, train_loader
from .distributed import (Interrupted, Ranks, StopRequest, barrier, data_parallel, gather_rows,
                          setup, sum_over_ranks, teardown)
from .energy import Energy, build_energy
from .inference import infer_latent
from .model import VideoPredictor
from .monitor import preview
from .objectives import deterministic_latents, energy_latents, free_running, vae_latents
from .prior import LatentBank
from .runfolder import claim
from .tracking import Tracker

PREVIEW_CLIPS = 16  # val clips whose sampled futures are scored (and the first few drawn) at each preview

__all__ = ["train", "train_step", "infer_clip_latents", "learning_rate", "refit_prior", "latent_keep", "steer_sparsity",
           "validation_energy", "build_energy", "Interrupted"]


def steer_sparsity(l1: float, active: float, *, floor: float, cap: float) -> float:
    """The next l1 weight: below `floor` (a share of nonzero latent entries) it falls, above it it
    rises back, by at most 10% a step (proportional to the relative gap), never above `cap`, the
    configured l1.

    A fixed l1 can kill z for good: z = 0 is the exact ISTA solution whenever |dC/dz| <= l1, and
    once z is zero the decoder's z-weights get no gradient, so |dC/dz| never grows back (seen at
    batch 8 from step ~1000, and at batch 16 from step 25). Steered, l1 drops until z is used again;
    once the decoder relies on z, l1 returns to the configured price of information.
    """
    change = max(-0.1, min(0.1, 0.1 * (active - floor) / floor))
    return min(max(l1 * math.exp(change), 1e-6), cap)


def infer_clip_latents(model: VideoPredictor, video: Tensor, *, context: int, energy: Energy, steps: int,
                       step_size: float, kl_weight: float = 0.0):
    """Teacher-forced conditioning, target frames, z⁰ and the inference result for a batch of clips.
    For a baseline, their counterparts without gradients (see `baselines.baseline_latents`)."""
    if model.kind != "energy":
        return baseline_latents(model, video, context=context, energy=energy, kl_weight=kl_weight)
    cond, target = model.teacher_forced_pairs(video, context)  # n = b * T frames to predict
    z0 = model.amortized_latent(cond, target)  # (n, d)
    frozen = cond.detach()
    inference = infer_latent(lambda z: model.decode(frozen, z), target, z0, energy, steps=steps,
                             step_size=step_size)
    return cond, target, z0, inference


def latent_keep(*, seed: int, step: int, clips: range, frames: int, dropout: float) -> Tensor:
    """The latent-dropout mask (len(clips) * frames, 1), clip-major like the predicted frames: 0 trains
    that frame with z = 0. `clips` are positions in the step's global batch; each clip's draws depend
    only on (seed, step, position), so a resumed run draws the same masks, and N ranks together draw
    what one process draws for the whole batch."""
    draws = [np.random.default_rng([seed, step, i, 0x6B656570]).random(frames) for i in clips]
    u = torch.from_numpy(np.concatenate(draws)) if draws else torch.zeros(0, dtype=torch.float64)
    return (u >= dropout).float().view(-1, 1)


def train_step(model: VideoPredictor, video: Tensor, *, context: int, energy: Energy, steps: int, step_size: float,
               dropout: float, encoder_weight: float, generator: torch.Generator | None = None,
               keep: Tensor | None = None, kl_weight: float = 0.0,
               noise: Tensor | None = None, rollout: bool = False) -> tuple[Tensor, dict, Tensor]:
    """The loss of one batch `(b, t, c, H, W)`, its statistics, and the inferred z* (n, d).

    `keep` (n, 1) is the latent-dropout mask (see `latent_keep`); without it, one is drawn at rate
    `dropout` from `generator`. The baselines take their own step (baselines.py): the deterministic
    one only the cost, the VAE `kl_weight` and its reparameterization `noise` (see `latent_noise`).
    With `rollout`, the future is predicted free-running (objectives.py) instead of teacher-forced.
    """
    if rollout:
        b, frames = video.shape[0], video.shape[1] - context
        if keep is None and model.kind == "energy":
            keep = torch.rand(b * frames, 1, generator=generator) >= dropout
        if noise is None and model.kind == "vae":
            noise = torch.randn(b * frames, model.z_dim, generator=generator)
        latents = frame_latents(model, energy, steps=steps, step_size=step_size, encoder_weight=encoder_weight,
                                kl_weight=kl_weight, keep=None if keep is None else keep.view(b, frames, 1),
                                noise=None if noise is None else noise.view(b, frames, -1))
        result = free_running(model, video, context=context, energy=energy, latents=latents)
        return result.loss, result.stats, result.kept
    if model.kind == "deterministic":
        return deterministic_step(model, video, context=context, energy=energy)
    if model.kind == "vae":
        return vae_step(model, video, context=context, energy=energy, kl_weight=kl_weight, noise=noise,
                        generator=generator)
    cond, target, z0, inference = infer_clip_latents(model, video, context=context, energy=energy, steps=steps,
                                                     step_size=step_size)
    z_star = inference.z
    if keep is None:
        keep = torch.rand(z_star.shape[0], 1, generator=generator) >= dropout
    keep = keep.to(z_star)
    z = (z0 + (z_star - z0).detach()) * keep  # straight-through into A; dropped frames use z = 0
    logits = model.decode(cond, z)
    e = energy(logits, target, z)  # (n,)
    encoder_loss = (z0 - z_star).pow(2).sum(dim=1).mean()
    prior_nll = model.prior.nll(cond.h.detach(), z_star).mean() / model.z_dim
    loss = e.mean() + encoder_weight * encoder_loss + prior_nll
    stats = {
        "loss": loss.item(),
        "energy": e.mean().item(),
        "energy_before": inference.energy_before.mean().item(),
        "energy_after": inference.energy_after.mean().item(),
        "encoder_loss": encoder_loss.item(),
        "prior_nll": prior_nll.item(),
        "latent_norm": z_star.norm(dim=1).mean().item(),
        "latent_active": (z_star != 0).float().mean().item(),  # share of nonzero latent entries
        "out_mean": torch.sigmoid(logits).mean().item(),  # watch for the all-black collapse
        "target_mean": target.mean().item(),
    }
    return loss, stats, z_star


def frame_latents(model: VideoPredictor, energy: Energy, *, steps: int, step_size: float, encoder_weight: float,
                  kl_weight: float, keep: Tensor | None = None, noise: Tensor | None = None,
                  score_zero: bool = False):
    """How the model's kind finds each frame's latent along a free-running rollout (objectives.py)."""
    if model.kind == "deterministic":
        return deterministic_latents(model)
    if model.kind == "vae":
        return vae_latents(model, kl_weight=kl_weight, noise=noise)
    return energy_latents(model, energy, steps=steps, step_size=step_size, encoder_weight=encoder_weight, keep=keep,
                          score_zero=score_zero)


def clip_latents(model: VideoPredictor, video: Tensor, cfg: Config, energy: Energy,
                 score_zero: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per predicted frame of a batch, as training infers them (teacher-forced or free-running, per
    `cfg.rollout`), without dropout or noise: (z* (n, d), E at z*, E at z⁰, E at z = 0) with n = b * T.
    For the baselines E at z⁰ and at z = 0 are their cost at the prior's guess (see baselines.py)."""
    if cfg.rollout:
        latents = frame_latents(model, energy, steps=cfg.latent.steps, step_size=cfg.latent.step_size,
                                encoder_weight=0.0, kl_weight=cfg.latent.kl_weight, score_zero=score_zero)
        result = free_running(model, video, context=cfg.context, energy=energy, latents=latents)
        after = result.per_frame["energy"]
        before = result.per_frame.get("energy_before", after)
        zero = result.per_frame.get("energy_zero", before)
        return result.kept, after.flatten(), before.flatten(), zero.flatten()
    cond, target, z0, inference = infer_clip_latents(model, video, context=cfg.context, energy=energy,
                                                     steps=cfg.latent.steps, step_size=cfg.latent.step_size,
                                                     kl_weight=cfg.latent.kl_weight)
    zero = torch.zeros_like(z0)
    at_zero = energy(model.decode(cond, zero), target, zero) if score_zero else inference.energy_before
    return inference.z, inference.energy_after, inference.energy_before, at_zero


def learning_rate(step: int, *, lr: float, warmup: int, steps: int) -> float:
    """Linear warmup, then cosine decay to lr / 10 at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def refit_prior(model: VideoPredictor, cfg: Config, device: torch.device, l1: float | None = None) -> LatentBank:
    """A fresh bank of z* inferred by the final model (with the final sparsity weight `l1`) on unseen
    training clips, with its fit."""
    source = build_source(cfg.data, seed=cfg.seed, split="train", frames=cfg.context + cfg.horizon,
                          context=cfg.context)
    bank = LatentBank(cfg.latent.dim, cfg.prior.bank)
    first = cfg.steps * cfg.batch_size  # indices after the last training clip
    energy = build_energy(cfg, l1=l1)
    model.eval()
    for start in range(0, cfg.prior.fit_clips, cfg.batch_size):
        count = min(cfg.batch_size, cfg.prior.fit_clips - start)
        video = torch.stack([source[first + start + i] for i in range(count)]).to(device)
        bank.add(clip_latents(model, video, cfg, energy)[0].detach())
    bank.fit()
    model.train()
    return bank


@torch.no_grad()
def validation_energy(model: VideoPredictor, source, indices: list[int], *, cfg: Config,
                      device: torch.device) -> Tensor:
    """Sums over the predicted frames of clips `indices` of `source`: (E at z*, E at z⁰, E at z = 0, frames).

    Teacher-forced like training, with the full regularizer (no warmup ramp) so that values compare
    across steps; no rollouts, so it is cheap enough to run often.
    """
    energy = build_energy(cfg)
    sums = torch.zeros(4, dtype=torch.float64)
    model.eval()
    for start in range(0, len(indices), cfg.batch_size):
        video = torch.stack([source[i] for i in indices[start:start + cfg.batch_size]]).to(device)
        _, after, before, at_zero = clip_latents(model, video, cfg, energy, score_zero=True)
        sums += torch.tensor([after.sum().item(), before.sum().item(), at_zero.sum().item(), after.shape[0]],
                             dtype=torch.float64)
    model.train()
    return sums


class StepLoss(nn.Module):
    """`train_step` (with its keyword arguments) as a module's forward, for DistributedDataParallel.

    DDP averages gradients only in the backward pass of a forward that went through it, so the whole
    step runs inside. The latent inference's `torch.autograd.grad` calls differentiate with respect
    to z alone: they never run the parameters' gradient accumulators, where DDP's hooks sit, so
    they trigger no reduction; the step's one `loss.backward()` does.
    """

    def __init__(self, model: VideoPredictor):
        super().__init__()
        self.model = model

    def forward(self, video: Tensor, **options) -> tuple[Tensor, dict, Tensor]:
        return train_step(self.model, video, **options)


def _crop(video: Tensor, length: int, step: int, seed: int) -> Tensor:
    """A window of `length` frames from clips that may be longer, chosen reproducibly per step."""
    spare = video.shape[1] - length
    if spare == 0:
        return video
    start = int(torch.randint(spare + 1, (1,), generator=torch.Generator().manual_seed(seed * 7919 + step)))
    return video[:, start:start + length]


def train(cfg: Config) -> Path:
    """Train as configured, data-parallel over the ranks when started by torchrun; returns the path of
    the last checkpoint.

    Raises `Interrupted` (after saving) when SIGINT or SIGTERM stopped the run, FloatingPointError
    (saving nothing) when the loss or the gradient norm is not finite, and RunFolderError (before
    training) when the output folder holds another run's checkpoint or another process is writing it.
    """
    ranks = setup(device=cfg.device, batch_size=cfg.batch_size)
    try:
        with claim(cfg, ranks), StopRequest() as stop:  # the run folder is this process's while it trains
            return _train(cfg, ranks, stop)
    finally:
        teardown(ranks)


def _train(cfg: Config, ranks: Ranks, stop: StopRequest) -> Path:
    out, device, main = cfg.out_dir, ranks.device, ranks.main
    last_path, best_path = out / "checkpoints" / "last.pt", out / "checkpoints" / "best.pt"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)

    model = build_model(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    predictor_params = [p for name, p in model.named_parameters() if not name.startswith("prior.")]
    bank = LatentBank(cfg.latent.dim, cfg.prior.bank)
    # what a checkpoint holds besides weights: the partial log window, the best validation, the wandb run
    progress = {"sums": {}, "count": 0, "best_energy": math.inf, "best_step": 0, "wandb_id": None,
                "l1": cfg.latent.l1}  # l1 drops while the share of active latents is below latent.min_active
    start = 0
    if cfg.resume:
        state = load_checkpoint(last_path, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        bank = LatentBank.from_state_dict(state["prior"])
        torch.set_rng_state(state["rng"]["torch"])
        progress.update(state.get("progress", {}))
        start = int(state["step"])
        if main:
            changes = config_changes(state["config"], cfg)
            print(f"resuming {last_path} at step {start}" + (f" (changed: {', '.join(changes)})" if changes else ""))
    saved = start if cfg.resume else None  # step of this run's last good checkpoint
    end = min(cfg.steps, cfg.stop_at) if cfg.stop_at else cfg.steps
    if start >= end:
        if main:
            print(f"{last_path} is at step {start}: nothing to train up to step {end}; raise --steps to go on")
        return last_path
    if cfg.compile:  # in place: parameter names, and so checkpoints, stay as they are
        for part in (model.encoder, model.predictor, model.decoder):
            part.compile()
    step_loss = data_parallel(StepLoss(model), ranks)
    tracker = None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if not cfg.resume:  # a best.pt left by an earlier run in this folder must not pass for this run's
            best_path.unlink(missing_ok=True)
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
        tracker = Tracker(out, config=to_dict(cfg), name=cfg.name, project=cfg.wandb_project, mode=cfg.wandb,
                          resume_step=start if cfg.resume else None, run_id=progress["wandb_id"])
        progress["wandb_id"] = tracker.run_id

    source = build_source(cfg.data, seed=cfg.seed, split="train", frames=cfg.data.frames, context=cfg.context)
    loader = train_loader(source, batch_size=cfg.batch_size, start_step=start, steps=end, workers=cfg.data.workers,
                          pin_memory=device.type == "cuda", rank=ranks.rank, world=ranks.world)
    val_source = build_source(cfg.data, seed=cfg.seed, split="val", frames=cfg.context + cfg.horizon,
                              context=cfg.context)
    n_val = min(cfg.val_clips, len(val_source))
    val_indices = list(range(ranks.rank, n_val, ranks.world))  # each rank scores its share
    local = cfg.batch_size // ranks.world
    mine = range(ranks.rank * local, (ranks.rank + 1) * local)  # this rank's positions in the global batch
    steered = cfg.model.kind == "energy" and cfg.latent.min_active > 0 and cfg.latent.l1 > 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    if main:
        n_params = sum(p.numel() for p in model.parameters())
        spread = f" in {ranks.world} processes of {local}" if ranks.world > 1 else ""
        print(f"vidpred: {n_params / 1e6:.2f}M parameters, {cfg.steps} steps of {cfg.batch_size} clips{spread} "
              f"({cfg.context} -> {cfg.horizon} frames, {cfg.data.kind} {cfg.data.size}x{cfg.data.size}) on {device}; "
              f"writing {out}")

    model.train()
    bar = tqdm(total=cfg.steps, initial=start, dynamic_ncols=True, desc="train", disable=not main,
               mininterval=0.5 if sys.stderr.isatty() else 30.0)  # a log file gets a line every 30 s
    clips, busy, wait = 0, 0.0, 0.0  # throughput of the current log window (training time only)
    best_pending = False  # the final step's validation was the best: best.pt waits for the refitted prior
    tick = started = time.perf_counter()
    out_of_time = False  # --max_minutes passed: stop as --stop_at does
    try:
        for step, video in enumerate(loader, start):
            fetched = time.perf_counter()
            wait += fetched - tick  # time the step spent waiting for its batch
            lr = learning_rate(step, lr=cfg.lr, warmup=cfg.warmup, steps=cfg.steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            video = _crop(video, cfg.context + cfg.horizon, step, cfg.seed).to(device, non_blocking=True)
            keep = latent_keep(seed=cfg.seed, step=step, clips=mine, frames=cfg.horizon, dropout=cfg.latent.dropout)
            noise = latent_noise(seed=cfg.seed, step=step, clips=mine, frames=cfg.horizon,
                                 dim=cfg.latent.dim) if cfg.model.kind == "vae" else None
            with autocast:
                loss, stats, z_star = step_loss(video, context=cfg.context,
                                                energy=build_energy(cfg, step, l1=progress["l1"]),
                                                steps=cfg.latent.steps, step_size=cfg.latent.step_size,
                                                dropout=cfg.latent.dropout, keep=keep,
                                                encoder_weight=cfg.latent.encoder_weight,
                                                kl_weight=cfg.latent.kl_weight, noise=noise,
                                                rollout=cfg.rollout and step >= cfg.rollout_start)
            # One small collective a step: the global batch's statistics, whether any rank was
            # signalled and whether any ran out of time, so that all ranks stop (or fail) at the same step.
            timed_out = bool(cfg.max_minutes) and time.perf_counter() - started > 60 * cfg.max_minutes
            shared = sum_over_ranks(torch.tensor([*stats.values(), float(stop.signum > 0), float(timed_out)],
                                                 dtype=torch.float64), ranks).tolist()
            stats = {k: v / ranks.world for k, v in zip(stats, shared)}
            if cfg.model.kind == "energy":
                stats["l1"] = progress["l1"]
            stopping = shared[-2] > 0
            if not math.isfinite(stats["loss"]):
                raise _not_finite("the loss", stats["loss"], step + 1, saved, last_path, video)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # The prior head fits z* on detached inputs; clip it apart so its NLL cannot shrink the
            # predictor's updates through a shared gradient norm.
            stats["grad_norm"] = torch.nn.utils.clip_grad_norm_(predictor_params, cfg.grad_clip).item()
            if not math.isfinite(stats["grad_norm"]):  # same on every rank: gradients are already averaged
                raise _not_finite("the gradient norm", stats["grad_norm"], step + 1, saved, last_path, video)
            if model.prior is not None:  # (the deterministic baseline has no prior)
                torch.nn.utils.clip_grad_norm_(model.prior.parameters(), cfg.grad_clip)
            optimizer.step()
            bank.add(gather_rows(z_star.detach(), ranks))
            if steered:  # the same on every rank: stats are shared
                progress["l1"] = steer_sparsity(progress["l1"], stats["latent_active"], floor=cfg.latent.min_active,
                                                cap=cfg.latent.l1)
            for k, v in stats.items():
                progress["sums"][k] = progress["sums"].get(k, 0.0) + v
            progress["count"] += 1
            clips += cfg.batch_size
            done = step + 1
            busy += time.perf_counter() - fetched
            bar.update(1)

            record, images, videos = {}, {}, {}
            if done % cfg.log_every == 0 or done == cfg.steps:
                record.update({k: v / progress["count"] for k, v in progress["sums"].items()})
                record.update(lr=lr, clips_per_s=clips / (busy + wait), data_wait=wait / (busy + wait))
                if "energy_before" in record:
                    bar.set_postfix(E=f"{record['energy_before']:.4f}>{record['energy_after']:.4f}",
                                    z_active=f"{record['latent_active']:.2f}", clips_s=f"{record['clips_per_s']:.0f}",
                                    data_wait=f"{record['data_wait']:.0%}")
                else:  # a baseline (baselines.py): its cost, and the VAE's KL
                    bar.set_postfix(C=f"{record['energy']:.4f}", KL=f"{record.get('kl', 0.0):.3f}",
                                    clips_s=f"{record['clips_per_s']:.0f}", data_wait=f"{record['data_wait']:.0%}")
                progress["sums"], progress["count"] = {}, 0
                clips, busy, wait = 0, 0.0, 0.0
            improved = False
            if cfg.val_every and (done % cfg.val_every == 0 or done == cfg.steps):
                sums = sum_over_ranks(validation_energy(model, val_source, val_indices, cfg=cfg, device=device),
                                      ranks)
                energy = (sums[0] / sums[3]).item()
                improved = energy < progress["best_energy"]
                if improved:
                    progress.update(best_energy=energy, best_step=done)
                record.update({"val/energy": energy, "val/energy_z0": (sums[1] / sums[3]).item(),
                               "val/energy_z_zero": (sums[2] / sums[3]).item(),
                               "val/best_energy": progress["best_energy"]})
            if main and cfg.media_every and (done % cfg.media_every == 0 or done == cfg.steps):
                shown = torch.stack([val_source[i] for i in range(min(n_val, PREVIEW_CLIPS))]).to(device)
                metrics, images["samples"], videos["futures"] = preview(
                    model, shown, context=cfg.context, prior=cfg.prior.kind, bank=fitted_copy(bank), seed=cfg.seed,
                    folder=out / "media", step=done)
                record.update(metrics)
            if main and record:
                tracker.log(done, record, images=images, videos=videos)

            unfinished = done < cfg.steps
            if shared[-1] > 0 and unfinished:
                out_of_time, end = True, done
            if main and unfinished and (done % cfg.ckpt_every == 0 or stopping or done == end or improved):
                state = training_state(model, optimizer, bank, cfg, done, progress)
                if done % cfg.ckpt_every == 0 or stopping or done == end:
                    saved = _save(last_path, state, model, done, saved)
                if improved:
                    _save(best_path, state, model, done, saved)
            best_pending = improved and not unfinished
            if stopping and unfinished:  # (a signal during the last step lets the run finish normally)
                signum = stop.signum or signal.SIGTERM  # a rank that was not signalled itself stops with its peers
                if main:
                    tracker.log_checkpoints([last_path, best_path], step=done)
                    tracker.close(exit_code=128 + signum)
                bar.close()
                barrier(ranks)
                raise Interrupted(signum, done, last_path)
            if out_of_time:
                break
            tick = time.perf_counter()
    except BaseException:
        bar.close()
        if tracker is not None:
            tracker.close(exit_code=1)
        raise
    bar.close()

    if end < cfg.steps:  # --stop_at or --max_minutes: the loop saved last.pt at that step
        if main:
            tracker.log_checkpoints([last_path, best_path], step=end)
            tracker.close()
            asked = f"--max_minutes={cfg.max_minutes}" if out_of_time else f"--stop_at={cfg.stop_at}"
            print(f"stopped after step {end} as asked ({asked}); saved {last_path}; go on with --resume")
        barrier(ranks)
        return last_path
    if main:
        bank = refit_prior(model, cfg, device, l1=progress["l1"])
        state = training_state(model, optimizer, bank, cfg, cfg.steps, progress)
        _save(last_path, state, model, cfg.steps, saved)
        if best_pending:
            _save(best_path, state, model, cfg.steps, saved)
        tracker.log_checkpoints([last_path, best_path], step=cfg.steps)
        tracker.summary({"steps": cfg.steps, "best_val_energy": progress["best_energy"],
                         "best_step": progress["best_step"]})
        tracker.close()
        print(f"saved {last_path}" + (f" and {best_path} (validation energy {progress['best_energy']:.5f} "
                                      f"at step {progress['best_step']})" if best_path.exists() else ""))
    barrier(ranks)
    return last_path


def _not_finite(what: str, value: float, step: int, saved: int | None, last_path: Path,
                video: Tensor | None = None) -> FloatingPointError:
    """The stop for a non-finite `what`, saying what it saw: the step's batch `video` (when given)
    holding non-finite pixels blames the data; finite pixels blame the optimization."""
    last = f"the last good checkpoint is {last_path} (step {saved})" if saved is not None else \
        "no checkpoint of this run was saved yet"
    bad = 0 if video is None else int((~torch.isfinite(video)).sum())
    if bad:
        seen = (f"the step's batch holds {bad} non-finite pixel values (NaN or inf) of {video.numel()}, so the data is "
                "at fault, not the learning rate")
        advice = "Find and fix those clips in the data, then go on with --resume"
    else:
        seen = {"the loss": "its batch's pixels are all finite, so the model's output or loss diverged",
                "the gradient norm": "the loss and the batch's pixels were finite; the backward pass overflowed"}.get(
            what, "")
        advice = "Lower --lr or --grad_clip, then go on with --resume"
    return FloatingPointError(f"{what} is {value} in step {step}; {seen + '; ' if seen else ''}stopped without saving, "
                              f"so no checkpoint holds broken weights ({last}). {advice}")


def _save(path: Path, state: dict, model: nn.Module, step: int, saved: int | None) -> int:
    """Save a checkpoint, refusing weights that are not finite; returns its step."""
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise _not_finite("a weight", "not finite", step, saved, path.with_name("last.pt"))
    save_checkpoint(path, state)
    return step
