"""Training: minimize the energy over z for every sample, then over the weights at that z.

    z⁰  = A(y - Dec(h, 0))                        amortized guess (0 without an encoder)
    z*  = argmin_z E(x, y, z)                     N proximal steps from z⁰, weights frozen
    loss = E(x, y, z*) + β·||z⁰ - sg(z*)||² + NLL of z* under the conditional prior

z* enters the weight update straight-through (z⁰ + sg(z* - z⁰)): the decoder is trained at z*,
and with N = 0 the encoder A gets the full autoencoder gradient (EEN); with N > 0 it is also pulled
toward z*. With probability `dropout` a frame is trained with z = 0, so the deterministic path
must predict all that is predictable (PPUU) and z carries only what the context cannot tell.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor
from tqdm import tqdm

from .checkpoint import build_model, load_checkpoint, save_checkpoint
from .config import Config, to_dict
from .data import build_source, train_loader
from .energy import Energy
from .inference import infer_latent
from .model import Conditioning, VideoPredictor
from .prior import LatentBank
from .tracking import Tracker


def build_energy(cfg: Config, step: int | None = None) -> Energy:
    """The configured energy; during training, its l1 and l2 weights ramp up over `latent.warmup` steps."""
    ramp = 1.0 if step is None or cfg.latent.warmup == 0 else min(1.0, (step + 1) / cfg.latent.warmup)
    return Energy(cost=cfg.cost, l1=cfg.latent.l1 * ramp, l2=cfg.latent.l2 * ramp, ball=cfg.latent.ball)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def infer_clip_latents(model: VideoPredictor, video: Tensor, *, context: int, energy: Energy, steps: int,
                       step_size: float):
    """Teacher-forced conditioning, target frames, z⁰ and the inference result for a batch of clips."""
    cond = model.teacher_forced(video, context)  # n = b * T frames to predict
    target = rearrange(video[:, context:], "b t c h w -> (b t) c h w")
    z0 = model.amortized_latent(cond, target)  # (n, d)
    frozen = Conditioning(cond.h.detach(), [s.detach() for s in cond.skips], cond.last)
    inference = infer_latent(lambda z: model.decode(frozen, z), target, z0, energy, steps=steps,
                             step_size=step_size)
    return cond, target, z0, inference


def train_step(model: VideoPredictor, video: Tensor, *, context: int, energy: Energy, steps: int, step_size: float,
               dropout: float, encoder_weight: float, generator: torch.Generator) -> tuple[Tensor, dict, Tensor]:
    """The loss of one batch `(b, t, c, H, W)`, its statistics, and the inferred z* (n, d)."""
    cond, target, z0, inference = infer_clip_latents(model, video, context=context, energy=energy, steps=steps,
                                                     step_size=step_size)
    z_star = inference.z
    keep = (torch.rand(z_star.shape[0], 1, generator=generator) >= dropout).to(z_star)
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


def learning_rate(step: int, *, lr: float, warmup: int, steps: int) -> float:
    """Linear warmup, then cosine decay to lr / 10 at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def refit_prior(model: VideoPredictor, cfg: Config, device: torch.device) -> LatentBank:
    """A fresh bank of z* inferred by the final model on unseen training clips, with its fit."""
    source = build_source(cfg.data, seed=cfg.seed, split="train", frames=cfg.context + cfg.horizon,
                          context=cfg.context)
    bank = LatentBank(cfg.latent.dim, cfg.prior.bank)
    first = cfg.steps * cfg.batch_size  # indices after the last training clip
    energy = build_energy(cfg)
    model.eval()
    for start in range(0, cfg.prior.fit_clips, cfg.batch_size):
        count = min(cfg.batch_size, cfg.prior.fit_clips - start)
        video = torch.stack([source[first + start + i] for i in range(count)]).to(device)
        *_, inference = infer_clip_latents(model, video, context=cfg.context, energy=energy,
                                           steps=cfg.latent.steps, step_size=cfg.latent.step_size)
        bank.add(inference.z)
    bank.fit()
    model.train()
    return bank


def _state(model, optimizer, bank: LatentBank, cfg: Config, step: int, generator: torch.Generator) -> dict:
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
            "config": to_dict(cfg), "prior": bank.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "dropout": generator.get_state()}}


def _crop(video: Tensor, length: int, step: int, seed: int) -> Tensor:
    """A window of `length` frames from clips that may be longer, chosen reproducibly per step."""
    spare = video.shape[1] - length
    if spare == 0:
        return video
    start = int(torch.randint(spare + 1, (1,), generator=torch.Generator().manual_seed(seed * 7919 + step)))
    return video[:, start:start + length]


