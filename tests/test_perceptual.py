"""LPIPS, I3D and the Fréchet distance (vidpred/perceptual.py) on randomly initialised networks saved to
temporary files: the networks' arithmetic, the files they accept and refuse, and the exact distance."""

import re

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm

from conftest import random_i3d_file, random_lpips_file
from vidpred.errors import ConfigError
from vidpred.perceptual import frechet_distance, fvd_features, gaussian_frechet_distance, load_i3d, load_lpips, \
    resize_bilinear_tf1


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    return random_lpips_file(tmp_path_factory.mktemp("lpips") / "lpips_alex.pt")


def test_lpips_is_zero_for_identical_frames_and_grows_with_distortion(alexnet_file):
    lpips = load_lpips(alexnet_file)
    frames = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(lpips(frames, frames), torch.zeros(4))
    noise = torch.randn(frames.shape, generator=torch.Generator().manual_seed(2))
    scores = [lpips((frames + sigma * noise).clamp(0, 1), frames).mean().item() for sigma in (0.02, 0.1, 0.3)]
    assert all(np.isfinite(scores)) and 0 < scores[0] < scores[1] < scores[2], scores


def test_lpips_keeps_leading_axes_and_scores_a_shared_truth_as_each_pair(alexnet_file):
    """frame_scores hands LPIPS K samples against one truth broadcast with a stride-0 axis; the shortcut that
    runs that truth once must give the same numbers as scoring each (sample, truth) pair alone."""
    lpips = load_lpips(alexnet_file)
    g = torch.Generator().manual_seed(3)
    truth, samples = torch.rand(5, 1, 32, 32, generator=g), torch.rand(3, 5, 1, 32, 32, generator=g)
    together = lpips(samples, truth.expand_as(samples))
    assert together.shape == (3, 5)
    alone = torch.stack([lpips(s, truth.clone()) for s in samples])
    assert torch.allclose(together, alone, rtol=1e-5, atol=1e-7)
    rgb = lambda x: x.expand(*x.shape[:-3], 3, -1, -1)  # noqa: E731
    assert torch.allclose(lpips(samples, truth.expand_as(samples)), lpips(rgb(samples), rgb(truth)))  # grey as RGB


def test_an_lpips_package_state_dict_and_a_safetensors_file_load_to_the_same_network(tmp_path):
    ours = load_lpips(random_lpips_file(tmp_path / "a.pt", seed=4))
    theirs = load_lpips(random_lpips_file(tmp_path / "b.safetensors", seed=4, layout="lpips"))
    x, y = torch.rand(2, 3, 40, 40), torch.rand(2, 3, 40, 40)
    assert torch.equal(ours(x, y), theirs(x, y))


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")  # lpips calls torchvision's old API
def test_lpips_matches_the_reference_package(tmp_path):
    """The lpips package (Zhang et al.'s code) on the same random AlexNet trunk, with its bundled v0.1 linear
    layers: nothing downloaded (pnet_rand=True keeps torchvision from fetching ImageNet weights)."""
    reference = pytest.importorskip("lpips")
    torch.manual_seed(5)
    theirs = reference.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    torch.save(theirs.state_dict(), tmp_path / "lpips.pt")
    ours = load_lpips(tmp_path / "lpips.pt")
    x, y = torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        expected = theirs(2 * x - 1, 2 * y - 1).flatten()
    assert torch.allclose(ours(x, y), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "no such file; expected an LPIPS weights file"),
    (lambda p: p.write_text("not weights"), "cannot be read as torch or safetensors weights"),
    (lambda p: torch.save([torch.zeros(1)], p), "holds a list, not a state dict of tensors"),
    (lambda p: torch.save({"features.0.weight": torch.zeros(64, 3, 7, 7)}, p),
     r"features.0.weight of shape \(64, 3, 7, 7\), expected an AlexNet"),
    (lambda p: torch.save({k: v for k, v in torch.load(random_lpips_file(p)).items() if not k.startswith("lin")}, p),
     r"not LPIPS weights for the alexnet trunk .*: missing lin0.model.1.weight, lin1.model.1.weight"),
])
def test_lpips_files_that_are_not_lpips_weights_are_refused_naming_the_file(tmp_path, make, message):
    path = tmp_path / "weights.pt"
    make(path)
    with pytest.raises(ConfigError, match=f"--lpips={re.escape(str(path))}: .*{message}"):
        load_lpips(path)


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    return random_i3d_file(tmp_path_factory.mktemp("i3d") / "rgb_imagenet.pt")


