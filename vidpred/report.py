"""What a person looks at after an evaluation: the stdout table, per-frame curves, sample grids and
a side-by-side video (ground truth, the deterministic prediction, the best sample, sampled futures).

Borders in the video follow SVG's convention: green around real frames (the context, and the
ground truth), red around predicted ones.
"""

from __future__ import annotations

import math
from pathlib import Path

import av
import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from einops import rearrange  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from torch import Tensor  # noqa: E402
from torchvision.utils import make_grid, save_image  # noqa: E402

GROUP_LABELS = {"best_of_k": "best of K (per metric)", "best_of_k_svg": "best of K (SVG: by SSIM)",
                "mean_of_k": "mean of K", "deterministic": "deterministic (z = 0)"}
FLOOR_LABELS = {"blank": "blank frame (floor)", "copy_last": "copy of last frame (floor)"}
VIDEO_FORMATS = ("mp4", "gif", "none")
REAL, PREDICTED = (40, 200, 40), (220, 40, 40)  # border colours


def format_table(metrics: dict) -> str:
    """A short table of every group: PSNR and SSIM with their 95% intervals, MSE."""
    p = metrics["protocol"]
    lines = [f"{p['context']} -> {p['horizon']} frames, K = {p['samples']}, {p['clips']} clips, "
             f"prior {p['prior']}, data {p['data']['kind']} (seed {p['seed']})",
             f"{'':28}{'PSNR':>16}{'SSIM':>20}{'MSE':>12}"]
    rows = [(GROUP_LABELS[g], metrics[g]) for g in GROUP_LABELS]
    rows += [(FLOOR_LABELS[g], metrics["floors"][g]) for g in FLOOR_LABELS]
    for label, m in rows:
        lines.append(f"{label:28}{m['psnr']:9.2f} ± {_num(m['psnr_ci95'], 4, 2)}"
                     f"{m['ssim']:12.4f} ± {_num(m['ssim_ci95'], 6, 4)}{m['mse']:12.5f}")
    cov = metrics["coverage"]
    cov_text = "n/a (the data cannot list its futures)" if cov is None else \
        f"{cov:.3f} ± {_num(metrics['coverage_ci95'], 5, 3)}"
    lines.append(f"diversity {metrics['diversity']:.4f} ± {_num(metrics['diversity_ci95'], 6, 4)}   "
                 f"coverage {cov_text}")
    return "\n".join(lines)


def _num(value: float | None, width: int, digits: int) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:{width}.{digits}f}"


