"""Where evaluation time goes, and its peak memory, for the protocol's K = 100, T = 20.

    python bench/evaluation_cost.py [--size=64 --channels=1 --samples=100 --horizon=20 --clips=8 --time_clips=4]
                                    [model options, e.g. --model.recall=true --model.skips=context]
    python bench/evaluation_cost.py --ckpt=runs/NAME/checkpoints/last.pt [--samples=100 ...]

Builds an untrained model of the default architecture (or of the one the model options describe) at
the given frame size, or loads `--ckpt` (its own data and frame size): trained weights matter where a glide
decoder's trust mask decides which futures run the network. Runs the whole evaluate() on `clips` clips in a fresh
process and reports its peak resident memory beside that of a process that only loads the model,
then times `time_clips` clips part by part, and the rollouts' own parts (timers around the model's methods, which,
unlike cProfile, do not weigh Python-heavy code 2-3x). Figures are wall-clock seconds on this machine: compare
ratios within one run, not across machines or busy periods.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import split_options  # noqa: E402  (bench/ is sys.path[0] when a bench runs)
from vidpred.build import build_model, build_objective, build_source, load_predictor  # noqa: E402
from vidpred.checkpoint import save_checkpoint  # noqa: E402
from vidpred.config import ConfigError, parse_args, to_dict  # noqa: E402
from vidpred.metrics import frame_scores, pairwise_diversity  # noqa: E402
from vidpred.prior import LatentBank  # noqa: E402
from vidpred.sampling import sample_futures  # noqa: E402


def make_checkpoint(path: Path, *, size: int, channels: int, options: list[str]) -> Path:
    cfg = parse_args([f"--data.size={size}", f"--data.channels={channels}", *options])
    bank = LatentBank(cfg.latent.dim, 1024)
    bank.add(torch.randn(1024, cfg.latent.dim, generator=torch.Generator().manual_seed(0)))
    bank.fit()
    model = build_model(cfg)
    return save_checkpoint(path, {"model": model.state_dict(), "config": to_dict(cfg), "prior": bank.state_dict(),
                                  "step": 0})


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


ROLLOUT_PARTS = {"begin": "begin (context, glide source)", "condition": "condition (predictor)",
                 "decode_step": "decode_step (decoder)", "advance": "advance (encoder, feedback)",
                 "row_glide": "row_glide (glided frames)", "sample": "prior.sample (prior)"}


def timed_methods(model, totals: dict[str, float]) -> None:
    """Time the rollout's parts on this model instance: each ROLLOUT_PARTS method (the prior's `sample`) adds its own
    seconds to totals[name], less those of the timed parts it calls (`condition` calls `row_glide`), so that the
    parts do not overlap."""
    open_calls = [0.0]  # per timed call under way, the seconds of the timed calls it made

    for name in ROLLOUT_PARTS:
        owner = model.prior if name == "sample" else model
        method = getattr(owner, name)

        def timer(*args, _method=method, _name=name, **kwargs):
            open_calls.append(0.0)
            start = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                seconds = time.perf_counter() - start
                totals[_name] += seconds - open_calls.pop()
                open_calls[-1] += seconds
        setattr(owner, name, timer)


def time_parts(ckpt: Path, *, samples: int, horizon: int, clips: int) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds of each part of evaluating `clips` clips, and of each of the rollouts' own parts (ROLLOUT_PARTS)."""
    model, cfg, bank, _ = load_predictor(ckpt)
    objective = build_objective(cfg, model)
    timers = dict.fromkeys(ROLLOUT_PARTS, 0.0)  # what the timed methods add up, the deterministic rollout's too
    source = build_source(cfg.data, seed=0, split="test", frames=5 + horizon, context=5)
    video = torch.stack([source[i] for i in range(clips)])
    context, truth = video[:, :5], video[:, 5:]
    with torch.inference_mode():
        sample_futures(objective, context[:1], samples=1, horizon=1, prior="learned", bank=bank, seed=0)  # warm-up
        timed_methods(model, timers)
        futures, rollout = timed(lambda: sample_futures(objective, context, samples=samples, horizon=horizon,
                                                        prior="learned", bank=bank, seed=0))
        inside = {name: seconds for name, seconds in timers.items() if seconds > 0}  # the sampled rollouts' parts
        inside["other"] = rollout - sum(inside.values())
        _, det = timed(lambda: objective.deterministic(context, horizon=horizon))
        _, scores = timed(lambda: frame_scores(futures, truth))
        _, diversity = timed(lambda: pairwise_diversity(futures))
    return {"rollouts": rollout, "deterministic": det, "psnr/ssim/mse": scores, "diversity": diversity}, inside


