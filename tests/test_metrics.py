"""The frame metrics against scikit-image, and the invariants of best of K, diversity and coverage."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from vidpred.data import ForkToy
from vidpred.metrics import (FRAME_METRICS, PSNR_CAP_DB, best_of_k, coverage, coverage_per_frame, frame_scores,
                             mean_ci95,
                             pairwise_diversity, psnr, ssim)


def _image_pairs(channels: int, size: tuple[int, int] = (24, 30)):
    """(name, truth, prediction) float64 arrays (c, H, W) in [0, 1]: random, structured, nearly flat."""
    rng = np.random.default_rng(channels)
    shape = (channels, *size)
    noise = rng.random(shape)
    yield "random", noise, rng.random(shape)
    yield "noisy copy", noise, np.clip(noise + rng.normal(0, 0.05, shape), 0, 1)
    square = np.zeros(shape)
    square[:, 6:14, 9:20] = 0.8
    yield "moved square", square, np.roll(square, 3, axis=-1) * 0.9
    yy, xx = np.mgrid[:size[0], :size[1]]
    gradient = np.broadcast_to((yy + xx) / (size[0] + size[1]), shape)
    yield "gradient vs blur", gradient, np.clip(gradient + 0.1 * np.sin(xx / 2), 0, 1)
    # nearly flat bright frames: E[x²] - E[x]² cancels most here, the hardest case for float32
    flat = np.clip(0.9 + 1e-3 * rng.standard_normal(shape), 0, 1)
    yield "nearly flat", flat, np.clip(flat + 1e-3 * rng.standard_normal(shape), 0, 1)


def _ours(metric, truth: np.ndarray, pred: np.ndarray) -> float:
    return metric(torch.tensor(pred, dtype=torch.float32), torch.tensor(truth, dtype=torch.float32)).item()


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_and_psnr_equal_scikit_image(channels):
    for name, truth, pred in _image_pairs(channels):
        ref_ssim = structural_similarity(truth, pred, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         data_range=1, channel_axis=0)
        ref_psnr = peak_signal_noise_ratio(truth, pred, data_range=1)
        assert abs(_ours(ssim, truth, pred) - ref_ssim) < 1e-4, name
        assert abs(_ours(psnr, truth, pred) - ref_psnr) < 1e-4, name


def test_metrics_are_batched_over_any_leading_dims():
    pred, truth = torch.rand(2, 3, 4, 1, 16, 16), torch.rand(2, 3, 4, 1, 16, 16)
    for fn, _ in FRAME_METRICS.values():
        batched = fn(pred, truth)
        assert batched.shape == (2, 3, 4)
        assert torch.allclose(batched[1, 2, 3], fn(pred[1, 2, 3], truth[1, 2, 3]), atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
def test_identical_frames_give_ssim_1_and_the_psnr_cap(channels):
    frames = torch.rand(5, channels, 16, 16)
    frames[0] = 0.0  # a blank frame: zero variance everywhere
    assert torch.allclose(ssim(frames, frames.clone()), torch.ones(5), atol=1e-6)
    value = psnr(frames, frames.clone())
    assert torch.equal(value, torch.full((5,), PSNR_CAP_DB))
    assert PSNR_CAP_DB == 100.0  # the cap README and metrics.json document


def test_ssim_refuses_frames_smaller_than_its_window():
    with pytest.raises(ValueError, match="at least 11x11 pixels, got 8x8"):
        ssim(torch.rand(1, 8, 8), torch.rand(1, 8, 8))


def test_frame_scores_in_slices_equal_one_pass(monkeypatch):
    futures, truth = torch.rand(2, 3, 4, 1, 16, 16), torch.rand(2, 4, 1, 16, 16)
    whole = frame_scores(futures, truth)
    monkeypatch.setattr("vidpred.metrics.SCORE_CHUNK_PIXELS", 2 * 4 * 256)  # 2 samples of 4 frames per slice
    sliced = frame_scores(futures, truth)
    for name in FRAME_METRICS:
        assert whole[name].shape == (2, 3, 4)
        assert torch.equal(whole[name], sliced[name])
        assert torch.allclose(whole[name][1, 2], FRAME_METRICS[name][0](futures[1, 2], truth[1]))


def test_best_and_mean_of_k_of_samples_with_known_errors():
    """Samples offset from the truth by 0.1, 0.3 and 0.2 everywhere: MSE c², PSNR -10 log10 c²."""
    truth = torch.full((1, 4, 1, 16, 16), 0.5)
    offsets = torch.tensor([0.1, 0.3, 0.2])
    futures = truth[:, None] + offsets.view(1, 3, 1, 1, 1, 1)
    scores = frame_scores(futures, truth)
    mse_best = best_of_k(scores["mse"], FRAME_METRICS["mse"][1])
    psnr_best = best_of_k(scores["psnr"], FRAME_METRICS["psnr"][1])
    assert torch.allclose(mse_best, torch.full((1, 4), 0.01)) and torch.allclose(psnr_best, torch.full((1, 4), 20.0))
    assert torch.allclose(scores["mse"].mean(dim=1), torch.full((1, 4), (0.01 + 0.09 + 0.04) / 3))
    assert torch.equal(best_of_k(scores["mse"][:, 1:2], False), scores["mse"][:, 1])  # K = 1: that sample


def test_best_of_k_picks_the_best_time_average_not_the_best_frame():
    scores = torch.tensor([[[10.0, 30.0], [25.0, 20.0]]])  # sample 0: frame-best once, worse on average
    assert best_of_k(scores, higher_is_better=True).tolist() == [[25.0, 20.0]]
    assert best_of_k(scores, higher_is_better=False).tolist() == [[10.0, 30.0]]


def test_mean_ci95_is_the_mean_and_1_96_standard_errors():
    values = torch.tensor([1.0, 2.0, 4.0, 7.0])
    mean, half = mean_ci95(values)
    assert mean == pytest.approx(3.5)
    assert half == pytest.approx(1.96 * np.std([1, 2, 4, 7], ddof=1) / 2)
    means, halves = mean_ci95(torch.stack([values, 2 * values], dim=1))  # per column
    assert means == pytest.approx([3.5, 7.0]) and halves == pytest.approx([half, 2 * half])
    assert math.isnan(mean_ci95(torch.tensor([1.0]))[1])


def test_diversity_is_the_mean_pairwise_l1_distance():
    futures = torch.rand(2, 4, 3, 1, 8, 8)
    expected = [np.mean([np.abs(f[i].numpy() - f[j].numpy()).mean() for i in range(4) for j in range(4) if i != j])
                for f in futures]
    assert torch.allclose(pairwise_diversity(futures), torch.tensor(expected), atol=1e-6)
    assert pairwise_diversity(futures[:, :1]).tolist() == [0.0, 0.0]
    assert pairwise_diversity(futures[:, :1].expand(-1, 5, -1, -1, -1, -1)).abs().max() == 0


@pytest.mark.parametrize("branches", [2, 3, 5])
def test_coverage_is_1_over_k_for_one_branch_and_1_for_an_oracle(branches):
    toy = ForkToy(seed=0, split="test", size=16, frames=9, fork_at=3, branches=branches, sprite=4, speed=2)
    continuations = [torch.from_numpy(toy.futures(i))[:, 3:] for i in range(4)]  # each (k, T, c, H, W)
    always_first = torch.stack([c[:1].expand(10, -1, -1, -1, -1) for c in continuations])  # (4, 10, T, ...)
    assert torch.allclose(coverage(always_first, continuations), torch.full((4,), 1 / branches))
    oracle = torch.stack([c[torch.arange(10) % branches] for c in continuations])
    assert torch.equal(coverage(oracle, continuations), torch.ones(4))
    blur = torch.stack([c.mean(dim=0, keepdim=True).expand(10, -1, -1, -1, -1) for c in continuations])
    assert torch.equal(coverage(blur, continuations), torch.zeros(4))  # the average of the branches is none of them
    nearly = (oracle + 0.01 * torch.randn_like(oracle)).clamp(0, 1)  # small pixel noise still matches
    assert torch.equal(coverage(nearly, continuations), torch.ones(4))


def test_coverage_per_frame_counts_samples_that_stay_on_a_branch():
    toy = ForkToy(seed=1, split="test", size=16, frames=9, fork_at=3, branches=2, sprite=4, speed=2)
    truths = torch.from_numpy(toy.futures(0))[:, 3:]  # (2, 6, 1, 16, 16): the two branches from the first frame on
    assert not torch.equal(truths[0, 0], truths[1, 0])
    a, b = truths[0], truths[1]
    switcher = torch.cat([a[:3], b[3:]])  # follows branch a for 3 frames, then jumps onto b
    curve = coverage_per_frame(switcher[None, None], [truths])[0]
    assert curve.tolist() == [0.5, 0.5, 0.5, 0.0, 0.0, 0.0]  # a followed through frame 3; b never from frame 1
    both = torch.stack([a, b, switcher])[None]
    assert coverage_per_frame(both, [truths])[0].tolist() == [1.0] * 6
    late = torch.cat([a[:5], torch.zeros_like(a[5:])])  # a blank last frame: not on a at frame 6
    assert coverage_per_frame(late[None, None], [truths])[0].tolist() == [0.5] * 5 + [0.0]


def test_coverage_counts_futures_equal_so_far_once():
    """Two continuations that part only at the third frame: before that one future, covered by either."""
    first = torch.zeros(4, 1, 8, 8)
    first[:, :, 2:4, 2:4] = 1.0
    second = first.clone()
    second[2:] = torch.roll(first[2:], 3, dims=-1)  # parts from frame 3 on
    truths = torch.stack([first, second])
    curve = coverage_per_frame(first[None, None], [truths])[0]
    assert curve.tolist() == [1.0, 1.0, 0.5, 0.5]
