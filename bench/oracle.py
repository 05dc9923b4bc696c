"""The ceiling of best of K on the moving-object data: what a perfect model, sampling the true futures, scores.

    python bench/oracle.py                                   # README's data: two sprites, stochastic bounces, 32x32
    python bench/oracle.py --data.bounce=discrete --data.objects=1 --clips=64   # bench/quality.py's data
    python bench/oracle.py --data.kind=mmnist --data.path=PATH/TO/mnist --seed=42   # data/smmnist_test.npy's clips
    python bench/oracle.py --eval=runs/default/eval/metrics.json    # a model's evaluation beside the ceiling

For each test clip (the clips `evaluate.py` scores: split test, `--seed`, 5 -> 20 frames) it draws
K futures from the generator itself: the same objects, moving on from the last context frame under
the same rules, with every later bounce drawn afresh (`BouncingObjects.sample_futures`). Those are
samples a perfect model would draw, so their best of K (the protocol of evaluate.py, same code) is
what no model can beat on average at that K, and their mean is the best single prediction in MSE
(the ideal z = 0). Read a model's per-frame figures against this ceiling as well as against the
blank floor: where the ceiling itself is near the floor, the data's futures have spread too far for
K samples to follow, and no model can be far above the floor there.

The draws know what the context frames show (each object, where it is and the velocity it moved by between the
last two), not what the generator drew beyond them: an object that bounced on the last context frame leaves it at
a velocity drawn afresh, since a model sees that velocity only one frame later. (Until 2026-12-07 the draws kept
the generator's own, a ceiling a model could not reach at the first predicted frames: bench/README.md.)
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidpred.build import build_source  # noqa: E402
from vidpred.config import ConfigError, parse_args  # noqa: E402
from vidpred.data.sprites import BouncingObjects  # noqa: E402
from vidpred.evaluation import score_clips, summarize  # noqa: E402
from common import split_options  # noqa: E402  (bench/ is sys.path[0] when a bench runs)

SHOWN_FRAMES = (1, 5, 10, 15, 20)  # predicted frames printed (those past the horizon are left out)
GROUPS = {"best_of_k": "best of K (perfect sampler)", "deterministic": "mean of the K (ideal z = 0)",
          "mean_of_k": "one draw", "blank": "blank frame (floor)"}


@dataclass
class OracleConfig:
    clips: int = 256  # test clips (evaluate.py's first `clips`)
    samples: int = 100  # K futures drawn per clip
    context: int = 5  # frames given
    horizon: int = 20  # frames predicted and scored
    seed: int = 0  # the test clips' seed (evaluate.py's --seed; 42 for data/smmnist_test.npy's clips)
    eval: str = ""  # a model's evaluate.py metrics.json, printed beside the ceiling (same clips and protocol)
    json: str = ""  # where to write the figures (empty: not written)


def ceiling(cfg: OracleConfig, data_args: list[str]) -> dict:
    """Per group of GROUPS, evaluate.py's summary (means, 95% intervals, per frame, per clip)."""
    for name in ("clips", "samples", "horizon"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name}={getattr(cfg, name)}: expected at least 1")
    if cfg.context < 2:
        raise ConfigError(f"context={cfg.context}: expected at least 2 frames (one frame shows no velocity to go on at)")
    data = parse_args(data_args).data
    source = build_source(data, seed=cfg.seed, split="test", frames=cfg.context + cfg.horizon, context=cfg.context)
    if not isinstance(source, BouncingObjects):
        raise ConfigError(f"data.kind={data.kind}: the ceiling needs a generator of moving objects (sprites or mmnist) "
                          "to draw true futures from")
    per_frame = {g: {"psnr": [], "ssim": []} for g in GROUPS}
    for i in range(cfg.clips):
        video = torch.from_numpy(source.clip(i))
        draws = torch.from_numpy(source.sample_futures(i, cfg.samples, np.random.default_rng([cfg.seed, 7, i])))
        context, truth, futures = video[None, :cfg.context], video[None, cfg.context:], draws[None, :, cfg.context:]
        scores, _ = score_clips(futures, futures.mean(dim=1), context, truth)
        for group in GROUPS:
            for name in ("psnr", "ssim"):
                per_frame[group][name].append(scores[group][name])
    return {group: summarize({m: torch.cat(v) for m, v in per.items()}) for group, per in per_frame.items()}


