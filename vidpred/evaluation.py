"""The evaluation protocol: K sampled futures per test clip, scored frame by frame against the truth.

Reports (DESIGN sections 5 and 6): best of K per metric, mean of K, the deterministic prediction
(z = 0), each as a mean over clips with a 95% interval and per-frame curves; the diversity of the
K futures; mode coverage where the data can enumerate its true futures; and the trivial floors
(a blank frame, a copy of the last context frame) that any model must beat to mean something.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image
from tqdm import tqdm

from .checkpoint import load_predictor
from .config import ConfigError, DataConfig, parse_overrides, set_key, to_dict
from .data import build_source
from .metrics import FRAME_METRICS, best_of_k, coverage, frame_scores, mean_ci95, pairwise_diversity
from .sampling import PRIOR_KINDS, deterministic_future, sample_futures
from .training import resolve_device


@dataclass
class EvalConfig:
    ckpt: str = ""  # checkpoint to evaluate (required)
    out: str = ""  # output folder; empty means <run folder>/eval
    samples: int = 100  # K futures per clip
    context: int = 5  # frames given
    horizon: int = 20  # frames predicted and scored
    clips: int = 256  # test clips
    seed: int = 0  # seeds the test clips and the sampled latents
    prior: str = ""  # bank | fitted | learned; empty: what the checkpoint was trained to use
    batch: int = 8  # clips rolled out together (each with K futures)
    show: int = 4  # clips drawn in samples.png
    device: str = "auto"


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
    for key in ("samples", "context", "horizon", "clips", "batch"):
        if getattr(ecfg, key) <= 0:
            raise ConfigError(f"{key}={getattr(ecfg, key)}: expected a positive number")
    if ecfg.prior and ecfg.prior not in PRIOR_KINDS:
        raise ConfigError(f"prior={ecfg.prior!r}: expected one of {', '.join(PRIOR_KINDS)}")
    return ecfg, data_overrides


def _summarize(per_clip_frames: Tensor) -> dict:
    """(n, T) scores -> mean over clips of the time average, its 95% interval, per-frame means."""
    mean, ci = mean_ci95(per_clip_frames.mean(dim=1))
    return {"mean": mean, "ci95": ci, "per_frame": per_clip_frames.mean(dim=0).tolist()}


def _group(per_metric: dict[str, Tensor]) -> dict:
    out = {}
    for name, frames in per_metric.items():
        s = _summarize(frames)
        out[name] = s["mean"]
        out[f"{name}_ci95"] = s["ci95"]
        out[f"{name}_per_frame"] = s["per_frame"]
    return out


def _row(context: Tensor, future: Tensor) -> Tensor:
    return torch.cat([context, future], dim=0)  # (C0 + T, c, H, W)


def save_samples_png(path: Path, context: Tensor, truth: Tensor, det: Tensor, futures: Tensor,
                     best: Tensor, rows: int = 4) -> None:
    """One block per clip: ground truth, deterministic, the best-of-K sample, then sampled futures;
    each row shows the context frames followed by the predicted ones."""
    blocks = []
    for i in range(context.shape[0]):
        lines = [_row(context[i], truth[i]), _row(context[i], det[i]), _row(context[i], futures[i, best[i]])]
        lines += [_row(context[i], futures[i, k]) for k in range(min(rows, futures.shape[1]))]
        blocks.append(torch.stack(lines))
    frames = torch.cat(blocks).flatten(0, 1).float().cpu()
    grid = make_grid(frames, nrow=context.shape[1] + truth.shape[1], padding=1, pad_value=0.5)
    save_image(grid, path)


def evaluate(ecfg: EvalConfig, data_overrides: dict[str, str] | None = None) -> dict:
    """Evaluate `ecfg.ckpt` on the checkpoint's data (with `data_overrides`); writes and returns metrics."""
    device = resolve_device(ecfg.device)
    model, cfg, bank, _ = load_predictor(ecfg.ckpt, device)
    data = dataclasses.replace(cfg.data)
    for key, value in (data_overrides or {}).items():
        set_key(data, key, value)
    if (data.size, data.channels) != (cfg.data.size, cfg.data.channels):
        raise ConfigError(f"the model was trained on {cfg.data.channels}x{cfg.data.size}x{cfg.data.size} frames; "
                          f"data.size/data.channels must match it")
    if ecfg.context < model.window:
        raise ConfigError(f"context={ecfg.context}: this model's predictor needs at least {model.window} frames")
    prior = ecfg.prior or cfg.prior.kind
    frames = ecfg.context + ecfg.horizon
    source = build_source(data, seed=ecfg.seed, split="test", frames=frames, context=ecfg.context)
    if source.frames < frames:
        raise ConfigError(f"context + horizon = {frames} frames, but the test clips of {data.kind} have "
                          f"{source.frames}; shorten --context/--horizon")
    out = Path(ecfg.out) if ecfg.out else Path(ecfg.ckpt).resolve().parent.parent / "eval"
    out.mkdir(parents=True, exist_ok=True)

    groups = {g: {m: [] for m in FRAME_METRICS} for g in ("best_of_k", "mean_of_k", "deterministic",
                                                          "blank", "copy_last")}
    diversity, covered, shown = [], [], None
    enumerable = hasattr(source, "futures")
    n_clips = min(ecfg.clips, len(source))
    bar = tqdm(total=n_clips, desc="evaluate", unit="clip", dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 30.0)
    for start in range(0, n_clips, ecfg.batch):
        idx = range(start, min(start + ecfg.batch, n_clips))
        video = torch.stack([source[i][:frames] for i in idx]).to(device)
        context, truth = video[:, :ecfg.context], video[:, ecfg.context:]
        futures = sample_futures(model, context, samples=ecfg.samples, horizon=ecfg.horizon, prior=prior,
                                 bank=bank, seed=ecfg.seed * 1_000_003 + start)  # (n, K, T, c, H, W)
        det = deterministic_future(model, context, horizon=ecfg.horizon)
        scores = frame_scores(futures, truth)
        det_scores = frame_scores(det[:, None], truth)
        blank = frame_scores(torch.zeros_like(truth)[:, None], truth)
        copy = frame_scores(context[:, -1:].expand_as(truth)[:, None], truth)
        for name, (_, higher) in FRAME_METRICS.items():
            groups["best_of_k"][name].append(best_of_k(scores[name], higher).cpu())
            groups["mean_of_k"][name].append(scores[name].mean(dim=1).cpu())
            groups["deterministic"][name].append(det_scores[name][:, 0].cpu())
            groups["blank"][name].append(blank[name][:, 0].cpu())
            groups["copy_last"][name].append(copy[name][:, 0].cpu())
        diversity.append(pairwise_diversity(futures).cpu())
        if enumerable:
            truths = [torch.from_numpy(source.futures(i))[:, ecfg.context:frames].to(device) for i in idx]
            covered.append(coverage(futures, truths).cpu())
        if shown is None:
            best = scores["ssim"].mean(dim=2).argmax(dim=1)
            shown = (context[:ecfg.show], truth[:ecfg.show], det[:ecfg.show], futures[:ecfg.show], best[:ecfg.show])
        bar.update(len(idx))
    bar.close()

    merged = {g: {m: torch.cat(v) for m, v in per.items()} for g, per in groups.items()}
    metrics = {
        "protocol": {"context": ecfg.context, "horizon": ecfg.horizon, "samples": ecfg.samples, "clips": n_clips,
                     "data": to_dict(data), "seed": ecfg.seed, "prior": prior, "checkpoint": str(ecfg.ckpt),
                     "best_of_k": "per clip, the sample with the best time-averaged score, chosen per metric",
                     "psnr": "data_range 1, capped at 100 dB", "ssim": "gaussian window 11, sigma 1.5, data_range 1"},
        **{g: _group(merged[g]) for g in ("best_of_k", "mean_of_k", "deterministic")},
        "floors": {g: {m: merged[g][m].mean().item() for m in FRAME_METRICS} for g in ("blank", "copy_last")},
        "diversity": mean_ci95(torch.cat(diversity))[0],
        "diversity_metric": "mean pairwise per-pixel L1 distance between the K futures of a clip",
        "coverage": mean_ci95(torch.cat(covered))[0] if covered else None,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    save_samples_png(out / "samples.png", *shown)
    print(format_table(metrics))
    print(f"wrote {out / 'metrics.json'} and {out / 'samples.png'}")
    return metrics


def format_table(metrics: dict) -> str:
    p = metrics["protocol"]
    lines = [f"{p['context']} -> {p['horizon']} frames, K = {p['samples']}, {p['clips']} clips, "
             f"prior {p['prior']}, data {p['data']['kind']}",
             f"{'':16}{'PSNR':>16}{'SSIM':>18}{'MSE':>10}"]
    for g in ("best_of_k", "mean_of_k", "deterministic"):
        m = metrics[g]
        lines.append(f"{g:16}{m['psnr']:9.2f} ± {m['psnr_ci95']:4.2f}{m['ssim']:11.4f} ± {m['ssim_ci95']:5.4f}"
                     f"{m['mse']:10.5f}")
    for g, m in metrics["floors"].items():
        lines.append(f"{g + ' (floor)':16}{m['psnr']:9.2f}{'':7}{m['ssim']:11.4f}{'':8}{m['mse']:10.5f}")
    cov = metrics["coverage"]
    lines.append(f"diversity {metrics['diversity']:.4f}   coverage {'n/a' if cov is None else f'{cov:.3f}'}")
    return "\n".join(lines)