def peak_rss_mb(code: str) -> float:
    """Peak resident memory (MB) of a fresh Python process running `code`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if after <= before:
        raise RuntimeError("this process already ran a larger child; run the memory probes first")
    return after / 1024


@dataclass
class BenchConfig:
    ckpt: str = ""  # a checkpoint to time (its data and frame size; no model options); empty: an untrained model
    size: int = 64  # frame side
    channels: int = 1
    samples: int = 100  # K
    horizon: int = 20  # T
    clips: int = 8  # clips evaluate() runs on, for the memory figure
    time_clips: int = 4  # clips timed part by part


def main(argv: list[str]) -> int:
    bench = BenchConfig()
    try:
        options = split_options(argv, bench)  # the others are the model's options
        parse_args(options)  # an unknown key or a bad value is refused, naming it, before anything runs
    except ConfigError as e:
        print(f"evaluation_cost.py: {e}", file=sys.stderr)
        return 2
    opts = dataclasses.asdict(bench)
    torch.set_num_threads(1)
    if opts["ckpt"] and options:
        print(f"evaluation_cost.py: --ckpt times its own model; drop {' '.join(options)}", file=sys.stderr)
        return 2
    if opts["ckpt"] and not Path(opts["ckpt"]).is_file():
        print(f"evaluation_cost.py: --ckpt={opts['ckpt']}: no such checkpoint file", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(opts["ckpt"]) if opts["ckpt"] else make_checkpoint(
            Path(tmp) / "bench.pt", size=opts["size"], channels=opts["channels"], options=options)
        # Memory first, smallest process first: ru_maxrss of children is the largest child so far.
        load_only = peak_rss_mb(f"import torch; torch.set_num_threads(1); from vidpred.build import "
                                f"load_predictor; load_predictor({str(ckpt)!r})")
        ecfg = {"ckpt": str(ckpt), "out": str(Path(tmp) / "eval"), "samples": opts["samples"], "context": 5,
                "horizon": opts["horizon"], "clips": opts["clips"], "prior": "learned"}
        full = peak_rss_mb(f"import torch; torch.set_num_threads(1); from vidpred.evaluation import EvalConfig, "
                           f"evaluate; evaluate(EvalConfig(**{json.dumps(ecfg)}))")
        parts, inside = time_parts(ckpt, samples=opts["samples"], horizon=opts["horizon"], clips=opts["time_clips"])
    total = sum(parts.values())
    model = opts["ckpt"] or (f"{opts['channels']}x{opts['size']}x{opts['size']}, untrained"
                             + (f", model options {' '.join(options)}" if options else ""))
    print(f"K = {opts['samples']} x T = {opts['horizon']}, {model}, 1 thread")
    print(f"peak memory of evaluate() on {opts['clips']} clips: {full:.0f} MB; loading the model alone "
          f"{load_only:.0f} MB; difference {full - load_only:.0f} MB")
    print(f"time of {opts['time_clips']} clips:")
    for name, seconds in parts.items():
        print(f"  {name:15}{seconds:8.2f} s  {seconds / total:6.1%}  ({seconds / opts['time_clips']:.3f} s per clip)")
    print("of which, inside the rollouts:")
    for name, seconds in inside.items():
        print(f"  {ROLLOUT_PARTS.get(name, name):30}{seconds:8.2f} s  {seconds / parts['rollouts']:6.1%} of the rollouts")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
