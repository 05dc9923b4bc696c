"""The evaluation protocol: K sampled futures per test clip, scored frame by frame against the truth.

Reports (docs/PROTOCOL.md): best of K per metric (SRVP/SAVP) and SVG's variant (one sample
chosen by SSIM, every metric read from it), mean of K, the deterministic prediction (z = 0), each
as a mean over clips with a 95% interval and per-frame curves; the diversity of the K futures;
mode coverage where the data can enumerate its true futures; and the trivial floors (a blank
frame, a copy of the last context frame) that any model must beat to mean something. With weights
files the user supplies (perceptual.py; nothing is downloaded): LPIPS per frame in every group
(`--lpips`), and FVD of one sampled future per clip against the true clips (`--fvd`).

Clips are processed `batch` at a time and only per-frame scores are kept, so memory is bounded
by one batch of futures and one chunk of rollouts whatever the number of clips. The latents of a
clip's futures depend only on (seed, clip index), so `batch` and `rollout_batch` draw the same
futures (equal to float rounding: convolutions may pick other algorithms for other batch shapes).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from .build import WEIGHTS, build_objective, build_source, load_predictor, run_home
from .choices import PriorKind
from .config import ConfigError, DataConfig, check_device, check_numbers, parse_overrides, set_key, to_dict
from .distributed import Ranks, gather_objects, local_first, setup, teardown
from .html_report import save_report_html
from .metrics import (COVERAGE_TOLERANCE, FRAME_METRICS, PSNR_CAP_DB, SSIM_WINDOW, best_of_k, coverage_per_frame,
                      frame_metrics, frame_scores, mean_ci95, pairwise_diversity, pick_best, take)
from .model import constant_motion, glide
from .perceptual import (I3D_MIN_FRAMES, I3D_SIZE, LPIPS, file_digest, frechet_distance, fvd_features, load_i3d,
                         load_lpips, lpips_description)
from .report import (FLOOR_LABELS, GROUP_LABELS, VIDEO_FORMATS, format_table, save_per_frame_plot, save_samples_png,
                     save_video, video_frames)
from .sampling import BACKGROUND_FILL, SAMPLE_BLOCK, sample_futures

GROUPS, FLOORS = tuple(GROUP_LABELS), tuple(FLOOR_LABELS)  # the report names each; one list of them
FUTURES_BUDGET_BYTES = 256 * 2**20  # the futures of one batch of clips, when --batch=0 picks the batch
FLOOR_MOTION_RADIUS = 4  # the constant-motion floor finds displacements of up to 4 pixels a frame (SM-MNIST's top speed)


@dataclass
class EvalConfig:
    ckpt: str = ""  # checkpoint to evaluate (required)
    out: str = ""  # output folder; empty means <run folder>/eval
    samples: int = 100  # K futures per clip
    context: int = 5  # frames given
    horizon: int = 20  # frames predicted and scored
    clips: int = 256  # test clips
    seed: int = 0  # seeds the test clips and the sampled latents
    prior: PriorKind | None = None  # bank | fitted | learned; empty: what the checkpoint was trained to use
    background_fill: float = BACKGROUND_FILL  # glide_mask=trust: the share of futures that leave the background where they drop a glided object (the rest: generated pixels, where z shows)
    batch: int = 0  # clips whose K futures are held at once; 0: as many as fit in 256 MB
    rollout_batch: int = 0  # futures rolled out together (bounds memory); 0: 100 at 32x32 on a CPU, 25 at 64x64
    show: int = 4  # clips drawn in samples.png and samples.mp4
    show_samples: int = 4  # sampled futures drawn per clip, besides the truth, z = 0 and the best
    video: str = "mp4"  # mp4 | gif | none: the side-by-side video of the shown clips
    device: str = "auto"  # auto (a GPU if there is one) | cpu | cuda | cuda:N
    weights: str = "average"  # average | raw: a run trained with --ema saved a weight average; evaluate it (where there is none, the weights) or the raw weights
    lpips: str = ""  # LPIPS weights file (AlexNet or VGG16 trunk + linear layers, docs/PROTOCOL.md); empty: no LPIPS
    fvd: str = ""  # I3D Kinetics-400 weights file (pytorch-i3d rgb_imagenet.pt, docs/PROTOCOL.md); empty: no FVD


def parse_eval_args(argv: list[str]) -> tuple[EvalConfig, dict[str, str]]:
    """EvalConfig from `--key=value` options, and the `--data.KEY=VALUE` overrides that will be
    applied on top of the checkpoint's data section (checked against DataConfig now)."""
    overrides = parse_overrides(argv)
    ecfg = EvalConfig()
    data_overrides = {k[len("data."):]: v for k, v in overrides.items() if k.startswith("data.")}
    for key, value in overrides.items():
        if not key.startswith("data."):
            set_key(ecfg, key, value)
    if not ecfg.ckpt:
        raise ConfigError("--ckpt=PATH is required: the checkpoint to evaluate (e.g. runs/default/checkpoints/last.pt)")
    for key, value in data_overrides.items():
        try:
            set_key(DataConfig(), key, value)
        except ConfigError as e:
            raise ConfigError(f"data.{e}") from None
    check_numbers(ecfg, positive=("samples", "context", "horizon", "clips"),
                  nonneg=("batch", "rollout_batch", "show", "show_samples"), shares=("background_fill",))
    check_device(ecfg.device)
    if ecfg.weights not in WEIGHTS:
        raise ConfigError(f"weights={ecfg.weights}: expected one of {', '.join(WEIGHTS)}")
    if ecfg.video not in VIDEO_FORMATS:
        raise ConfigError(f"video={ecfg.video!r}: expected one of {', '.join(VIDEO_FORMATS)}")
    return ecfg, data_overrides


