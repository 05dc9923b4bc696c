"""Quality at equal wall-clock budget: every model trained for the same minutes on the same data,
scored by the same evaluation protocol, side by side.

    python bench/quality.py [--minutes=4 --equal_steps=0 --models=all --clips=64 --samples=100 --eval_context=5
                             --eval_horizon=20 --warmup_steps=10 --reference=energy --out=runs/bench/quality
                             --json=runs/bench/quality.json]
                            [training overrides for every model, e.g. --batch_size=32 --horizon=10 --data.objects=2]

Models (`--models=energy,vae,...` picks some):

    energy          the default energy model: one inference step from the amortized guess, taken in the
                    training pass's backward (latent.fused), the noisy channel (z in the ball of radius 2,
                    decoded at z + 0.75·ε) and latent dropout; the default decoder, which since 2026-12-06 is
                    the glide decoder with its trust mask (the pixels decoder before: the figures in
                    bench/README.md until stop 44 were measured with it: add --model.decoder=pixels to repeat
                    them). The baselines below take the same decoder
    energy_separate the default until 2026-12-04: the same step in separate decoder passes (latent.fused=false;
                    four decoder passes a step against two). The models below measured before that date
                    (joint ... step0.3, former ... dropout, noise ..., target_noise_b2) keep the separate step
    energy_rollout_late
                    the default, teacher-forced for 2000 steps, then trained free-running (rollout=true: its own
                    predictions fed back, with gradients; the fused step then descends the rest of the
                    rollout's energy)
    energy_recurrent
                    the default with a ConvGRU memory in the predictor, carried through the clip (model.recurrent)
    energy_context_skips, energy_both_skips, energy_content, energy_content_context_skips, energy_recall,
    energy_recall_context_skips
                    decoder options of stops 24-25: skips from the context frames (or both), a pooled content code,
                    recall (attention to the context's bottlenecks); see PLAIN, CONTENT, RECALL below
    energy_recall_target
                    recall + context skips with A reading the state and the target's features (model.encoder_reads=
                    target; since stop 26 A's gradient stops at its input, as the residual path's does)
    energy_joint1e-4, energy_joint1e-3, energy_joint1e-2
                    the separate default with the prior trained jointly (latent.prior_weight = 1e-4 / 1e-3 / 1e-2,
                    ramped over 300 steps): -log p(z | h) of the sent latent pulls the state, prior and A
    energy_steps0   N = 0: the amortized guess alone, through the noisy channel
    energy_step0.3  the separate default with a first inference step of 0.3 per entry (latent.step_size) instead
                    of 0.03 (against the channel's σ = 0.75); energy_steps3_step0.3 with N = 3 such steps
    energy_former   the default until 2026-12-04: l1 sparsity (0.01) and latent dropout, no ball, no noise.
                    The ablations below (n0 ... push2, target, target_l1_0, l1, ball, dropout) are changes
                    of this former default, as they were measured (bench/README.md)
    energy_n0       the same with N = 0: the amortized guess alone (an autoencoder, EEN-like)
    energy_n3       the same with N = 3 inference steps
    energy_n10      the same with N = 10 inference steps
    energy_n0_l1_0  N = 0 and no l1: the amortized guess alone, z limited by its dimension and dropout only
    energy_draws    inference from the best of 16 draws of the learned prior (latent.draws), then N steps
    energy_push1, energy_push2
                    trained on its own predictions, 1 or 2 rounds deep, as inputs (the pushforward trick)
    energy_noise    a noisy channel instead of sparsity: z* inside the ball of radius 1, decoded at z* + 0.75·ε
                    (latent.noise), no l1; energy_noise_b2 / _b4 with radius 2 / 4, energy_noise_d0 without latent dropout
    energy_target   the amortized encoder reads the state and the target's features (model.encoder_reads=target)
                    instead of the residual; energy_target_l1_0 without l1, energy_target_noise_b2 with the
                    noisy channel of energy_noise_b2 (measured before stop 26, when A's gradient still reached the frame encoder
                    and the predictor)
    energy_l1       l1 sparsity only (no latent dropout)
    energy_ball     z projected onto the ball of radius 1 only (GLO; no l1, no dropout)
    energy_dropout  latent dropout only (no l1)
    deterministic   no latent: z = 0 (baselines.py)
    vae             SVG-LP-style VAE with a learned prior, beta = latent.kl_weight (baselines.py):
                    1e-3, the exact negative ELBO per pixel of 32x32 frames under our BCE cost
    vae_beta1e-4    the same with beta = 1e-4 (SVG's value): z may carry more
    vae_warm1e-3, vae_warm1e-4, vae_warm1e-5
                    the VAE at beta 1e-3, 1e-4, 1e-5 with KL warm-up (beta rises from 0 over 300 steps)

The data default to the built-in sprites with discrete bounces and one object per clip
(`--data.bounce=discrete --data.objects=1`): each bounce picks one of `data.branches` directions, so
the true futures of a test clip can be listed and the evaluation reports mode coverage (the share of
them that some sample matches). Over 5 -> 20 frames a test clip has a median of 17 futures.
Training uses the default step (16 clips of 5 -> 5 frames), which buys about a thousand steps in
4 minutes on 2 cores; the test protocol is the full 5 -> 20 frames with K = 100.

The budget: each model first trains `warmup_steps` steps in a throw-away run; its measured clips/s
(the last log window, which excludes start-up) sets the number of steps that fill `minutes`, so
the learning-rate schedule runs to its end; `--max_minutes=minutes` caps the real run in case the
estimate was optimistic (the table shows planned and reached steps, and the seconds trained). The
final prior refit, validation and previews are off or outside the budget. Every model is then scored
by `vidpred.evaluation.evaluate` with K samples on the same test clips.
With `--equal_steps=N` every model trains N steps instead (no timing run, no time cap): the
comparison at equal steps rather than equal wall clock.

Every model is evaluated on the same test clips, so each is also compared with `--reference` clip by
clip: the table gives the mean of the per-clip difference in best-of-K PSNR and SSIM with its paired
95% interval (1.96 standard errors of the differences), which is much tighter than comparing the
two models' own intervals.
Figures taken while other jobs load the machine are disturbed: the JSON records the load average
before and after each model.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import load_average, split_options  # noqa: E402  (bench/ is sys.path[0] when a bench runs)
from vidpred.config import ConfigError, parse_args  # noqa: E402
from vidpred.evaluation import EvalConfig, evaluate  # noqa: E402
from vidpred.training import train  # noqa: E402

PLAIN = ["--model.skips=recent", "--model.content=0"]  # the decoder of every model until stop 24: skips from the newest frames, no content code
CONTENT = ["--model.skips=context", "--model.content=32"]  # stop 24's option: skips from the context frames and a content code
RECALL = ["--model.skips=context", "--model.content=0", "--model.recall=true"]  # stop 25's: context skips and recall
SEPARATE = PLAIN + ["--latent.fused=false"]  # the energy default until the fused step (2026-12-04): the step in separate passes
FORMER = SEPARATE + ["--latent.l1=0.01", "--latent.ball=0", "--latent.noise=0"]  # the energy default until 2026-12-04
MODELS = {
    "energy": [],
    "energy_plain": PLAIN,  # the default, pinned: the fused step, the plain decoder
    "energy_separate": SEPARATE,
    "energy_rollout_late": PLAIN + ["--rollout=true", "--rollout_start=2000"],
    "energy_recurrent": PLAIN + ["--model.recurrent=true"],
    "energy_context_skips": ["--model.skips=context", "--model.content=0"],
    "energy_both_skips": ["--model.skips=both", "--model.content=0"],
    "energy_content": ["--model.skips=recent", "--model.content=32"],
    "energy_content_context_skips": CONTENT,
    "energy_recall": PLAIN + ["--model.recall=true"],
    "energy_recall_context_skips": RECALL,
    "energy_recall_target": RECALL + ["--model.encoder_reads=target"],
    **{f"energy_joint{w}": SEPARATE + [f"--latent.prior_weight={w}", "--latent.kl_warmup=300"]
       for w in ("1e-4", "1e-3", "1e-2")},
    "energy_steps0": PLAIN + ["--latent.steps=0"],
    "energy_step0.3": SEPARATE + ["--latent.step_size=0.3"],
    "energy_steps3_step0.3": PLAIN + ["--latent.steps=3", "--latent.step_size=0.3"],
    "energy_former": FORMER,
    "energy_n0": FORMER + ["--latent.steps=0"],
    "energy_n3": FORMER + ["--latent.steps=3"],
    "energy_n10": FORMER + ["--latent.steps=10"],
    "energy_n0_l1_0": FORMER + ["--latent.steps=0", "--latent.l1=0"],
    "energy_draws": FORMER + ["--latent.draws=16"],
    "energy_push1": FORMER + ["--pushforward=1"],
    "energy_push2": FORMER + ["--pushforward=2"],
    "energy_noise": SEPARATE + ["--latent.l1=0", "--latent.ball=1", "--latent.noise=0.75"],
    "energy_noise_b2": SEPARATE + ["--latent.l1=0", "--latent.ball=2", "--latent.noise=0.75"],
    "energy_noise_d0": SEPARATE + ["--latent.l1=0", "--latent.ball=1", "--latent.noise=0.75", "--latent.dropout=0"],
    "energy_noise_b4": SEPARATE + ["--latent.l1=0", "--latent.ball=4", "--latent.noise=0.75"],
    "energy_target": FORMER + ["--model.encoder_reads=target"],
    "energy_target_l1_0": FORMER + ["--model.encoder_reads=target", "--latent.l1=0"],
    "energy_target_noise_b2": SEPARATE + ["--model.encoder_reads=target", "--latent.l1=0", "--latent.ball=2",
                                          "--latent.noise=0.75"],
    "energy_l1": FORMER + ["--latent.dropout=0"],
    "energy_ball": FORMER + ["--latent.l1=0", "--latent.dropout=0", "--latent.ball=1"],
    "energy_dropout": FORMER + ["--latent.l1=0"],
    # the baselines as measured before stop 24, on the plain decoder ...
    "deterministic": PLAIN + ["--model.kind=deterministic"],
    "vae": PLAIN + ["--model.kind=vae"],
    "vae_beta1e-4": PLAIN + ["--model.kind=vae", "--latent.kl_weight=1e-4"],
    **{f"vae_warm{b}": PLAIN + ["--model.kind=vae", f"--latent.kl_weight={b}", "--latent.kl_warmup=300"]
       for b in ("1e-3", "1e-4", "1e-5")},
    # ... and on the network with context skips and the content code
    "deterministic_content": CONTENT + ["--model.kind=deterministic"],
    **{f"vae_content_warm{b}": CONTENT + ["--model.kind=vae", f"--latent.kl_weight={b}", "--latent.kl_warmup=300"]
       for b in ("1e-3", "1e-4", "1e-5")},
    # ... and on the network with context skips and recall
    **{f"vae_recall_warm{b}": RECALL + ["--model.kind=vae", f"--latent.kl_weight={b}", "--latent.kl_warmup=300"]
       for b in ("1e-3", "1e-4", "1e-5")},
}
DATA = ["--data.bounce=discrete", "--data.objects=1"]  # enumerable futures: coverage can be measured
QUIET = ["--wandb=disabled", "--val_every=0", "--media_every=0"]  # nothing outside the training steps


@dataclass
class BenchConfig:
    minutes: float = 4.0  # training wall clock per model
    equal_steps: int = 0  # > 0: every model trains this many steps instead (equal steps, not equal wall clock)
    reference: str = "energy"  # the model every other is compared with, clip by clip
    models: tuple[str, ...] = tuple(MODELS)
    clips: int = 64  # test clips
    samples: int = 100  # K futures per clip
    eval_context: int = 5  # frames given at test time ...
    eval_horizon: int = 20  # ... and frames predicted and scored (training uses --context / --horizon)
    seed: int = 0  # seeds training and the test clips
    warmup_steps: int = 10  # steps of the timing run that sets each model's step count
    out: str = "runs/bench/quality"
    json: str = "runs/bench/quality.json"


def seconds_per_step(args: list[str], bench: BenchConfig, folder: Path) -> float:
    """Step time of a short throw-away run of the same configuration, from its last log window."""
    window = max(1, bench.warmup_steps // 2)
    cfg = parse_args(args + [f"--out={folder}", f"--steps={2 * window}", f"--log_every={window}",
                             "--prior.fit_clips=8", "--overwrite=true"])  # a throw-away run, redone each time
    train(cfg)
    last = json.loads((folder / "log.jsonl").read_text().splitlines()[-1])
    return cfg.batch_size / last["clips_per_s"]


def run_model(name: str, common: list[str], bench: BenchConfig) -> dict:
    folder = Path(bench.out) / name
    args = common + MODELS[name] + [f"--seed={bench.seed}"]
    load_before = load_average()
    if bench.equal_steps:
        step_s, planned, cap = float("nan"), bench.equal_steps, []
    else:
        step_s = seconds_per_step(args, bench, folder / "timing")
        planned, cap = max(1, math.floor(60 * bench.minutes / step_s)), [f"--max_minutes={bench.minutes}"]
    cfg = parse_args(args + [f"--out={folder / 'run'}", f"--steps={planned}", *cap,
                             f"--log_every={max(1, planned // 20)}", f"--ckpt_every={planned}",
                             "--overwrite=true"])  # a rerun of the bench measures afresh
    print(f"\n== {name}: {planned} steps" + ("" if bench.equal_steps else
                                              f" ({step_s:.2f} s per step in the timing run, {bench.minutes} minutes)"))
    start = time.perf_counter()
    ckpt = train(cfg)
    trained_s = time.perf_counter() - start  # everything train() does, start-up and prior refit included
    records = [json.loads(line) for line in (folder / "run" / "log.jsonl").read_text().splitlines()]
    busy = sum(cfg.batch_size * (r["step"] - p) / r["clips_per_s"]
               for p, r in zip([0] + [r["step"] for r in records], records))  # time in the logged steps
    load_after = load_average()
    metrics = evaluate(EvalConfig(ckpt=str(ckpt), out=str(folder / "eval"), samples=bench.samples,
                                  context=bench.eval_context, horizon=bench.eval_horizon, clips=bench.clips, seed=bench.seed,
                                  device=cfg.device))
    reached = metrics["protocol"]["checkpoint_step"]  # the step the trained checkpoint holds
    row = {"model": name, "overrides": MODELS[name], "planned_steps": planned, "steps": reached,
           "step_s_timing_run": step_s, "train_steps_s": busy, "train_call_s": trained_s,
           "load_before": load_before, "load_after_training": load_after, "load_after_eval": load_average(),
           "last_log": records[-1] if records else {}}
    for group in ("best_of_k", "mean_of_k", "deterministic"):
        row[group] = {k: metrics[group][k] for k in ("psnr", "psnr_ci95", "ssim", "ssim_ci95", "mse")}
    row["per_clip"] = {m: metrics["best_of_k"][f"{m}_per_clip"] for m in ("psnr", "ssim")}  # for paired comparisons
    row["per_frame"] = {m: metrics["best_of_k"][f"{m}_per_frame"] for m in ("psnr", "ssim")}
    row["floor_per_frame"] = {m: metrics["floors"]["blank"][f"{m}_per_frame"] for m in ("psnr", "ssim")}
    row["coverage_per_frame"] = metrics.get("coverage_per_frame")
    row["diversity"], row["coverage"] = metrics["diversity"], metrics["coverage"]
    row["floors"] = metrics.get("floors")
    return row


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """The mean of the per-clip differences a - b and its 95% half-width (1.96 standard errors)."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    mean = sum(d) / len(d)
    if len(d) < 2:
        return mean, float("nan")
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1))
    return mean, 1.96 * sd / math.sqrt(len(d))