def format_report(figures: dict, cfg: OracleConfig, model: dict | None) -> str:
    shown = [t for t in SHOWN_FRAMES if t <= cfg.horizon]
    head = f"{'':34}{'PSNR':>8}{'SSIM':>8}   PSNR at " + " / ".join(map(str, shown)) + "   SSIM at the same frames"
    lines = [head]
    rows = dict(figures)
    if model is not None:
        rows["model"] = {m: model["best_of_k"][m] for m in ("psnr", "ssim")} | {
            f"{m}_per_frame": model["best_of_k"][f"{m}_per_frame"] for m in ("psnr", "ssim")}
    for group, f in rows.items():
        label = GROUPS.get(group, "the model's best of K (--eval)")
        psnr = " / ".join(f"{f['psnr_per_frame'][t - 1]:.2f}" for t in shown)
        ssim = " / ".join(f"{f['ssim_per_frame'][t - 1]:.3f}" for t in shown)
        lines.append(f"{label:34}{f['psnr']:>8.2f}{f['ssim']:>8.4f}   {psnr}   {ssim}")
    blank = figures["blank"]
    for group in ("best_of_k", "deterministic") + (("model",) if model is not None else ()):
        f = rows[group]
        over = [(np.array(f[f"{m}_per_frame"]) - np.array(blank[f"{m}_per_frame"])) for m in ("psnr", "ssim")]
        lines.append(f"{GROUPS.get(group, 'the model'):34}above the blank floor at {int((over[0] > 0).sum())} of "
                     f"{cfg.horizon} frames in PSNR ({over[0][-1]:+.2f} dB at frame {cfg.horizon}), "
                     f"{int((over[1] > 0).sum())} in SSIM ({over[1][-1]:+.3f} at {cfg.horizon})")
    return "\n".join(lines)


def read_model(path: str) -> dict:
    """A model's evaluate.py metrics.json, read before the ceiling is drawn so that a wrong path costs nothing."""
    try:
        model = json.loads(Path(path).read_text())
        model["floors"]["blank"]["psnr_per_clip"]  # a KeyError names what is missing
        for key in ("psnr", "ssim", "psnr_per_frame", "ssim_per_frame"):
            model["best_of_k"][key]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"eval={path}: not an evaluate.py metrics.json ({type(e).__name__}: {e})") from None
    return model


def check_same_clips(model: dict, path: str, cfg: OracleConfig, figures: dict) -> None:
    """Refuse a model's evaluation unless it scored the same clips over the same horizon as the ceiling."""
    blank = model["floors"]["blank"]["psnr_per_clip"]
    frames = len(model["best_of_k"]["psnr_per_frame"])
    ours = figures["blank"]["psnr_per_clip"]
    if frames != cfg.horizon or len(blank) != len(ours) or not np.allclose(blank, ours, atol=0.05):
        raise ConfigError(f"eval={path}: it scored {len(blank)} clips over {frames} frames whose blank floor differs "
                          f"from these {len(ours)} clips over {cfg.horizon}; pass the same --clips, --seed, --horizon "
                          "and data options it was evaluated with")


def main(argv: list[str]) -> int:
    cfg = OracleConfig()
    began = time.perf_counter()
    try:
        data_args = split_options(argv, cfg)
        model = read_model(cfg.eval) if cfg.eval else None
        figures = ceiling(cfg, data_args)
        if model is not None:
            check_same_clips(model, cfg.eval, cfg, figures)
    except (ConfigError, ValueError) as e:
        print(f"oracle.py: {e}", file=sys.stderr)
        return 2
    print(f"{cfg.clips} test clips (seed {cfg.seed}), {cfg.context} -> {cfg.horizon} frames, K = {cfg.samples} "
          f"true futures a clip, data {' '.join(data_args) or '(the defaults)'}; {time.perf_counter() - began:.0f} s")
    print(format_report(figures, cfg, model))
    if cfg.json:
        path = Path(cfg.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"oracle": dataclasses.asdict(cfg), "data_overrides": data_args, **figures}, indent=2)
                        + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
