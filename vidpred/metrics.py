"""Frame metrics and the best-of-K protocol, batched on whatever device the frames are on.

- PSNR with data_range 1: 10·log10(1 / MSE). Identical frames would give +inf; MSE is floored at
  1e-10, so PSNR is capped at 100 dB (finite means, no NaN).
- SSIM as scikit-image's `structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1)`: an 11-tap Gaussian window (truncate 3.5), averaged
  over the region where the window fits inside the frame, then over channels.
- best of K (SRVP/SAVP): per clip, the sample whose time-averaged score is best, per metric.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

PSNR_CAP_DB = 100.0  # PSNR of frames closer than MSE = 1e-10 (identical frames included)
SSIM_SIGMA, SSIM_TRUNCATE = 1.5, 3.5
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2  # (K1·L)², (K2·L)² with data range L = 1


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Per-pixel mean squared error per frame: (..., c, H, W) -> (...)."""
    return (pred - target).pow(2).mean(dim=(-3, -2, -1))


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """PSNR in dB per frame, data range 1: (..., c, H, W) -> (...); capped at PSNR_CAP_DB."""
    return 10.0 * torch.log10(1.0 / mse(pred, target).clamp(min=10 ** (-PSNR_CAP_DB / 10)))


def _gaussian_taps(device, dtype) -> Tensor:
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # 5, as scipy.ndimage.gaussian_filter: 11 taps
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    taps = torch.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return taps / taps.sum()


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """Mean SSIM per frame: (..., c, H, W) -> (...). Frames must be at least 11 x 11."""
    lead, (c, h, w) = pred.shape[:-3], pred.shape[-3:]
    taps = _gaussian_taps(pred.device, torch.float64)
    if h < taps.numel() or w < taps.numel():
        raise ValueError(f"SSIM needs frames of at least {taps.numel()}x{taps.numel()} pixels, got {h}x{w}")
    x = pred.reshape(-1, 1, h, w).double()
    y = target.reshape(-1, 1, h, w).double()
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (n, 5, H, W): filter all five maps at once
    k = taps.numel()
    filt = F.conv2d(stack, taps.view(1, 1, k, 1).expand(5, 1, k, 1), groups=5)  # valid: window inside
    filt = F.conv2d(filt, taps.view(1, 1, 1, k).expand(5, 1, 1, k), groups=5)
    ux, uy, uxx, uyy, uxy = filt.unbind(dim=1)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    s = ((2 * ux * uy + SSIM_C1) * (2 * vxy + SSIM_C2)) / ((ux**2 + uy**2 + SSIM_C1) * (vx + vy + SSIM_C2))
    return s.mean(dim=(-2, -1)).view(*lead, c).mean(dim=-1).to(pred.dtype)


FRAME_METRICS = {"psnr": (psnr, True), "ssim": (ssim, True), "mse": (mse, False)}  # name: (fn, higher is better)


def frame_scores(futures: Tensor, truth: Tensor) -> dict[str, Tensor]:
    """Every metric for K futures of each clip: futures (n, K, T, c, H, W), truth (n, T, c, H, W)
    -> {metric: (n, K, T)}."""
    truth = truth.unsqueeze(1).expand_as(futures)
    return {name: fn(futures, truth) for name, (fn, _) in FRAME_METRICS.items()}


def best_of_k(scores: Tensor, higher_is_better: bool) -> Tensor:
    """(n, K, T) -> (n, T): per clip, the frames of the sample with the best time-averaged score."""
    mean = scores.mean(dim=2)
    pick = mean.argmax(dim=1) if higher_is_better else mean.argmin(dim=1)
    return scores[torch.arange(scores.shape[0]), pick]


def mean_ci95(values: Tensor) -> tuple[float, float]:
    """Mean over clips and the half-width of its 95% interval (1.96 standard errors)."""
    values = values.double()
    n = values.numel()
    if n < 2:
        return values.mean().item(), float("nan")
    return values.mean().item(), 1.96 * values.std(unbiased=True).item() / math.sqrt(n)


def pairwise_diversity(futures: Tensor) -> Tensor:
    """Mean pairwise per-pixel L1 distance between the K futures of each clip: (n, K, ...) -> (n,)."""
    n, k = futures.shape[:2]
    if k < 2:
        return futures.new_zeros(n)
    flat = futures.reshape(n, k, -1).float()
    dist = torch.cdist(flat, flat, p=1) / flat.shape[-1]  # (n, K, K)
    return dist.sum(dim=(1, 2)) / (k * (k - 1))


def coverage(futures: Tensor, continuations: list[Tensor], tolerance: float = 0.1) -> Tensor:
    """Share of each clip's true continuations that some sample matches: (n,) in [0, 1].

    futures (n, K, T, ...); continuations[i] (m_i, T, ...) lists every true future of clip i. A
    sample matches a continuation when its MSE to it is below `tolerance` times the MSE between
    that continuation and its nearest other one — so the blurry average of two branches (MSE of
    a quarter of that distance) never counts as either. A clip with a single true future uses the
    MSE between that future and a blank clip instead.
    """
    out = []
    for sample, truths in zip(futures, continuations):
        m = truths.shape[0]
        t_flat = truths.reshape(m, -1).float()
        s_flat = sample.reshape(sample.shape[0], -1).float()
        d = torch.cdist(s_flat, t_flat).pow(2) / t_flat.shape[1]  # (K, m) per-pixel MSE
        if m == 1:  # no other future to measure against: use the distance to a blank clip
            threshold = tolerance * t_flat.pow(2).mean(dim=1)
        else:
            between = torch.cdist(t_flat, t_flat).pow(2) / t_flat.shape[1]
            between.fill_diagonal_(float("inf"))
            threshold = tolerance * between.min(dim=1).values  # (m,)
        out.append((d < threshold).any(dim=0).float().mean())
    return torch.stack(out)