def test_i3d_gives_finite_kinetics_logits_that_tell_videos_apart(i3d_file):
    i3d = load_i3d(i3d_file)
    g = torch.Generator().manual_seed(7)
    videos = torch.rand(2, 9, 1, 16, 16, generator=g)  # grey, tiny: resized to 224x224 inside
    features = fvd_features(i3d, videos)
    assert features.shape == (2, 400) and features.dtype == torch.float64 and torch.isfinite(features).all()
    assert not torch.allclose(features[0], features[1])
    assert torch.allclose(fvd_features(i3d, videos[1:]), features[1:], atol=1e-5)  # nor on the batch it is in
    with pytest.raises(ValueError, match="at least 9 frames, got 8"):
        fvd_features(i3d, videos[:, :8])


def test_i3d_files_of_another_network_are_refused(i3d_file, tmp_path):
    charades = torch.load(i3d_file)
    charades["logits.conv3d.weight"] = torch.zeros(157, 1024, 1, 1, 1)  # pytorch-i3d's rgb_charades.pt
    torch.save(charades, tmp_path / "rgb_charades.pt")
    with pytest.raises(ConfigError, match=r"logits.conv3d.weight is \(157, 1024, 1, 1, 1\), expected \(400, 1024"):
        load_i3d(tmp_path / "rgb_charades.pt")
    with pytest.raises(ConfigError, match=f"--fvd={re.escape(str(tmp_path / 'none.pt'))}: no such file; expected I3D"):
        load_i3d(tmp_path / "none.pt")


def test_the_resize_is_tf1s_resize_bilinear_without_half_pixel_offset():
    ramp = torch.tensor([[0.0, 1.0]]).expand(2, 2)[None, None]  # (1, 1, 2, 2), columns 0 and 1
    assert resize_bilinear_tf1(ramp, 4)[0, 0, 0].tolist() == [0.0, 0.5, 1.0, 1.0]  # samples at 0, .5, 1, 1.5 -> 1
    assert torch.nn.functional.interpolate(ramp, size=4, mode="bilinear")[0, 0, 0].tolist() == [0.0, 0.25, 0.75, 1.0]


def _exact_moments(n: int, mean: torch.Tensor, cov: torch.Tensor, seed: int) -> torch.Tensor:
    """n samples whose sample mean and unbiased sample covariance are exactly `mean` and `cov`."""
    x = torch.randn(n, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x - x.mean(dim=0)
    x = x @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(x.T))).T  # whitened: sample covariance I
    return x @ torch.linalg.cholesky(cov).T + mean


def test_frechet_distance_of_identical_sets_is_zero_and_of_known_gaussians_their_closed_form():
    g = torch.Generator().manual_seed(8)
    features = torch.randn(30, 64, generator=g, dtype=torch.float64)  # fewer vectors than dimensions, as FVD has
    assert abs(frechet_distance(features, features.clone())) < 1e-8
    # diagonal covariances: ||mu_a - mu_b||^2 + sum (sigma_a - sigma_b)^2
    mu_a, mu_b = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 1.0, 0.0])
    sd_a, sd_b = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([3.0, 1.0, 0.5])
    closed = float((mu_a - mu_b).pow(2).sum() + (sd_a - sd_b).pow(2).sum())  # 5 + 5 = 10
    assert gaussian_frechet_distance(mu_a, sd_a.pow(2).diag(), mu_b, sd_b.pow(2).diag()) == pytest.approx(closed)
    a = _exact_moments(200, mu_a.double(), sd_a.pow(2).diag().double(), seed=9)
    b = _exact_moments(300, mu_b.double(), sd_b.pow(2).diag().double(), seed=10)
    assert frechet_distance(a, b) == pytest.approx(closed, rel=1e-9)
    # covariances that do not commute: against scipy's sqrtm
    cov_a = torch.tensor([[2.0, 0.9], [0.9, 1.0]], dtype=torch.float64)
    cov_b = torch.tensor([[1.0, -0.4], [-0.4, 3.0]], dtype=torch.float64)
    expected = 1.0 + float(cov_a.trace() + cov_b.trace()) - 2 * np.trace(sqrtm(cov_a.numpy() @ cov_b.numpy())).real
    assert gaussian_frechet_distance(torch.zeros(2), cov_a, torch.tensor([1.0, 0.0]), cov_b) == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(features[:1], features)