def constant_motion_floor(context: Tensor, horizon: int) -> Tensor:
    """The last context frame with each pixel carried on at its own constant motion, the displacement that
    block matching finds between the last two context frames (`model.glide`; the glide decoder's untrained
    prediction but that it moves each object by one displacement, `model.object_motion`):
    (n, C0, c, H, W) -> (n, horizon, c, H, W). A context of one frame shows no motion: its copy."""
    last = context[:, -1]
    if context.shape[1] < 2:
        return last[:, None].expand(-1, horizon, -1, -1, -1)
    by = constant_motion(context[:, -2], last, radius=FLOOR_MOTION_RADIUS)
    steps = torch.ones(last.shape[0], dtype=torch.long, device=last.device)
    return torch.stack([glide(last, by, t * steps)[:, :-1] for t in range(1, horizon + 1)], dim=1)


def score_clips(futures: Tensor, det: Tensor, context: Tensor, truth: Tensor,
                metrics: dict | None = None) -> tuple[dict, Tensor]:
    """Per-frame scores of every group for a batch of clips, and SVG's pick (the sample with the
    best mean SSIM) per clip. `metrics`: FRAME_METRICS unless given (`frame_metrics(lpips=...)`).

    futures (n, K, T, c, H, W), det and truth (n, T, c, H, W), context (n, C0, c, H, W)
    -> {group: {metric: (n, T)}}, (n,).
    """
    metrics = FRAME_METRICS if metrics is None else metrics
    scores = frame_scores(futures, truth, metrics)  # {metric: (n, K, T)}
    svg_pick = pick_best(scores["ssim"], higher_is_better=True)
    out = {
        "best_of_k": {m: best_of_k(s, metrics[m][1]) for m, s in scores.items()},
        "best_of_k_svg": {m: take(s, svg_pick) for m, s in scores.items()},
        "mean_of_k": {m: s.mean(dim=1) for m, s in scores.items()},
    }
    single = {"deterministic": det, "blank": torch.zeros_like(truth), "copy_last": context[:, -1:].expand_as(truth),
              "constant_motion": constant_motion_floor(context, truth.shape[1])}
    for group, prediction in single.items():
        out[group] = {m: s[:, 0] for m, s in frame_scores(prediction[:, None], truth, metrics).items()}
    return out, svg_pick


def _interval(values: Tensor) -> tuple:
    """mean_ci95 with NaN half-widths (fewer than 2 clips) as None, which JSON can hold."""
    mean, half = mean_ci95(values)
    clean = lambda v: None if isinstance(v, float) and math.isnan(v) else v  # noqa: E731
    return mean, [clean(v) for v in half] if isinstance(half, list) else clean(half)


def summarize(per_metric: dict[str, Tensor]) -> dict:
    """{metric: (n, T) per-frame scores} -> for each metric: the mean over clips of the time
    average, its 95% half-width, the per-frame means with their half-widths, and each clip's time
    average (so two models evaluated on the same clips can be compared pair by pair)."""
    out = {}
    for name, frames in per_metric.items():
        out[name], out[f"{name}_ci95"] = _interval(frames.mean(dim=1))
        out[f"{name}_per_frame"], out[f"{name}_per_frame_ci95"] = _interval(frames)
        out[f"{name}_per_clip"] = frames.mean(dim=1).tolist()
    return out