def train(cfg: Config) -> Path:
    """Train as configured; returns the path of the last checkpoint."""
    out = cfg.out_dir
    ckpt_path = out / "checkpoints" / "last.pt"
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)

    model = build_model(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    predictor_params = [p for name, p in model.named_parameters() if not name.startswith("prior.")]
    bank = LatentBank(cfg.latent.dim, cfg.prior.bank)
    start = 0
    if cfg.resume:
        state = load_checkpoint(ckpt_path, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        bank = LatentBank.from_state_dict(state["prior"])
        torch.set_rng_state(state["rng"]["torch"])
        generator.set_state(state["rng"]["dropout"])
        start = int(state["step"])
        print(f"resuming {ckpt_path} at step {start}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")

    source = build_source(cfg.data, seed=cfg.seed, split="train", frames=cfg.data.frames, context=cfg.context)
    loader = train_loader(source, batch_size=cfg.batch_size, start_step=start, steps=cfg.steps,
                          workers=cfg.data.workers, pin_memory=device.type == "cuda")
    tracker = Tracker(out, config=to_dict(cfg), name=cfg.name, mode=cfg.wandb, resume=cfg.resume)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"vidpred: {n_params / 1e6:.2f}M parameters, {cfg.steps} steps of {cfg.batch_size} clips "
          f"({cfg.context} -> {cfg.horizon} frames, {cfg.data.kind} {cfg.data.size}x{cfg.data.size}) on {device}; "
          f"writing {out}")

    model.train()
    bar = tqdm(total=cfg.steps, initial=start, dynamic_ncols=True, desc="train",
               mininterval=0.5 if sys.stderr.isatty() else 30.0)  # a log file gets a line every 30 s
    sums: dict[str, float] = {}
    count, clips, wait = 0, 0, 0.0
    window_start = tick = time.perf_counter()
    step = start
    for step, video in enumerate(loader, start):
        fetched = time.perf_counter()
        wait += fetched - tick  # time the step spent waiting for its batch
        lr = learning_rate(step, lr=cfg.lr, warmup=cfg.warmup, steps=cfg.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        video = _crop(video, cfg.context + cfg.horizon, step, cfg.seed).to(device, non_blocking=True)
        energy = build_energy(cfg, step)

        loss, stats, z_star = train_step(model, video, context=cfg.context, energy=energy,
                                         steps=cfg.latent.steps, step_size=cfg.latent.step_size,
                                         dropout=cfg.latent.dropout, encoder_weight=cfg.latent.encoder_weight,
                                         generator=generator)
        if not math.isfinite(stats["loss"]):
            bar.close()
            tracker.close()
            last = f"the last good checkpoint is {ckpt_path}" if ckpt_path.exists() else "no checkpoint was saved yet"
            raise FloatingPointError(f"loss is {stats['loss']} at step {step}; stopping without saving ({last})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # The prior head fits z* on detached inputs; clip it apart so its NLL cannot shrink the
        # predictor's updates through a shared gradient norm.
        stats["grad_norm"] = torch.nn.utils.clip_grad_norm_(predictor_params, cfg.grad_clip).item()
        torch.nn.utils.clip_grad_norm_(model.prior.parameters(), cfg.grad_clip)
        optimizer.step()
        bank.add(z_star)

        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + v
        count, clips = count + 1, clips + video.shape[0]
        done = step + 1
        bar.update(1)
        if done % cfg.log_every == 0 or done == cfg.steps:
            now = time.perf_counter()
            record = {k: v / count for k, v in sums.items()}
            record.update(lr=lr, clips_per_s=clips / (now - window_start), data_wait=wait / (now - window_start))
            tracker.log(done, record)
            bar.set_postfix(E=f"{record['energy_before']:.4f}>{record['energy_after']:.4f}",
                            z_active=f"{record['latent_active']:.2f}", clips_s=f"{record['clips_per_s']:.0f}",
                            data_wait=f"{record['data_wait']:.0%}")
            sums, count, clips, wait, window_start = {}, 0, 0, 0.0, now
        if done % cfg.ckpt_every == 0 and done < cfg.steps:
            save_checkpoint(ckpt_path, _state(model, optimizer, bank, cfg, done, generator))
        tick = time.perf_counter()
    bar.close()

    bank = refit_prior(model, cfg, device)
    save_checkpoint(ckpt_path, _state(model, optimizer, bank, cfg, max(step + 1, start), generator))
    tracker.summary({"steps": cfg.steps})
    tracker.close()
    print(f"saved {ckpt_path}")
    return ckpt_path
