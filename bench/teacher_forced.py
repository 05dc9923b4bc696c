"""Where a trained model loses, frame by frame, with the true past given: at the latent training infers,
at its single best guess, or at its prior's draws.

    python bench/teacher_forced.py CKPT [CKPT ...] [--clips=64 --samples=100 --context=5 --horizon=5
                                                   --seed=0 --prior=learned --json=FILE]

For each checkpoint (a run's `checkpoints/last.pt`, or an exported folder), on its own data's test
clips (evaluate.py's first `clips` for `--seed`), every predicted frame is decoded from the *true*
past frames (teacher forcing, as training sees them, no rollout) in three ways:

- `inferred`: at the latent training finds for the true frame (the energy model: the amortized guess
  and its inference steps, without channel noise; the VAE: the posterior mean). What the decoder can
  draw when z is right: the model's reconstruction, an upper line for its samples.
- `guess`: at the kind's single best guess (the energy model's z = 0, the VAE's prior mean).
- `best_of_k`: the best of K draws of the prior (`--prior`), per frame (each frame's K draws are
  independent given the true past, so the best is taken per frame, not per sequence as evaluate.py does).

Read the three lines together and against evaluate.py's rollout figures: a gap between `inferred` and
`best_of_k` is the prior's (it does not draw the latents inference finds); a low `inferred` is the
decoder's or the channel's (it cannot draw the frame even at the right z); good teacher-forced figures
and poor rollout ones are the rollout's (errors fed back). A chained prior is drawn here without the
previous frame's z. Figures are PSNR and SSIM of evaluate.py's metrics, means over clips.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import split_options  # noqa: E402  (bench/ is sys.path[0] when a bench runs)
from vidpred.build import build_energy, build_objective, build_source, load_predictor  # noqa: E402
from vidpred.checkpoint import CheckpointError  # noqa: E402
from vidpred.choices import PriorKind  # noqa: E402
from vidpred.config import ConfigError  # noqa: E402
from vidpred.metrics import FRAME_METRICS, frame_scores  # noqa: E402

GROUPS = {"inferred": "at the inferred z (training's)", "guess": "at the best guess",
          "best_of_k": "best of K prior draws"}
METRICS = {name: FRAME_METRICS[name] for name in ("psnr", "ssim")}
ROWS = 2000  # frames decoded at a time, about (clips at a time) x K x horizon


@dataclass
class TeacherForcedConfig:
    clips: int = 64  # test clips (evaluate.py's first `clips`)
    samples: int = 100  # K prior draws per predicted frame
    context: int = 5  # frames given
    horizon: int = 5  # frames predicted, each from the true frames before it
    seed: int = 0  # the test clips' seed (evaluate.py's --seed)
    prior: PriorKind = "learned"  # what the draws come from: learned | bank | fitted
    json: str = ""  # where to write the figures (empty: not written)


@torch.no_grad()
def decode_three_ways(objective, energy, video: torch.Tensor, *, context: int, samples: int,
                      draw) -> dict[str, torch.Tensor]:
    """video (n, context + T, c, H, W) -> per group, frames (n, K', T, c, H, W): K' = 1 for the inferred
    latent and the guess, K for the prior's draws."""
    model = objective.model
    n, horizon = video.shape[0], video.shape[1] - context
    cond, target = model.teacher_forced_pairs(video, context)  # (n T) rows, clip-major
    per_clip = lambda logits, k: torch.sigmoid(logits).view(n, horizon, k, *target.shape[1:]).transpose(1, 2)  # noqa: E731
    inferred = model.decode(cond, objective.target_latent(cond, target, energy))
    guess = model.decode(cond, objective.best_guess()(cond.h, 0))
    rows = cond.repeat(samples)  # each frame's K draws in a row
    drawn = model.decode(rows, draw(rows.h, 0))
    return {"inferred": per_clip(inferred, 1), "guess": per_clip(guess, 1), "best_of_k": per_clip(drawn, samples)}


def scores(ckpt: str, cfg: TeacherForcedConfig) -> dict:
    """Per group, the mean PSNR and SSIM per predicted frame and over them, on `cfg.clips` test clips."""
    model, run_cfg, bank, state = load_predictor(ckpt)
    objective, energy = build_objective(run_cfg, model), build_energy(run_cfg)
    source = build_source(run_cfg.data, seed=cfg.seed, split="test", frames=cfg.context + cfg.horizon,
                          context=cfg.context)
    if cfg.clips > len(source):
        raise ValueError(f"--clips={cfg.clips}: the test split of {ckpt}'s data has {len(source)} clips")
    model.check_context(cfg.context)
    generator = torch.Generator().manual_seed(cfg.seed)
    draw = objective.drawer(cfg.prior, bank, generator)
    sums = {group: {name: torch.zeros(cfg.horizon) for name in METRICS} for group in GROUPS}
    chunk = max(1, ROWS // (cfg.samples * cfg.horizon))  # clips at a time
    for first in range(0, cfg.clips, chunk):
        video = torch.stack([source[i] for i in range(first, min(first + chunk, cfg.clips))])
        truth = video[:, cfg.context:]
        for group, frames in decode_three_ways(objective, energy, video, context=cfg.context, samples=cfg.samples,
                                               draw=draw).items():
            for name, per in frame_scores(frames, truth, METRICS).items():  # (n, K', T)
                sums[group][name] += per.amax(dim=1).sum(dim=0)  # the best of the K' per frame (lower is worse)
    out = {"kind": run_cfg.model.kind, "step": state.get("step")}
    for group in GROUPS:
        out[group] = {}
        for name in METRICS:
            per_frame = (sums[group][name] / cfg.clips).tolist()
            out[group][name + "_per_frame"] = per_frame
            out[group][name] = sum(per_frame) / len(per_frame)
    return out


def report(ckpt: str, figures: dict, cfg: TeacherForcedConfig) -> str:
    lines = [f"{ckpt} ({figures['kind']}, step {figures['step']}): teacher-forced, {cfg.clips} clips, "
             f"{cfg.context} -> {cfg.horizon}, K = {cfg.samples} ({cfg.prior} prior)",
             f"  {'':32}{'PSNR per frame':>{7 * cfg.horizon}}    mean   SSIM mean"]
    for group, label in GROUPS.items():
        g = figures[group]
        per = "".join(f"{v:7.2f}" for v in g["psnr_per_frame"])
        lines.append(f"  {label:32}{per}  {g['psnr']:6.2f}   {g['ssim']:.4f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    cfg = TeacherForcedConfig()
    ckpts = [a for a in argv if not a.startswith("--")]
    try:
        rest = split_options([a for a in argv if a.startswith("--")], cfg)
        if rest:
            raise ConfigError(f"unknown option {rest[0]}: expected one of "
                              + ", ".join(f"--{f.name}" for f in dataclasses.fields(cfg)))
        if not ckpts:
            raise ConfigError("expected one or more checkpoints (a run's checkpoints/last.pt or an exported folder)")
        if cfg.clips < 1 or cfg.samples < 1 or cfg.horizon < 1:
            raise ConfigError(f"--clips, --samples and --horizon must be at least 1, got {cfg.clips}, "
                              f"{cfg.samples}, {cfg.horizon}")
    except ConfigError as e:
        print(f"teacher_forced.py: {e}", file=sys.stderr)
        return 2
    torch.manual_seed(cfg.seed)
    table = {}
    for ckpt in ckpts:
        start = time.perf_counter()
        try:
            table[ckpt] = scores(ckpt, cfg)
        except (CheckpointError, ValueError) as e:
            print(f"teacher_forced.py: {e}", file=sys.stderr)
            return 2
        print(report(ckpt, table[ckpt], cfg) + f"\n  ({time.perf_counter() - start:.0f} s)")
    if cfg.json:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json).write_text(json.dumps({"bench": dataclasses.asdict(cfg), "checkpoints": table}, indent=1))
        print(f"wrote {cfg.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