def describe_protocol(ecfg: EvalConfig, data: DataConfig, prior: str, step: int, *,
                      lpips: LPIPS | None = None, weights: str = "raw", glide_draws: bool = False) -> dict:
    """The protocol block of metrics.json: the numbers that define it and what each group means; with
    --lpips/--fvd, what those measure and the weights they used (path and SHA-256, so a figure names them);
    `weights`: the model's weights scored, "average" (a run trained with --ema) or "raw"; `glide_draws`: the model's
    futures draw how they realize the glided frame (glide_mask=trust), and --background_fill is recorded."""
    protocol = {
        "name": f"best of K = {ecfg.samples}, {ecfg.context} -> {ecfg.horizon} frames (SRVP/SAVP; SVG variant "
                f"beside it)",
        "context": ecfg.context, "horizon": ecfg.horizon, "samples": ecfg.samples, "clips": ecfg.clips,
        "data": to_dict(data), "split": "test", "seed": ecfg.seed, "prior": prior,
        "checkpoint": str(ecfg.ckpt), "checkpoint_step": step, "model_weights": weights,
        "metrics": {
            "psnr": f"per frame, data_range 1, 10 log10(1 / MSE), capped at {PSNR_CAP_DB:g} dB",
            "ssim": f"per frame, Gaussian window {SSIM_WINDOW} (sigma 1.5), data_range 1, population "
                    "covariance, mean over the valid region and channels (scikit-image's structural_similarity)",
            "mse": "per frame, mean over pixels and channels",
        },
        "groups": {
            "best_of_k": "per clip and per metric, the sample with the best time-averaged score (SRVP, SAVP)",
            "best_of_k_svg": "per clip, the one sample with the best time-averaged SSIM; every metric read "
                             "from it (SVG, Denton & Fergus 2018)",
            "mean_of_k": "per clip, the average score of the K samples",
            "deterministic": "the rollout with z = 0 at every step",
            "floors": "blank: an all-zero frame; copy_last: the last context frame repeated; constant_motion: the "
                      "last context frame with each pixel carried on at its own constant motion (block matching of "
                      f"the last two context frames, up to {FLOOR_MOTION_RADIUS} pixels a frame)",
        },
        "summary": "mean over clips of each clip's time-averaged score; *_ci95: 1.96 standard errors of "
                   "that mean (null with one clip); *_per_frame: the mean over clips at each predicted frame; "
                   "*_per_clip: each clip's time-averaged score, in clip order",
        "diversity": "mean pairwise per-pixel L1 distance between the K futures of a clip, averaged over clips",
        "coverage": "per predicted frame t, the share of a clip's true futures (distinct up to t) that some sample "
                    f"followed through t, each frame's MSE below {COVERAGE_TOLERANCE:g} x the MSE between that true "
                    "frame and the nearest other one (a blank frame where all agree); coverage is its mean over "
                    "frames, coverage_per_frame the curve; null when the data cannot list its futures",
    }
    if glide_draws:
        protocol["background_fill"] = ecfg.background_fill
    weights = {}
    if lpips is not None:
        protocol["metrics"]["lpips"] = f"per frame, {lpips_description(lpips)}"
        weights["lpips"] = {"path": ecfg.lpips, "sha256": file_digest(ecfg.lpips), "trunk": lpips.trunk}
    if ecfg.fvd:
        protocol["fvd"] = (f"Frechet distance (Unterthiner et al. 2018) between Gaussian fits of the I3D Kinetics-400 "
                           f"logits (averaged over time) of the {ecfg.clips} test clips, context + truth, and of the "
                           f"same clips with the first of the K sampled futures after the context (an unselected "
                           f"draw, as SRVP's test.py); frames quantized to 8 bits, grey repeated to RGB, resized to "
                           f"{I3D_SIZE}x{I3D_SIZE} (TF1 resize_bilinear), scaled to [-1, 1]; unbiased covariances")
        weights["fvd"] = {"path": ecfg.fvd, "sha256": file_digest(ecfg.fvd), "network": "I3D (pytorch-i3d layout)"}
    if weights:
        protocol["weights"] = weights
    return protocol


