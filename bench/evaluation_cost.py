"""Where evaluation time goes, and its peak memory, for the protocol's K = 100, T = 20.

    python bench/evaluation_cost.py [--size=64 --channels=1 --samples=100 --horizon=20 --clips=8 --time_clips=4]
                                    [model options, e.g. --model.recall=true --model.skips=context]

Builds an untrained model of the default architecture (or of the one the model options describe) at
the given frame size (the cost of a rollout does not depend on the weights), runs the whole evaluate() on `clips` clips in a fresh
process and reports its peak resident memory beside that of a process that only loads the model,
then times `time_clips` clips part by part. Figures are wall-clock seconds on this machine: compare ratios within
one run, not across machines or busy periods.
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


def time_parts(ckpt: Path, *, samples: int, horizon: int, clips: int) -> dict[str, float]:
    model, cfg, bank, _ = load_predictor(ckpt)
    objective = build_objective(cfg, model)
    source = build_source(cfg.data, seed=0, split="test", frames=5 + horizon, context=5)
    video = torch.stack([source[i] for i in range(clips)])
    context, truth = video[:, :5], video[:, 5:]
    with torch.inference_mode():
        futures, rollout = timed(lambda: sample_futures(objective, context, samples=samples, horizon=horizon,
                                                        prior="learned", bank=bank, seed=0))
        _, det = timed(lambda: objective.deterministic(context, horizon=horizon))
        _, scores = timed(lambda: frame_scores(futures, truth))
        _, diversity = timed(lambda: pairwise_diversity(futures))
    return {"rollouts": rollout, "deterministic": det, "psnr/ssim/mse": scores, "diversity": diversity}


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
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(Path(tmp) / "bench.pt", size=opts["size"], channels=opts["channels"], options=options)
        # Memory first, smallest process first: ru_maxrss of children is the largest child so far.
        load_only = peak_rss_mb(f"import torch; torch.set_num_threads(1); from vidpred.build import "
                                f"load_predictor; load_predictor({str(ckpt)!r})")
        ecfg = {"ckpt": str(ckpt), "out": str(Path(tmp) / "eval"), "samples": opts["samples"], "context": 5,
                "horizon": opts["horizon"], "clips": opts["clips"], "prior": "learned"}
        full = peak_rss_mb(f"import torch; torch.set_num_threads(1); from vidpred.evaluation import EvalConfig, "
                           f"evaluate; evaluate(EvalConfig(**{json.dumps(ecfg)}))")
        parts = time_parts(ckpt, samples=opts["samples"], horizon=opts["horizon"], clips=opts["time_clips"])
    total = sum(parts.values())
    print(f"K = {opts['samples']} x T = {opts['horizon']} at {opts['channels']}x{opts['size']}x{opts['size']}, "
          f"1 thread" + (f", model options {' '.join(options)}" if options else ""))
    print(f"peak memory of evaluate() on {opts['clips']} clips: {full:.0f} MB; loading the model alone "
          f"{load_only:.0f} MB; difference {full - load_only:.0f} MB")
    print(f"time of {opts['time_clips']} clips:")
    for name, seconds in parts.items():
        print(f"  {name:15}{seconds:8.2f} s  {seconds / total:6.1%}  ({seconds / opts['time_clips']:.3f} s per clip)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
