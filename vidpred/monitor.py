"""Previews of sampled futures while a model trains: what a researcher looks at in wandb.

For a few held-out clips: K autoregressive rollouts from the prior and the deterministic (z = 0)
one, drawn as a grid (PNG, the layout of evaluate.py's samples.png) and as a short video (MP4
written with PyAV: truth, deterministic, best-of-K and sampled futures side by side), with the
best-of-K and deterministic PSNR / SSIM and the diversity of the samples — the evaluation
protocol of evaluate.py at preview scale.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from .metrics import FRAME_METRICS, SSIM_WINDOW, best_of_k, pairwise_diversity, pick_best
from .objectives import Objective
from .prior import LatentBank
from .report import save_samples_png, save_video, video_frames
from .sampling import sample_futures

SAMPLES = 8  # K futures per clip in a preview
SHOWN = 4  # clips drawn in the grid and the video
VIDEO_SAMPLES = 3  # sampled futures beside truth, deterministic and best-of-K in the grid and the video


@torch.no_grad()
def preview(objective: Objective, clips: Tensor, *, context: int, prior: str, bank: LatentBank | None, seed: int,
            folder: Path, step: int) -> tuple[dict[str, float], Path, Path]:
    """Sampled futures of `clips` (n, t, c, H, W): metrics, and the grid and video files written in `folder`."""
    model = objective.model
    was_training = model.training
    model.eval()
    ctx, truth = clips[:, :context], clips[:, context:]
    futures = sample_futures(objective, ctx, samples=SAMPLES, horizon=truth.shape[1], prior=prior, bank=bank, seed=seed)
    det = objective.deterministic(ctx, horizon=truth.shape[1])
    model.train(was_training)

    metrics = {"eval/diversity": pairwise_diversity(futures).mean().item()}
    scored = ("psnr", "ssim") if min(clips.shape[-2:]) >= SSIM_WINDOW else ("psnr",)  # SSIM needs a whole window
    scores = {}
    for name in scored:
        score, higher_is_better = FRAME_METRICS[name]
        scores[name] = score(futures, truth[:, None].expand_as(futures))  # (n, K, T)
        metrics[f"eval/best_of_k_{name}"] = best_of_k(scores[name], higher_is_better).mean().item()
        metrics[f"eval/deterministic_{name}"] = score(det, truth).mean().item()

    folder.mkdir(parents=True, exist_ok=True)
    png, mp4 = folder / f"samples_{step:07d}.png", folder / f"samples_{step:07d}.mp4"
    best = pick_best(scores[scored[-1]], FRAME_METRICS[scored[-1]][1])  # (n,) the sample shown as best of K
    n = min(SHOWN, clips.shape[0])
    pictures = (ctx[:n], truth[:n], det[:n], futures[torch.arange(n), best[:n]], futures[:n, :VIDEO_SAMPLES])
    save_samples_png(png, *pictures)
    save_video(mp4, video_frames(*pictures))
    return metrics, png, mp4