def _auto_batch(ecfg: EvalConfig, channels: int, size: int) -> int:
    per_clip = ecfg.samples * ecfg.horizon * channels * size * size * 4  # float32 futures of one clip
    return max(1, FUTURES_BUDGET_BYTES // per_clip)


def _perceptual_networks(ecfg: EvalConfig, *, size: int, frames: int, device: torch.device) -> tuple:
    """The LPIPS and I3D networks of --lpips and --fvd (None where not asked for), with every refusal
    (a missing or wrong file, frames too small for the trunk, clips too short or too few for FVD)
    made here, before anything is sampled."""
    lpips = load_lpips(ecfg.lpips, device=device) if ecfg.lpips else None
    if lpips is not None and size < lpips.min_size:
        raise ConfigError(f"--lpips={ecfg.lpips}: LPIPS with the {lpips.trunk} trunk needs frames of at least "
                          f"{lpips.min_size}x{lpips.min_size} pixels, and this model's are {size}x{size}"
                          + (" (a VGG16 file works from 16x16)" if lpips.trunk == "alexnet" and size >= 16 else ""))
    if not ecfg.fvd:
        return lpips, None
    if frames < I3D_MIN_FRAMES:
        raise ConfigError(f"--fvd: I3D needs videos of at least {I3D_MIN_FRAMES} frames, and context + horizon = "
                          f"{frames}; lengthen --context/--horizon")
    if ecfg.clips < 2:
        raise ConfigError(f"--fvd: clips={ecfg.clips}, but a Frechet distance needs at least 2 clips (the field "
                          f"uses 256 or more: FVD is biased upwards on few videos)")
    return lpips, load_i3d(ecfg.fvd, device=device)


def evaluate(ecfg: EvalConfig, data_overrides: dict[str, str] | None = None) -> dict:
    """Evaluate `ecfg.ckpt` on the checkpoint's data (with `data_overrides`); writes and returns metrics.

    Under torchrun the test clips are split over the processes, in blocks (rank r scores the r-th
    block of clips), and the main rank gathers every clip's scores and writes the files. A clip's
    futures depend only on (seed, clip index), so the figures are those of one process (to float
    rounding: convolutions may take other algorithms for other batch shapes).
    """
    ranks = setup(device=ecfg.device)
    try:
        return _evaluate(ecfg, data_overrides, ranks)
    finally:
        teardown(ranks)


def _evaluate(ecfg: EvalConfig, data_overrides: dict[str, str] | None, ranks: Ranks) -> dict:
    began = time.perf_counter()
    device = ranks.device
    model, cfg, bank, state = load_predictor(ecfg.ckpt, device, weights=ecfg.weights)
    objective = build_objective(cfg, model)
    data = dataclasses.replace(cfg.data)
    for key, value in (data_overrides or {}).items():
        set_key(data, key, value)
    if (data.size, data.channels) != (cfg.data.size, cfg.data.channels):
        raise ConfigError(f"the model was trained on {cfg.data.channels}x{cfg.data.size}x{cfg.data.size} frames; "
                          f"data.size/data.channels must match it")
    if data.size < SSIM_WINDOW:
        raise ConfigError(f"data.size={data.size}: SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels")
    model.check_context(ecfg.context, ConfigError)
    prior = ecfg.prior or cfg.prior.kind
    frames = ecfg.context + ecfg.horizon
    lpips, i3d = _perceptual_networks(ecfg, size=data.size, frames=frames, device=device)  # refused before sampling
    try:
        with local_first(ranks):  # a video folder is indexed once per node
            source = build_source(data, seed=ecfg.seed, split="test", frames=frames, context=ecfg.context)
    except ValueError as e:  # a data section that cannot make these clips
        raise ConfigError(f"data: {e}") from None
    if source.frames < frames:
        raise ConfigError(f"context + horizon = {frames} frames, but the test clips of {data.kind} have "
                          f"{source.frames}; shorten --context/--horizon")
    if len(source) < ecfg.clips:
        raise ConfigError(f"clips={ecfg.clips}, but the test split of {data.kind} has {len(source)} clips; "
                          f"pass --clips={len(source)} or fewer")
    out = Path(ecfg.out) if ecfg.out else run_home(ecfg.ckpt) / "eval"
    if ranks.main:
        out.mkdir(parents=True, exist_ok=True)
    share = -(-ecfg.clips // ranks.world)  # this rank's block of clips
    mine = range(ranks.rank * share, min(ecfg.clips, (ranks.rank + 1) * share))
    batch = ecfg.batch or _auto_batch(ecfg, data.channels, data.size)

    metric_fns = frame_metrics(lpips=lpips)
    per_frame = {g: {m: [] for m in metric_fns} for g in GROUPS + FLOORS}
    diversity, covered, shown = [], [], []
    fvd_real, fvd_sampled = [], []  # I3D features (n, 400) per batch: only these are kept for FVD
    enumerable = source.lists_futures
    bar = tqdm(total=len(mine), desc="evaluate", unit="clip", dynamic_ncols=True, disable=not ranks.main,
               mininterval=0.5 if sys.stderr.isatty() else 30.0)
    with torch.inference_mode():
        for start in range(mine.start, mine.stop, batch):
            idx = list(range(start, min(start + batch, mine.stop)))
            video = torch.stack([source[i][:frames] for i in idx]).to(device)
            context, truth = video[:, :ecfg.context], video[:, ecfg.context:]
            futures = sample_futures(objective, context, samples=ecfg.samples, horizon=ecfg.horizon, prior=prior,
                                     bank=bank, seed=ecfg.seed, clip_ids=idx, max_batch=ecfg.rollout_batch or None,
                                     background_fill=ecfg.background_fill)
            det = objective.deterministic(context, horizon=ecfg.horizon)  # (n, T, c, H, W)
            scores, svg_pick = score_clips(futures, det, context, truth, metric_fns)
            for group, per_metric in scores.items():
                for name, values in per_metric.items():
                    per_frame[group][name].append(values.cpu())
            diversity.append(pairwise_diversity(futures).cpu())
            if enumerable:
                truths = [torch.from_numpy(source.futures(i))[:, ecfg.context:frames].to(device) for i in idx]
                covered.append(coverage_per_frame(futures, truths).cpu())
            if i3d is not None:  # whole clips, context included, as the FVD paper and SRVP score them
                fvd_real.append(fvd_features(i3d, video).cpu())
                fvd_sampled.append(fvd_features(i3d, torch.cat([context, futures[:, 0]], dim=1)).cpu())
            for i in range(min(len(idx), ecfg.show - len(shown))):  # copies: a view would keep the whole batch
                shown.append([part.clone() for part in (context[i], truth[i], det[i], futures[i, svg_pick[i]],
                                                        futures[i, :ecfg.show_samples])])
            del futures, det  # before the next batch allocates its own: one batch of futures at a time
            bar.update(len(idx))
    bar.close()

    # every rank's clips, in clip order (the blocks are in rank order)
    local = {"scores": per_frame, "diversity": diversity, "covered": covered, "fvd_real": fvd_real,
             "fvd_sampled": fvd_sampled}
    parts = gather_objects(local, ranks)
    if not ranks.main:
        return {}
    per_frame = {g: {m: sum((p["scores"][g][m] for p in parts), []) for m in metric_fns} for g in per_frame}
    diversity, covered, fvd_real, fvd_sampled = (sum((p[k] for p in parts), [])
                                                 for k in ("diversity", "covered", "fvd_real", "fvd_sampled"))
    merged = {g: {m: torch.cat(v) for m, v in per.items()} for g, per in per_frame.items()}
    metrics = {
        "protocol": describe_protocol(ecfg, data, prior, int(state["step"]), lpips=lpips, weights=state["weights"],
                                      glide_draws=objective.model.decoder.trust is not None),
        **{g: summarize(merged[g]) for g in GROUPS},
        "floors": {g: summarize(merged[g]) for g in FLOORS},
    }
    metrics["diversity"], metrics["diversity_ci95"] = _interval(torch.cat(diversity))
    covered = torch.cat(covered) if covered else None  # (clips, T)
    metrics["coverage"], metrics["coverage_ci95"], metrics["coverage_per_frame"] = None, None, None
    if covered is not None:
        metrics["coverage"], metrics["coverage_ci95"] = _interval(covered.mean(dim=1))
        metrics["coverage_per_frame"] = covered.mean(dim=0).tolist()
    if i3d is not None:
        metrics["fvd"] = frechet_distance(torch.cat(fvd_real), torch.cat(fvd_sampled))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    save_per_frame_plot(out / "per_frame.png", metrics)
    written = [out / "metrics.json", out / "per_frame.png"]
    sheet = clip_video = None
    if shown:
        pictures = [torch.stack(parts).cpu() for parts in zip(*shown)]  # context, truth, det, best, samples
        sheet = out / "samples.png"
        save_samples_png(sheet, *pictures)
        written.append(sheet)
        if ecfg.video != "none":
            clip_video = out / f"samples.{ecfg.video}"
            save_video(clip_video, video_frames(*pictures))
            written.append(clip_video)
    # last, from the files just written: never a picture an earlier evaluation left in the folder
    save_report_html(out / "report.html", metrics, per_frame=out / "per_frame.png", samples=sheet, video=clip_video)
    written.append(out / "report.html")
    print(format_table(metrics))
    print(f"evaluated in {time.perf_counter() - began:.0f} s; wrote " + ", ".join(str(p) for p in written))
    return metrics