def format_table(rows: list[dict], bench: BenchConfig) -> str:
    budget = f"{bench.equal_steps} steps" if bench.equal_steps else f"{bench.minutes:g} training minutes"
    ref = next((r for r in rows if r["model"] == bench.reference), None)
    width = max([15] + [len(r["model"]) + 1 for r in rows])  # the model column fits the longest name
    lines = [f"{bench.eval_context} -> {bench.eval_horizon} frames, K = {bench.samples}, {bench.clips} test clips, "
             f"{budget} per model; PSNR / SSIM as mean ± 95% interval; vs {bench.reference}: the paired "
             "difference in best-of-K PSNR / SSIM over the same clips",
             f"{'model':{width}}{'steps':>11}{'best-of-K PSNR':>17}{'SSIM':>16}{'mean-of-K PSNR':>17}{'SSIM':>16}"
             f"{'z=0 PSNR':>10}{'SSIM':>8}{'divers.':>9}{'cover.':>8}{'vs ref PSNR':>17}{'SSIM':>18}"]
    for r in rows:
        b, m, d = r["best_of_k"], r["mean_of_k"], r["deterministic"]
        cov = "n/a" if r["coverage"] is None else f"{r['coverage']:.3f}"
        versus = ""
        if ref is not None and r is not ref:
            (dp, hp), (ds, hs) = (paired(r["per_clip"][k], ref["per_clip"][k]) for k in ("psnr", "ssim"))
            versus = f"{dp:>+10.2f} ± {hp:4.2f}{ds:>+10.4f} ± {hs:5.4f}"
        lines.append(f"{r['model']:{width}}{r['steps']:>5}/{r['planned_steps']:<5}"
                     f"{b['psnr']:>10.2f} ± {b['psnr_ci95']:4.2f}{b['ssim']:>9.4f} ± {b['ssim_ci95']:5.4f}"
                     f"{m['psnr']:>10.2f} ± {m['psnr_ci95']:4.2f}{m['ssim']:>9.4f} ± {m['ssim_ci95']:5.4f}"
                     f"{d['psnr']:>10.2f}{d['ssim']:>8.4f}{r['diversity']:>9.4f}{cov:>8}{versus}")
    floors = rows[0].get("floors") if rows else None
    if floors:
        lines.append("floors: " + ", ".join(f"{k} PSNR {v['psnr']:.2f} SSIM {v['ssim']:.4f}" for k, v in floors.items()))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    bench = BenchConfig()
    try:
        common = DATA + split_options(argv, bench)  # later options win, so these override DATA
        if bench.models == ("all",):
            bench.models = tuple(MODELS)
        unknown = [m for m in bench.models if m not in MODELS]
        if unknown:
            raise ConfigError(f"models={','.join(unknown)}: expected some of {', '.join(MODELS)} (or all)")
        common += QUIET
        for name in bench.models:
            parse_args(common + MODELS[name])  # refuse a bad override before anything trains
    except ConfigError as e:
        print(f"quality.py: {e}", file=sys.stderr)
        return 2
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "bench": dataclasses.asdict(bench),
              "common_overrides": common, "load_average_start": load_average(), "models": []}
    for name in bench.models:
        report["models"].append(run_model(name, common, bench))
        path = Path(bench.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")  # after every model: a crash keeps what was done
    report["load_average_end"] = load_average()
    Path(bench.json).write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + format_table(report["models"], bench))
    print(f"load average: {report['load_average_start']} at the start, {report['load_average_end']} at the end; "
          f"wrote {bench.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
