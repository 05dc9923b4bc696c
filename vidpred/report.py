"""What a person looks at after an evaluation: the stdout table, per-frame curves, sample grids and
a side-by-side video (ground truth, the deterministic prediction, the best sample, sampled futures).

Borders in the video follow SVG's convention: green around real frames (the context, and the
ground truth), red around predicted ones.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from einops import rearrange  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from torch import Tensor  # noqa: E402

from .media import write_video  # noqa: E402

GROUP_LABELS = {"best_of_k": "best of K (per metric)", "best_of_k_svg": "best of K (SVG: by SSIM)",
                "mean_of_k": "mean of K", "deterministic": "deterministic (z = 0)"}
FLOOR_LABELS = {"blank": "blank frame (floor)", "copy_last": "copy of last frame (floor)",
                "constant_motion": "constant motion (floor)"}
VIDEO_FORMATS = ("mp4", "gif", "none")
REAL, PREDICTED = (40, 200, 40), (220, 40, 40)  # border colours


def format_table(metrics: dict) -> str:
    """A short table of every group: PSNR and SSIM with their 95% intervals, MSE, LPIPS (lower is better)
    when it was measured; then diversity, coverage and FVD."""
    p = metrics["protocol"]
    lpips = "lpips" in metrics["best_of_k"]
    lines = [f"{p['context']} -> {p['horizon']} frames, K = {p['samples']}, {p['clips']} clips, "
             f"prior {p['prior']}, data {p['data']['kind']} (seed {p['seed']})",
             f"{'':28}{'PSNR':>16}{'SSIM':>20}{'MSE':>12}" + (f"{'LPIPS':>20}" if lpips else "")]
    for label, m in table_rows(metrics):
        lines.append(f"{label:28}{m['psnr']:9.2f} ± {_num(m['psnr_ci95'], 4, 2)}"
                     f"{m['ssim']:12.4f} ± {_num(m['ssim_ci95'], 6, 4)}{m['mse']:12.5f}"
                     + (f"{m['lpips']:12.4f} ± {_num(m['lpips_ci95'], 6, 4)}" if lpips else ""))
    cov = metrics["coverage"]
    cov_text = "n/a (the data cannot list its futures)" if cov is None else \
        f"{cov:.3f} ± {_num(metrics['coverage_ci95'], 5, 3)}"
    lines.append(f"diversity {metrics['diversity']:.4f} ± {_num(metrics['diversity_ci95'], 6, 4)}   "
                 f"coverage {cov_text}" + (f"   FVD {metrics['fvd']:.2f}" if "fvd" in metrics else ""))
    return "\n".join(lines)


def table_rows(metrics: dict) -> list[tuple[str, dict]]:
    """(label, group) for every row of the table: the groups of K samples, then the floors."""
    return [(GROUP_LABELS[g], metrics[g]) for g in GROUP_LABELS] + \
        [(FLOOR_LABELS[g], metrics["floors"][g]) for g in FLOOR_LABELS if g in metrics["floors"]]  # (older files: two)


def _num(value: float | None, width: int, digits: int) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:{width}.{digits}f}"


def save_per_frame_plot(path: Path, metrics: dict) -> None:
    """PSNR and SSIM (and LPIPS when measured) against the predicted frame's index, one line per
    group, shaded 95% bands; the floors as dashed grey lines; and mode coverage per frame where the
    data lists its futures."""
    p = metrics["protocol"]
    frames = np.arange(1, p["horizon"] + 1)
    panels = [("psnr", "PSNR (dB)"), ("ssim", "SSIM")]
    panels += [("lpips", "LPIPS (lower is better)")] if "lpips" in metrics["best_of_k"] else []
    covered = metrics.get("coverage_per_frame")
    count = len(panels) + (1 if covered else 0)
    fig, axes = plt.subplots(1, count, figsize=(5.5 * count, 4.6), constrained_layout=True)
    if covered:
        axes[-1].plot(frames, covered, color="black", linewidth=1.6)
        axes[-1].set(xlabel="predicted frame", ylabel="coverage (true futures followed so far)", ylim=(-0.02, 1.02))
        axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[-1].grid(alpha=0.3)
    for ax, (name, label) in zip(axes, panels):
        for g, text in GROUP_LABELS.items():
            mean = np.asarray(metrics[g][f"{name}_per_frame"])
            half = np.asarray(metrics[g][f"{name}_per_frame_ci95"], dtype=float)  # None (1 clip) -> nan
            (line,) = ax.plot(frames, mean, label=text, linewidth=1.6)
            ax.fill_between(frames, mean - half, mean + half, color=line.get_color(), alpha=0.2, linewidth=0)
        for g, style in zip(FLOOR_LABELS, ("--", ":", "-.")):
            if g in metrics["floors"]:  # (metrics.json files before 2026-12-06 have two floors)
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


class _Sheet:
    """A white RGB canvas laid out in cells of enlarged frames, each framed by a coloured border."""

    border, gap = 3, 4

    def __init__(self, *, rows: int, cols: int, size: int, cell: int, left: int = 0, top: int = 0):
        self.scale = max(1, math.ceil(cell / size))
        self.pitch = size * self.scale + 2 * self.border + self.gap  # distance between cells
        self.left, self.top = left + self.gap, top + self.gap
        width, height = self.left + cols * self.pitch, self.top + rows * self.pitch
        self.image = Image.new("RGB", (width + width % 2, height + height % 2), (255, 255, 255))  # yuv420p: even
        self.draw = ImageDraw.Draw(self.image)
        self.font = ImageFont.load_default()

    def cell(self, row: int, col: int, frame: Tensor, *, real: bool) -> None:
        x0, y0 = self.left + col * self.pitch, self.top + row * self.pitch
        side = self.pitch - self.gap
        self.draw.rectangle([x0, y0, x0 + side - 1, y0 + side - 1], fill=REAL if real else PREDICTED)
        self.image.paste(_to_image(frame, self.scale), (x0 + self.border, y0 + self.border))

    def text(self, x: int, y: int, text: str) -> None:
        self.draw.text((x, y), text, fill=(0, 0, 0), font=self.font)


def save_samples_png(path: Path, context: Tensor, truth: Tensor, det: Tensor, best: Tensor,
                     samples: Tensor, *, cell: int = 48) -> None:
    """One block of rows per clip — truth, z = 0, the best sample by SSIM, sampled futures — each
    row the context frames (green) followed by the predicted ones (red; the truth stays green)."""
    labels, futures = _columns(truth, det, best, samples)  # (n, rows, T, c, H, W)
    n, rows, horizon = futures.shape[:3]
    c0 = context.shape[1]
    sheet = _Sheet(rows=n * (rows + 1) - 1, cols=c0 + horizon, size=context.shape[-1], cell=cell, left=80, top=14)
    sheet.text(sheet.left, 2, f"{c0} context frames, then {horizon} predicted")
    for i in range(n):
        for r, label in enumerate(labels):
            row = i * (rows + 1) + r  # an empty row between clips
            sheet.text(4, sheet.top + row * sheet.pitch + sheet.pitch // 2 - 6, label)
            for t in range(c0 + horizon):
                real = t < c0 or r == 0
                sheet.cell(row, t, context[i, t] if t < c0 else futures[i, r, t - c0], real=real)
    sheet.image.save(path)


def video_frames(context: Tensor, truth: Tensor, det: Tensor, best: Tensor, samples: Tensor,
                 *, cell: int = 96) -> list[np.ndarray]:
    """RGB uint8 frames (H, W, 3), one per time step: a row per clip, a column per future; the
    context plays first in every column. Pixels are enlarged to about `cell` pixels per frame."""
    labels, futures = _columns(truth, det, best, samples)
    n, cols, horizon = futures.shape[:3]
    c0 = context.shape[1]
    frames = []
    for t in range(c0 + horizon):
        sheet = _Sheet(rows=n, cols=cols, size=context.shape[-1], cell=cell, top=26)
        phase = f"context {t + 1}/{c0}" if t < c0 else f"predicted {t - c0 + 1}/{horizon}"
        sheet.text(sheet.gap, 2, f"frame {t + 1}: {phase}")
        for j, label in enumerate(labels):
            sheet.text(sheet.left + j * sheet.pitch, 14, label)
        for i in range(n):
            for j in range(cols):
                sheet.cell(i, j, context[i, t] if t < c0 else futures[i, j, t - c0], real=t < c0 or j == 0)
        frames.append(np.asarray(sheet.image))
    return frames


def _to_image(frame: Tensor, scale: int) -> Image.Image:
    """(c, H, W) in [0, 1] -> an RGB PIL image enlarged `scale` times (nearest neighbour)."""
    pixels = (frame.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    pixels = pixels.expand(3, -1, -1) if pixels.shape[0] == 1 else pixels
    pixels = pixels.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    return Image.fromarray(rearrange(pixels, "c h w -> h w c").numpy())


def save_video(path: Path, frames: list[np.ndarray], *, fps: int = 4) -> None:
    """RGB uint8 frames (H, W, 3) to `path`: MP4 for .mp4, GIF for .gif (see `media.write_video`)."""
    write_video(path, np.stack(frames), fps=fps)
