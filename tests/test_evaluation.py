"""evaluate() end to end on tiny checkpoints: the metrics.json contract, agreement with an independent
computation on the same samples, reproducibility, coverage, the pictures and the refusals."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from vidpred.build import build_objective, build_source, load_predictor
from vidpred.checkpoint import load_checkpoint, save_checkpoint
from vidpred.config import ConfigError, parse_args
from vidpred.data import ForkToy
from vidpred.evaluation import EvalConfig, evaluate, parse_eval_args
from vidpred.metrics import PSNR_CAP_DB
from vidpred.prior import LatentBank
from vidpred.sampling import SAMPLE_BLOCK, auto_rollout_batch, sample_futures
from vidpred.training import train

ROOT = Path(__file__).resolve().parents[1]
GROUP_KEYS = ["psnr", "ssim", "mse", "psnr_ci95", "ssim_ci95", "mse_ci95", "psnr_per_frame", "ssim_per_frame",
              "mse_per_frame", "psnr_per_frame_ci95", "ssim_per_frame_ci95"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny models (seconds to train): the default one on sprites, and one with the pixels decoder on the 3-way
    fork toy (its futures differ by z alone: with six steps the glide decoder's trust mask keeps every pixel)."""
    from conftest import tiny_args

    root = tmp_path_factory.mktemp("eval")
    sprites = train(parse_args(tiny_args(root / "sprites")))
    fork = train(parse_args(tiny_args(root / "fork", "--data.kind=fork", "--data.branches=3", "--data.sprite_min=4",
                                      "--model.decoder=pixels")))
    for ckpt in (sprites, fork):  # 6 steps leave every z* at 0: give the bank spread-out latents instead
        state = load_checkpoint(ckpt)
        bank = LatentBank(4, 64)
        bank.add(3 * torch.randn(64, 4, generator=torch.Generator().manual_seed(0)))
        bank.fit()
        state["prior"] = bank.state_dict()
        save_checkpoint(ckpt, state)
    return {"sprites": sprites, "fork": fork}


def _evaluate(ckpt, out, **options) -> dict:
    ecfg = EvalConfig(ckpt=str(ckpt), out=str(out), samples=5, context=3, horizon=3, clips=5, show=2, show_samples=2)
    for key, value in options.items():
        setattr(ecfg, key, value)
    return evaluate(ecfg)