def save_per_frame_plot(path: Path, metrics: dict) -> None:
    """PSNR and SSIM against the predicted frame's index, one line per group, shaded 95% bands;
    the floors as dashed grey lines."""
    p = metrics["protocol"]
    frames = np.arange(1, p["horizon"] + 1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), constrained_layout=True)
    for ax, name, label in zip(axes, ("psnr", "ssim"), ("PSNR (dB)", "SSIM")):
        for g, text in GROUP_LABELS.items():
            mean = np.asarray(metrics[g][f"{name}_per_frame"])
            half = np.asarray(metrics[g][f"{name}_per_frame_ci95"], dtype=float)  # None (1 clip) -> nan
            (line,) = ax.plot(frames, mean, label=text, linewidth=1.6)
            ax.fill_between(frames, mean - half, mean + half, color=line.get_color(), alpha=0.2, linewidth=0)
        for g, style in (("blank", "--"), ("copy_last", ":")):
            ax.plot(frames, metrics["floors"][g][f"{name}_per_frame"], style, color="grey", label=FLOOR_LABELS[g])
        ax.set_xlabel(f"predicted frame (after {p['context']} context frames)")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle(f"{p['data']['kind']}, {p['context']} -> {p['horizon']}, K = {p['samples']}, "
                 f"{p['clips']} clips, prior {p['prior']} (bands: 95% intervals over clips)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _columns(truth: Tensor, det: Tensor, best: Tensor, samples: Tensor) -> tuple[list[str], Tensor]:
    """Labels and futures of each column: (n, cols, T, c, H, W)."""
    labels = ["truth", "z = 0", "best (SSIM)"] + [f"sample {k + 1}" for k in range(samples.shape[1])]
    return labels, torch.cat([truth[:, None], det[:, None], best[:, None], samples], dim=1)


def save_samples_png(path: Path, context: Tensor, truth: Tensor, det: Tensor, best: Tensor,
                     samples: Tensor) -> None:
    """One block per clip, one row per column of the video (truth, z = 0, best by SSIM, samples);
    each row shows the context frames followed by the predicted ones."""
    _, futures = _columns(truth, det, best, samples)  # (n, rows, T, c, H, W)
    rows = torch.cat([context[:, None].expand(-1, futures.shape[1], -1, -1, -1, -1), futures], dim=2)
    grid = make_grid(rearrange(rows, "n r t c h w -> (n r t) c h w").float().cpu(), nrow=rows.shape[2],
                     padding=1, pad_value=0.5)
    save_image(grid, path)


def video_frames(context: Tensor, truth: Tensor, det: Tensor, best: Tensor, samples: Tensor,
                 *, cell: int = 96) -> list[np.ndarray]:
    """RGB uint8 frames (H, W, 3), one per time step: a row per clip, a column per future; the
    context plays first in every column. Pixels are enlarged to about `cell` pixels per frame."""
    labels, futures = _columns(truth, det, best, samples)
    n, cols, horizon = futures.shape[:3]
    c0 = context.shape[1]
    size = context.shape[-1]
    scale = max(1, math.ceil(cell / size))
    side, border, gap, header = size * scale, 3, 4, 28
    width = cols * (side + 2 * border + gap) + gap
    height = header + n * (side + 2 * border + gap) + gap
    width, height = width + width % 2, height + height % 2  # yuv420p needs even sides
    font = ImageFont.load_default()
    frames = []
    for t in range(c0 + horizon):
        canvas = Image.new("RGB", (width, height), (255, 255, 255))
        draw = ImageDraw.Draw(canvas)
        phase = f"context {t + 1}/{c0}" if t < c0 else f"predicted {t - c0 + 1}/{horizon}"
        draw.text((gap, 2), f"frame {t + 1}: {phase}", fill=(0, 0, 0), font=font)
        for j, label in enumerate(labels):
            draw.text((gap + j * (side + 2 * border + gap), 15), label, fill=(0, 0, 0), font=font)
        for i in range(n):
            for j in range(cols):
                img = context[i, t] if t < c0 else futures[i, j, t - c0]
                real = t < c0 or j == 0
                x0 = gap + j * (side + 2 * border + gap)
                y0 = header + gap + i * (side + 2 * border + gap)
                draw.rectangle([x0, y0, x0 + side + 2 * border - 1, y0 + side + 2 * border - 1],
                               fill=REAL if real else PREDICTED)
                canvas.paste(_to_image(img, scale), (x0 + border, y0 + border))
        frames.append(np.asarray(canvas))
    return frames


def _to_image(frame: Tensor, scale: int) -> Image.Image:
    """(c, H, W) in [0, 1] -> an RGB PIL image enlarged `scale` times (nearest neighbour)."""
    pixels = (frame.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    pixels = pixels.expand(3, -1, -1) if pixels.shape[0] == 1 else pixels
    pixels = pixels.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    return Image.fromarray(rearrange(pixels, "c h w -> h w c").numpy())


def save_video(path: Path, frames: list[np.ndarray], *, fps: int = 4) -> None:
    """RGB frames to `path` with PyAV: H.264 (mpeg4 where libx264 is missing) for .mp4, GIF for .gif."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        if path.suffix == ".gif":
            stream, pix_fmt = container.add_stream("gif", rate=fps), "rgb8"
        else:
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            stream, pix_fmt = container.add_stream(codec, rate=fps), "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": "18"}  # near-lossless: the frames are small and sharp
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for image in frames:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format=pix_fmt)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder's delayed frames
            container.mux(packet)
