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
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from .metrics import FRAME_METRICS, best_of_k, pairwise_diversity
from .model import VideoPredictor
from .prior import LatentBank
from .sampling import deterministic_future, sample_futures

SAMPLES = 8  # K futures per clip in a preview
SHOWN = 4  # clips drawn in the grid and the video
VIDEO_SAMPLES = 3  # sampled futures beside truth, deterministic and best-of-K in the video


def write_video(path: Path, frames: Tensor, *, fps: int = 4) -> Path:
    """Frames (t, c, H, W) in [0, 1] (c = 1 or 3) -> an H.264 MP4 at `path` (padded to even sides)."""
    import av

    pixels = (frames.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    h, w = pixels.shape[-2:]
    pixels = torch.nn.functional.pad(pixels, (0, w % 2, 0, h % 2))  # yuv420p needs even sides
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
        stream.options = {"crf": "12"}  # small frames: keep edges crisp
        for frame in pixels.permute(0, 2, 3, 1).numpy():  # (H, W, 3) per frame
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush
    return path


def video_tiles(context: Tensor, columns: list[Tensor], *, scale: int) -> Tensor:
    """Per time step a grid with one row per clip and one column per entry of `columns`
    (each (n, T, c, H, W)); context frames (n, C0, c, H, W) lead every column. -> (C0 + T, c, h, w)."""
    rows = torch.stack([torch.cat([context, col], dim=1) for col in columns], dim=1)  # (n, k, t, c, H, W)
    rows = F.pad(rows.float().cpu(), (1, 1, 1, 1), value=0.5)  # a grey line between tiles
    tiles = rearrange(rows, "n k t c h w -> t c (n h) (k w)")
    return tiles.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)


@torch.no_grad()
def preview(model: VideoPredictor, clips: Tensor, *, context: int, prior: str, bank: LatentBank | None, seed: int,
            folder: Path, step: int) -> tuple[dict[str, float], Path, Path]:
    """Sampled futures of `clips` (n, t, c, H, W): metrics, and the grid and video files written in `folder`."""
    from .evaluation import save_samples_png  # evaluation imports training, which imports this module

    was_training = model.training
    model.eval()
    ctx, truth = clips[:, :context], clips[:, context:]
    futures = sample_futures(model, ctx, samples=SAMPLES, horizon=truth.shape[1], prior=prior, bank=bank, seed=seed)
    det = deterministic_future(model, ctx, horizon=truth.shape[1])
    model.train(was_training)

    metrics = {"eval/diversity": pairwise_diversity(futures).mean().item()}
    scored = ("psnr", "ssim") if min(clips.shape[-2:]) >= 11 else ("psnr",)  # SSIM's window needs 11 pixels
    scores = {}
    for name in scored:
        score = FRAME_METRICS[name][0]
        scores[name] = score(futures, truth[:, None].expand_as(futures))  # (n, K, T)
        metrics[f"eval/best_of_k_{name}"] = best_of_k(scores[name], True).mean().item()
        metrics[f"eval/deterministic_{name}"] = score(det, truth).mean().item()

    folder.mkdir(parents=True, exist_ok=True)
    png, mp4 = folder / f"samples_{step:07d}.png", folder / f"samples_{step:07d}.mp4"
    best = scores[scored[-1]].mean(dim=2).argmax(dim=1)  # (n,) the sample shown as best of K
    n = min(SHOWN, clips.shape[0])
    save_samples_png(png, ctx[:n], truth[:n], det[:n], futures[:n], best[:n])
    columns = [truth[:n], det[:n], futures[torch.arange(n), best[:n]]] + \
              [futures[:n, k] for k in range(min(VIDEO_SAMPLES, SAMPLES))]
    write_video(mp4, video_tiles(ctx[:n], columns, scale=max(1, 64 // clips.shape[-1])))
    return metrics, png, mp4
