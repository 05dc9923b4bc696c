"""Frame metrics and the best-of-K protocol, batched on whatever device the frames are on.

- PSNR with data_range 1: 10·log10(1 / MSE). Identical frames would give +inf; MSE is floored at
  1e-10, so PSNR is capped at 100 dB (finite means, no NaN).
- SSIM as scikit-image's `structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1)`: an 11-tap Gaussian window (truncate 3.5), averaged
  over the region where the window fits inside the frame, then over channels.
- best of K (SRVP/SAVP): per clip, the sample whose time-averaged score is best, per metric;
  SVG's variant (Denton & Fergus 2018): one sample per clip, chosen by time-averaged SSIM, every
  metric read from it.
- LPIPS (optional, `frame_metrics(lpips=...)`): a learned perceptual distance per frame, lower is
  better; the network and its weights live in `perceptual.py`.
- diversity: mean pairwise per-pixel L1 distance between the K futures of a clip.
- coverage, per predicted frame t: the share of a clip's distinct true futures (as far as frame t)
  that some sample has followed through frame t, each frame within `tolerance` of the true one
  relative to how far apart the futures are there; its mean over the frames sums it up.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

PSNR_CAP_DB = 100.0  # PSNR of frames closer than MSE = 1e-10 (identical frames included)
SSIM_SIGMA, SSIM_TRUNCATE = 1.5, 3.5
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2  # (K1·L)², (K2·L)² with data range L = 1
SSIM_WINDOW = 2 * int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5) + 1  # 11, as scipy.ndimage.gaussian_filter
COVERAGE_TOLERANCE = 0.2  # the average of two branches is at 0.25 of their distance from each: never counted
SCORE_CHUNK_PIXELS = 2**20  # frames scored at once hold at most this many pixels (bounds memory)


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Per-pixel mean squared error per frame: (..., c, H, W) -> (...)."""
    return (pred - target).pow(2).mean(dim=(-3, -2, -1))


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """PSNR in dB per frame, data range 1: (..., c, H, W) -> (...); capped at PSNR_CAP_DB."""
    return 10.0 * torch.log10(1.0 / mse(pred, target).clamp(min=10 ** (-PSNR_CAP_DB / 10)))


def _gaussian_band(n: int, device) -> Tensor:
    """(n - 10, n): row i holds the 11 Gaussian taps at columns i .. i + 10, so `band @ x` filters
    x along its first axis over the 'valid' region (the window inside the frame)."""
    radius = SSIM_WINDOW // 2
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    taps = torch.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    taps = (taps / taps.sum()).float().expand(n - 2 * radius, -1)
    columns = torch.arange(n - 2 * radius, device=device)[:, None] + torch.arange(SSIM_WINDOW, device=device)
    return torch.zeros(n - 2 * radius, n, device=device).scatter_(1, columns, taps)


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """Mean SSIM per frame: (..., c, H, W) -> (...). Frames must be at least 11 x 11.

    The separable Gaussian filter is two matrix products with banded matrices (measured on a CPU:
    5-6x faster than a grouped convolution, and float32 another 2-3x). It runs in float32 on
    frames shifted by -0.5: variances are shift-invariant, and centring halves the values whose
    squares cancel in E[x²] - E[x]². Over 200 nearly flat random pairs, the hardest case, it stayed
    within 1.1e-5 of scikit-image's float64 (4.5e-5 without the shift); the tests hold it to 1e-4.
    """
    lead, (c, h, w) = pred.shape[:-3], pred.shape[-3:]
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {h}x{w}")
    x = pred.reshape(-1, h, w).float() - 0.5
    y = target.reshape(-1, h, w).float() - 0.5
    rows, cols = _gaussian_band(h, pred.device), _gaussian_band(w, pred.device)
    moments = rows @ torch.stack([x, y, x * x, y * y, x * y]) @ cols.T  # (5, n, H - 10, W - 10)
    ux, uy, uxx, uyy, uxy = moments
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    ux, uy = ux + 0.5, uy + 0.5  # back to the means of the unshifted frames
    s = ((2 * ux * uy + SSIM_C1) * (2 * vxy + SSIM_C2)) / ((ux**2 + uy**2 + SSIM_C1) * (vx + vy + SSIM_C2))
    return s.mean(dim=(-2, -1)).view(*lead, c).mean(dim=-1).to(pred.dtype)