def test_metrics_json_holds_the_contract_and_every_output_is_written(checkpoints, tmp_path):
    metrics = _evaluate(checkpoints["sprites"], tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    p = metrics["protocol"]
    assert {k: p[k] for k in ("context", "horizon", "samples", "clips", "seed")} == \
        {"context": 3, "horizon": 3, "samples": 5, "clips": 5, "seed": 0}
    assert p["data"]["kind"] == "sprites" and p["prior"] == "learned"
    assert "SVG" in p["groups"]["best_of_k_svg"] and "SRVP" in p["groups"]["best_of_k"]
    for group in [metrics[g] for g in ("best_of_k", "best_of_k_svg", "mean_of_k", "deterministic")] + \
            [metrics["floors"][g] for g in ("blank", "copy_last", "constant_motion")]:
        assert set(GROUP_KEYS) <= set(group)
        assert all(len(group[k]) == 3 for k in GROUP_KEYS if "per_frame" in k)
        assert all(group[k] > 0 for k in ("psnr_ci95", "ssim_ci95", "mse_ci95"))
    assert metrics["diversity"] > 0 and metrics["diversity_ci95"] is not None  # draws from the learned prior differ
    assert metrics["coverage"] is None and metrics["coverage_ci95"] is None  # sprites cannot list their futures
    for name in ("per_frame.png", "samples.png", "samples.mp4", "report.html"):
        assert (tmp_path / name).stat().st_size > 1000, name


@pytest.mark.parametrize("video", ["mp4", "gif"])
def test_the_video_decodes_back_to_context_plus_horizon_frames(checkpoints, tmp_path, video):
    _evaluate(checkpoints["sprites"], tmp_path, video=video, horizon=4)
    with av.open(str(tmp_path / f"samples.{video}")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 3 + 4
    assert frames[0].shape[0] > 2 * 96 and frames[0].shape[1] > 5 * 96  # 2 clips x (truth, z = 0, best, 2 samples)
    assert not np.array_equal(frames[0], frames[-1])


def test_numbers_agree_with_scikit_image_on_the_same_samples(checkpoints, tmp_path):
    """Recompute every group from the same futures, frame by frame with scikit-image and numpy."""
    metrics = _evaluate(checkpoints["sprites"], tmp_path, seed=3, prior="fitted")
    model, cfg, bank, _ = load_predictor(checkpoints["sprites"])
    source = build_source(cfg.data, seed=3, split="test", frames=6, context=3)
    video = torch.stack([source[i] for i in range(5)])
    futures = sample_futures(build_objective(cfg, model), video[:, :3], samples=5, horizon=3, prior="fitted", bank=bank, seed=3).numpy()
    truth = video[:, 3:].numpy().astype(np.float64)
    ssim = np.array([[[structural_similarity(truth[n, t], futures[n, k, t].astype(np.float64), gaussian_weights=True,
                                             sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=0)
                       for t in range(3)] for k in range(5)] for n in range(5)])  # (clips, K, T)
    psnr = np.array([[[min(peak_signal_noise_ratio(truth[n, t], futures[n, k, t].astype(np.float64), data_range=1),
                           PSNR_CAP_DB) for t in range(3)] for k in range(5)] for n in range(5)])
    rows = np.arange(5)
    best_psnr = psnr[rows, psnr.mean(axis=2).argmax(axis=1)]  # (clips, T)
    svg = ssim.mean(axis=2).argmax(axis=1)
    expected = {("best_of_k", "psnr"): best_psnr, ("best_of_k", "ssim"): ssim[rows, svg],
                ("best_of_k_svg", "psnr"): psnr[rows, svg], ("mean_of_k", "psnr"): psnr.mean(axis=1),
                ("mean_of_k", "ssim"): ssim.mean(axis=1)}
    for (group, name), frames in expected.items():
        per_clip = frames.mean(axis=1)
        assert metrics[group][name] == pytest.approx(per_clip.mean(), abs=1e-4), (group, name)
        assert metrics[group][f"{name}_ci95"] == pytest.approx(1.96 * per_clip.std(ddof=1) / np.sqrt(5), abs=1e-4)
        assert metrics[group][f"{name}_per_frame"] == pytest.approx(frames.mean(axis=0), abs=1e-4)
    flat = futures.reshape(5, 5, -1)
    diversity = np.mean([np.abs(flat[n, i] - flat[n, j]).mean() for n in range(5) for i in range(5) for j in range(5)
                         if i != j])
    assert metrics["diversity"] == pytest.approx(diversity, abs=1e-6)
    blank = np.array([[peak_signal_noise_ratio(truth[n, t], np.zeros_like(truth[n, t]), data_range=1)
                       for t in range(3)] for n in range(5)])
    assert metrics["floors"]["blank"]["psnr"] == pytest.approx(blank.mean(), abs=1e-4)


def test_svg_s_best_sample_is_the_ssim_best_and_k_1_makes_every_group_one_sample(checkpoints, tmp_path):
    many = _evaluate(checkpoints["fork"], tmp_path / "k5", prior="bank")
    assert many["diversity"] > 1e-4  # the samples differ, so the groups can
    # SVG's single sample is the one with the best mean SSIM: the per-metric best for SSIM only
    assert many["best_of_k"]["ssim"] == many["best_of_k_svg"]["ssim"]
    assert many["best_of_k_svg"]["psnr"] < many["best_of_k"]["psnr"]
    one = _evaluate(checkpoints["fork"], tmp_path / "k1", prior="bank", samples=1)
    for name in ("psnr", "ssim", "mse"):
        assert one["best_of_k"][name] == pytest.approx(one["mean_of_k"][name])
        assert one["best_of_k_svg"][name] == pytest.approx(one["mean_of_k"][name])
    assert one["diversity"] == 0.0


def _leaves(tree, prefix=""):
    """Every number in a metrics dict, by dotted key (lists expanded)."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _leaves(sub, f"{prefix}{key}.").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _leaves(sub, f"{prefix}{i}.").items()}
    return {prefix: tree} if isinstance(tree, float) else {}


def test_the_same_seed_gives_the_same_numbers_twice_whatever_the_batching(checkpoints, tmp_path):
    first = _evaluate(checkpoints["fork"], tmp_path / "a", seed=5, prior="fitted")
    _evaluate(checkpoints["fork"], tmp_path / "b", seed=5, prior="fitted")
    assert (tmp_path / "a" / "metrics.json").read_text() == (tmp_path / "b" / "metrics.json").read_text()
    # Other batch sizes draw the very same latents; convolutions may pick other algorithms for other
    # shapes, so the numbers agree to float rounding rather than bit for bit.
    rebatched = _evaluate(checkpoints["fork"], tmp_path / "c", seed=5, prior="fitted", batch=2, rollout_batch=7)
    expected, got = _leaves(first), _leaves(rebatched)
    assert expected.keys() == got.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key
    other = _evaluate(checkpoints["fork"], tmp_path / "d", seed=6, prior="fitted")
    # another seed draws other test clips and latents (a 6-step model's means can be close: compare frames)
    changes = [abs(a - b) for a, b in zip(other["best_of_k"]["psnr_per_frame"], first["best_of_k"]["psnr_per_frame"])]
    assert max(changes) > 1e-2


def test_sample_futures_rolls_out_whole_blocks_within_the_budget(checkpoints, monkeypatch):
    model, cfg, bank, _ = load_predictor(checkpoints["fork"])
    objective = build_objective(cfg, model)
    context = torch.rand(3, 3, 1, 16, 16)
    rows = []
    rollout = model.rollout_logits
    monkeypatch.setattr(model, "rollout_logits",
                        lambda *a, **kw: rows.append(int(kw["repeats"].sum())) or rollout(*a, **kw))
    b = SAMPLE_BLOCK
    together = sample_futures(objective, context, samples=b + 20, horizon=2, prior="learned", seed=1,
                              max_batch=2 * b + 20)
    assert rows == [2 * b + 20, b + 40]  # blocks (b, 20, b | 20, b, 20): whole blocks within max_batch
    alone = sample_futures(objective, context[2:], samples=b + 20, horizon=2, prior="learned", seed=1, clip_ids=[2])
    assert torch.equal(together[2], alone[0])


def test_rollout_chunks_default_to_the_frame_size_budget(checkpoints, monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert [auto_rollout_batch(cpu, s, s) for s in (16, 32, 64, 128)] == [400, 100, 25, 25]  # whole blocks, at least one
    assert auto_rollout_batch(gpu, 64, 64) == 400 and auto_rollout_batch(cpu, 32, 64) == 50
    # where only some futures run the network (a trust glide model's that fill with the background run none), more
    assert [auto_rollout_batch(cpu, 64, 64, network_share=s) for s in (1.0, 0.25, 0.0)] == [25, 50, 200]
    # without max_batch (TrainedPredictor.sample, `vidpred sample`, training previews) the budget of the frame size
    # applies, not one chunk of every future: at 64x64 on a CPU, K = 100 futures of a clip go 25 at a time
    model, cfg, bank, _ = load_predictor(checkpoints["fork"])
    objective = build_objective(cfg, model)
    sizes, rows = [], []
    monkeypatch.setattr("vidpred.sampling.auto_rollout_batch",
                        lambda device, h, w, network_share: sizes.append((device.type, h, w, network_share))
                        or 2 * SAMPLE_BLOCK + 20)
    rollout = model.rollout_logits
    monkeypatch.setattr(model, "rollout_logits",
                        lambda *a, **kw: rows.append(int(kw["repeats"].sum())) or rollout(*a, **kw))
    sample_futures(objective, torch.rand(3, 3, 1, 16, 16), samples=SAMPLE_BLOCK + 20, horizon=2, prior="learned", seed=1)
    assert sizes == [("cpu", 16, 16, 1.0)] and rows == [2 * SAMPLE_BLOCK + 20, SAMPLE_BLOCK + 40]


@pytest.mark.parametrize("branches", [3])
def test_coverage_end_to_end_for_an_oracle_and_a_one_branch_model(checkpoints, tmp_path, monkeypatch, branches):
    toy = ForkToy(seed=0, split="test", size=16, frames=6, fork_at=3, branches=branches, sprite=4, speed=2)

    def fake_sampler(branch_of):  # "models" that return true continuations of the fork toy
        def sample(model, context, *, samples, clip_ids, **_):
            return torch.stack([torch.from_numpy(toy.futures(i))[[branch_of(k) for k in range(samples)], 3:]
                                for i in clip_ids])
        return sample

    monkeypatch.setattr("vidpred.evaluation.sample_futures", fake_sampler(lambda k: k % branches))
    oracle = _evaluate(checkpoints["fork"], tmp_path / "oracle")
    assert oracle["coverage"] == 1.0 and oracle["coverage_ci95"] == 0.0
    assert oracle["best_of_k"]["psnr"] == PSNR_CAP_DB and oracle["best_of_k"]["ssim"] == pytest.approx(1.0)
    monkeypatch.setattr("vidpred.evaluation.sample_futures", fake_sampler(lambda k: 0))
    one_way = _evaluate(checkpoints["fork"], tmp_path / "one")
    assert one_way["coverage"] == pytest.approx(1 / branches) and one_way["diversity"] == 0.0
    monkeypatch.undo()
    real = _evaluate(checkpoints["fork"], tmp_path / "real", prior="bank")
    per_clip = real["coverage"] * real["protocol"]["clips"] * branches  # each clip covers 0..branches of its futures
    assert per_clip == pytest.approx(round(per_clip), abs=1e-6)


def test_a_source_with_short_clips_is_refused(checkpoints, tmp_path, monkeypatch):
    short = ForkToy(seed=0, split="test", size=16, frames=5, fork_at=3, branches=2, sprite=4)
    monkeypatch.setattr("vidpred.evaluation.build_source", lambda *a, **kw: short)
    with pytest.raises(ConfigError, match="context \\+ horizon = 6 frames, but the test clips of fork have 5"):
        _evaluate(checkpoints["fork"], tmp_path)
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["--ckpt=x.pt", "--samples=0"], "samples=0: expected a positive number"),
    (["--ckpt=x.pt", "--video=avi"], "video='avi': expected one of mp4, gif, none"),
    (["--ckpt=x.pt", "--data.sprite=3"], "unknown config key 'sprite'"),
    (["--samples=3"], "--ckpt=PATH is required"),
    (["--ckpt=x.pt", "--device=inf"], "device='inf': expected auto, cpu, cuda, cuda:N or mps"),
    (["--ckpt=x.pt", "--background_fill=1.5"], r"background_fill=1.5: expected a share in \[0, 1\]"),
])
def test_bad_options_are_refused(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_eval_args(argv)


def test_data_overrides_that_do_not_fit_the_model_are_refused(checkpoints, tmp_path):
    ecfg, overrides = parse_eval_args([f"--ckpt={checkpoints['sprites']}", f"--out={tmp_path}", "--data.size=32"])
    with pytest.raises(ConfigError, match="trained on 1x16x16 frames"):
        evaluate(ecfg, overrides)


def test_cli_prints_the_table_and_writes_the_files(checkpoints, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), f"--ckpt={checkpoints['fork']}",
                             f"--out={tmp_path}", "--samples=4", "--context=3", "--horizon=2", "--clips=3",
                             "--data.branches=2", "--video=gif"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "best of K (SVG: by SSIM)" in result.stdout and "coverage" in result.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["protocol"]["data"]["branches"] == 2 and metrics["coverage"] is not None
    assert (tmp_path / "samples.gif").exists() and (tmp_path / "per_frame.png").exists()


@pytest.fixture(scope="module")
def perceptual_files(tmp_path_factory):
    """Random LPIPS (VGG16: the tiny checkpoints' 16x16 frames are too small for AlexNet) and I3D weights."""
    from conftest import random_i3d_file, random_lpips_file

    root = tmp_path_factory.mktemp("weights")
    return {"vgg16": random_lpips_file(root / "lpips_vgg.pt", "vgg16"), "alexnet": random_lpips_file(root / "alex.pt"),
            "i3d": random_i3d_file(root / "rgb_imagenet.pt")}


def test_lpips_joins_every_group_and_floor_as_a_lower_is_better_metric(checkpoints, perceptual_files, tmp_path):
    metrics = _evaluate(checkpoints["sprites"], tmp_path, lpips=str(perceptual_files["vgg16"]))
    groups = [metrics[g] for g in ("best_of_k", "best_of_k_svg", "mean_of_k", "deterministic")] + \
        [metrics["floors"][g] for g in ("blank", "copy_last", "constant_motion")]
    for group in groups:
        assert np.isfinite(group["lpips"]) and group["lpips"] > 0 and group["lpips_ci95"] is not None
        assert len(group["lpips_per_frame"]) == len(group["lpips_per_frame_ci95"]) == 3
    # best of K takes each clip's lowest LPIPS: under the mean of K and under SVG's SSIM-picked sample
    assert metrics["best_of_k"]["lpips"] < metrics["mean_of_k"]["lpips"]
    assert metrics["best_of_k"]["lpips"] <= metrics["best_of_k_svg"]["lpips"]
    weights = metrics["protocol"]["weights"]["lpips"]
    assert weights["trunk"] == "vgg16" and weights["sha256"] == hashlib.sha256(
        perceptual_files["vgg16"].read_bytes()).hexdigest()
    assert "LPIPS" in metrics["protocol"]["metrics"]["lpips"] and "fvd" not in metrics
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics


def _truth_sampler(ckpt, *, context: int, horizon: int, truth_at: int):
    """A stand-in for sample_futures whose K futures of a clip are noisy copies of its true future, the
    exact truth at index `truth_at`."""
    _, cfg, _, _ = load_predictor(ckpt)
    source = build_source(cfg.data, seed=0, split="test", frames=context + horizon, context=context)

    def sample(model, context_frames, *, samples, clip_ids, **_):
        out = []
        for i in clip_ids:
            truth = source[i][context:context + horizon]
            noise = torch.randn((samples, *truth.shape), generator=torch.Generator().manual_seed(i))
            futures = (truth + 0.3 * noise).clamp(0, 1)
            futures[truth_at] = truth
            out.append(futures)
        return torch.stack(out)
    return sample


def test_fvd_scores_the_first_sampled_future_against_the_true_clips(checkpoints, perceptual_files, tmp_path,
                                                                    monkeypatch):
    """The same K futures in two orders: best of K cannot tell them apart, FVD (the first future of each clip,
    an unselected draw) can — and is 0 where that first future is the truth."""
    options = dict(fvd=str(perceptual_files["i3d"]), lpips=str(perceptual_files["vgg16"]), horizon=6, clips=2,
                   samples=3)
    monkeypatch.setattr("vidpred.evaluation.sample_futures",
                        _truth_sampler(checkpoints["sprites"], context=3, horizon=6, truth_at=0))
    first = _evaluate(checkpoints["sprites"], tmp_path / "first", **options)
    monkeypatch.setattr("vidpred.evaluation.sample_futures",
                        _truth_sampler(checkpoints["sprites"], context=3, horizon=6, truth_at=2))
    last = _evaluate(checkpoints["sprites"], tmp_path / "last", **options)
    for metrics in (first, last):
        assert metrics["best_of_k"]["lpips"] == pytest.approx(0.0, abs=1e-6)
        assert metrics["mean_of_k"]["lpips"] > 1e-3
    assert abs(first["fvd"]) < 1e-9 < 1e-3 < last["fvd"]
    assert "first of the K sampled futures" in first["protocol"]["fvd"]
    assert first["protocol"]["weights"]["fvd"]["sha256"] == hashlib.sha256(
        perceptual_files["i3d"].read_bytes()).hexdigest()


@pytest.mark.parametrize("options, message", [
    (lambda f: {"lpips": f["vgg16"].parent / "missing.pt"}, "--lpips=.*missing.pt: no such file; expected an LPIPS"),
    (lambda f: {"lpips": f["alexnet"]}, "the alexnet trunk needs frames of at least 31x31 pixels, and this model's "
                                        "are 16x16 \\(a VGG16 file works from 16x16\\)"),
    (lambda f: {"fvd": f["vgg16"], "horizon": 6}, "--fvd=.*lpips_vgg.pt: not I3D Kinetics-400 .*missing Conv3d"),
    (lambda f: {"fvd": f["i3d"]}, "--fvd: I3D needs videos of at least 9 frames, and context \\+ horizon = 6"),
    (lambda f: {"fvd": f["i3d"], "horizon": 6, "clips": 1}, "--fvd: clips=1, but a Frechet distance needs at least 2"),
])
def test_perceptual_weights_that_cannot_serve_are_refused_before_sampling(checkpoints, perceptual_files, tmp_path,
                                                                          monkeypatch, options, message):
    monkeypatch.setattr("vidpred.evaluation.sample_futures", lambda *a, **kw: pytest.fail("sampled before refusing"))
    with pytest.raises(ConfigError, match=message):
        _evaluate(checkpoints["sprites"], tmp_path, **{k: str(v) if isinstance(v, Path) else v
                                                       for k, v in options(perceptual_files).items()})
    assert not (tmp_path / "metrics.json").exists()


def test_the_constant_motion_floor_carries_the_last_frame_on_and_copies_a_one_frame_context():
    from vidpred.evaluation import constant_motion_floor

    video = torch.zeros(2, 6, 1, 20, 20)
    texture = torch.linspace(0.3, 1.0, 16).view(4, 4)  # (a uniform square's inside matches nearby displacements too)
    for t in range(6):
        video[0, t, 0, 2 + 2 * t:6 + 2 * t, 3 + t:7 + t] = texture  # moves by (2, 1) a frame
        video[1, t, 0, 10:14, 10:14] = texture  # still
    floor = constant_motion_floor(video[:, :3], horizon=3)
    assert floor.shape == (2, 3, 1, 20, 20) and torch.equal(floor, video[:, 3:])
    assert torch.equal(constant_motion_floor(video[:, 2:3], horizon=2), video[:, 2:3].expand(-1, 2, -1, -1, -1))