FRAME_METRICS = {"psnr": (psnr, True), "ssim": (ssim, True), "mse": (mse, False)}  # name: (fn, higher is better)


def frame_metrics(*, lpips=None) -> dict:
    """The metrics an evaluation scores: FRAME_METRICS, and LPIPS (lower is better) when given a network
    (`vidpred.perceptual.load_lpips`: its weights come from the user, so it cannot be a fixed entry)."""
    return FRAME_METRICS if lpips is None else {**FRAME_METRICS, "lpips": (lpips, False)}


def frame_scores(futures: Tensor, truth: Tensor, metrics: dict | None = None) -> dict[str, Tensor]:
    """Every metric (FRAME_METRICS unless `metrics` is given) for K futures of each clip: futures
    (n, K, T, c, H, W), truth (n, T, c, H, W) -> {metric: (n, K, T)}. Scored a few samples of one
    clip at a time, so the temporaries (and the truth, broadcast to the samples) stay within
    SCORE_CHUNK_PIXELS pixels."""
    metrics = FRAME_METRICS if metrics is None else metrics
    n, k, t = futures.shape[:3]
    step = max(1, SCORE_CHUNK_PIXELS // truth[0].numel())  # samples per slice
    out = {name: futures.new_empty(n, k, t) for name in metrics}
    for i in range(n):
        for first in range(0, k, step):
            pred = futures[i, first:first + step]  # (k', T, c, H, W)
            target = truth[i].expand_as(pred)
            for name, (fn, _) in metrics.items():
                out[name][i, first:first + step] = fn(pred, target)
    return out


def pick_best(scores: Tensor, higher_is_better: bool) -> Tensor:
    """(n, K, T) -> (n,): per clip, the index of the sample with the best time-averaged score."""
    mean = scores.mean(dim=2)
    return mean.argmax(dim=1) if higher_is_better else mean.argmin(dim=1)


def take(scores: Tensor, pick: Tensor) -> Tensor:
    """(n, K, T) scores, (n,) sample indices -> (n, T), the frames of each clip's picked sample."""
    return scores[torch.arange(scores.shape[0], device=scores.device), pick]


def best_of_k(scores: Tensor, higher_is_better: bool) -> Tensor:
    """(n, K, T) -> (n, T): per clip, the frames of the sample with the best time-averaged score."""
    return take(scores, pick_best(scores, higher_is_better))


def mean_ci95(values: Tensor) -> tuple[float, float]:
    """Mean over clips (dim 0) and the half-width of its 95% interval (1.96 standard errors);
    (n,) -> floats, (n, T) -> per-column lists. The half-width is NaN with fewer than 2 clips."""
    values = values.double()
    n = values.shape[0]
    mean = values.mean(dim=0)
    half = 1.96 * values.std(dim=0, unbiased=True) / math.sqrt(n) if n > 1 else torch.full_like(mean, math.nan)
    return mean.tolist(), half.tolist()


def pairwise_diversity(futures: Tensor) -> Tensor:
    """Mean pairwise per-pixel L1 distance between the K futures of each clip: (n, K, ...) -> (n,).

    Without visiting the K(K-1)/2 pairs: with a pixel's K values sorted, a_(0) <= ... <= a_(K-1),
    the sum over pairs of |a_i - a_j| is sum_i (2i - K + 1) a_(i). One sort per clip is O(K log K)
    per pixel instead of O(K²). The weighted sum runs in float64, where every product of a float32
    pixel and a small integer is exact, so K identical futures give exactly 0.
    """
    n, k = futures.shape[:2]
    if k < 2:
        return futures.new_zeros(n)
    weights = (2 * torch.arange(k, device=futures.device) - k + 1).double()  # (K,)
    out = []
    for clip in futures.reshape(n, k, -1).float():  # one clip at a time: a (pixels, K) sorted copy
        ranked = clip.T.contiguous().sort(dim=1).values  # rows of K values sort faster than columns
        pair_sums = ranked.double() @ weights  # (pixels,) sum of |a_i - a_j| over pairs
        out.append(pair_sums.mean() / (k * (k - 1) / 2))
    return torch.stack(out).to(futures.dtype)


def _mse_matrix(a: Tensor, b: Tensor) -> Tensor:
    """(p, D), (q, D) -> (p, q): the per-pixel MSE between every row of `a` and every row of `b`."""
    a, b = a.double(), b.double()
    sq = a.pow(2).sum(dim=1, keepdim=True) + b.pow(2).sum(dim=1) - 2 * a @ b.T
    return sq.clamp(min=0.0) / a.shape[1]


def coverage_per_frame(futures: Tensor, continuations: list[Tensor], tolerance: float = COVERAGE_TOLERANCE) -> Tensor:
    """Per clip and predicted frame, the share of the true futures some sample has followed so far: (n, T) in [0, 1].

    futures (n, K, T, ...); continuations[i] (m_i, T, ...) lists every true future of clip i. A
    sample is *on* continuation j at frame s when its MSE to j's frame s is below `tolerance` times
    the MSE between that frame and the nearest other true frame at s (the nearest distinct one; a
    blank frame where all futures agree). It has *followed* j through frame t when it was on j at
    every frame 1..t. Coverage at t is the share of the futures that are distinct up to frame t
    (continuations identical so far count once) that some sample has followed through t.

    So an oracle scores 1 at every frame, a model that always takes one of k branches 1/k once they
    part, and the blurry average of two branches 0 where they differ (its MSE to each is a quarter
    of theirs, above the tolerance of 0.2); a sample that switches branches stops counting.
    """
    out = []
    for sample, truths in zip(futures, continuations):
        m, horizon, k = truths.shape[0], truths.shape[1], sample.shape[0]
        group = torch.zeros(m, dtype=torch.long, device=truths.device)  # continuations equal up to frame t
        followed = torch.ones(k, m, dtype=torch.bool, device=truths.device)
        curve = []
        for t in range(horizon):
            true_t = truths[:, t].reshape(m, -1)
            distinct, frame_of = torch.unique(true_t, dim=0, return_inverse=True)
            if len(distinct) > 1:
                between = _mse_matrix(distinct, distinct)
                between.fill_diagonal_(float("inf"))
                reference = between.min(dim=1).values[frame_of]  # (m,)
            else:  # every future shows this frame: measure against a blank frame
                reference = true_t.double().pow(2).mean(dim=1)
            d = _mse_matrix(sample[:, t].reshape(k, -1), true_t)  # (K, m)
            followed &= (d < tolerance * reference) | (d == 0)
            group = torch.unique(torch.stack([group, frame_of], dim=1), dim=0, return_inverse=True)[1]
            covered = followed.any(dim=0).double()  # (m,): equal within a group
            per_group = torch.zeros(int(group.max()) + 1, dtype=torch.float64, device=truths.device)
            curve.append(per_group.scatter_reduce(0, group, covered, "amax").mean())
        out.append(torch.stack(curve))
    return torch.stack(out).float()


def coverage(futures: Tensor, continuations: list[Tensor], tolerance: float = COVERAGE_TOLERANCE) -> Tensor:
    """`coverage_per_frame` averaged over the predicted frames: (n,) in [0, 1]."""
    return coverage_per_frame(futures, continuations, tolerance).mean(dim=1)
