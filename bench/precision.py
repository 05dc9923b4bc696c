"""What --precision=bf16 and --compile=true do to a training step's speed on this machine.

    python bench/precision.py [--variants=fp32,bf16,fp32+compile,bf16+compile --rounds=12 --warmup_rounds=3
                               --threads=0 --json=runs/bench/precision.json]
                              [training overrides, e.g. --config=configs/smmnist.toml --data.path=PATH/TO/mnist]

One copy of the configured model per variant (fp32 or bf16 autocast, eager or compiled as training
compiles it: encoder, predictor and decoder in place), all from the same initial weights, takes
training steps on one fixed batch of the configured data (forward and latent inference under
autocast as train.py runs them, backward, gradient clipping, AdamW). The variants take turns step by
step, so a change in the machine's load touches all of them alike. Printed per variant: the wall
time of its first step (for a compiled variant, mostly compiling), the median step after
`warmup_rounds` untimed rounds, clips per second, and the ratio of its speed to the first variant
listed (fp32 eager by default). Whether a variant pays depends on the CPU: bf16 needs bf16
instructions (AVX512-BF16 or AMX) to be faster, and compiling needs a C++ compiler and pays back its
first step only in long runs. Figures taken beside other jobs are disturbed: note the load average
printed beside them.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import finish_report, split_options  # noqa: E402  (bench/ is sys.path[0] when a bench runs)
from throughput import start_report, training_step  # noqa: E402
from vidpred.build import build_model, build_objective  # noqa: E402
from vidpred.config import ConfigError, parse_args  # noqa: E402
from vidpred.training import compile_parts  # noqa: E402

VARIANTS = {"fp32": ("fp32", False), "bf16": ("bf16", False), "fp32+compile": ("fp32", True),
            "bf16+compile": ("bf16", True)}


@dataclass
class BenchConfig:
    variants: tuple[str, ...] = tuple(VARIANTS)  # which to time; the first is the one the others are compared with
    rounds: int = 12  # timed rounds: one training step of every variant each
    warmup_rounds: int = 3  # untimed rounds first (the first compiles; oneDNN picks its kernels)
    threads: int = 0  # torch CPU threads (0: torch's default, one per core)
    json: str = "runs/bench/precision.json"


class Variant:
    """One model, its objective and optimizer, stepping at one precision, compiled or not."""

    def __init__(self, cfg, precision: str, compiled: bool):
        self.cfg, self.precision, self.compiled = cfg, precision, compiled
        self.name = f"{precision}, {'compiled' if compiled else 'eager'}"
        torch.manual_seed(cfg.seed)  # the same initial weights for every variant
        self.model = build_model(cfg).train()
        if compiled:
            compile_parts(self.model)
        self.objective = build_objective(cfg, self.model)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr)
        self.times: list[float] = []
        self.first_s = float("nan")

    def step(self, video: torch.Tensor, step: int) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            training_step(self.objective, self.optimizer, video, self.cfg, step)
        return time.perf_counter() - start


def main(argv: list[str]) -> int:
    bench = BenchConfig()
    try:
        train_args = split_options(argv, bench)
        base = parse_args(train_args)
        unknown = [v for v in bench.variants if v not in VARIANTS]
        if unknown or not bench.variants:
            raise ConfigError(f"variants={','.join(bench.variants) or '(empty)'}: expected one or more of "
                              f"{', '.join(VARIANTS)}" + (f" (not {', '.join(unknown)})" if unknown else ""))
        if bench.rounds < 1 or bench.warmup_rounds < 1:
            raise ConfigError(f"rounds={bench.rounds}, warmup_rounds={bench.warmup_rounds}: expected at least 1 "
                              "of each (the first round compiles)")
    except ConfigError as e:
        print(f"precision.py: {e}", file=sys.stderr)
        return 2
    if bench.threads:
        torch.set_num_threads(bench.threads)
    report, video = start_report(bench, base, train_args)
    report.update(threads=torch.get_num_threads(), variants=[])
    print(f"{report['date']}  {report['machine']['cpu']}, torch {torch.__version__}, {report['threads']} threads, "
          f"load average {' '.join(map(str, report['load_average_start']))}; training steps on {base.batch_size} "
          f"clips of {base.context} -> {base.horizon} frames, {base.data.kind} {base.data.size}x{base.data.size}")
    variants = [Variant(base, *VARIANTS[name]) for name in bench.variants]
    for r in range(bench.warmup_rounds + bench.rounds):
        for v in variants:
            seconds = v.step(video, r)
            if r == 0:
                v.first_s = seconds
            elif r >= bench.warmup_rounds:
                v.times.append(seconds)
    reference = statistics.median(variants[0].times)
    print(f"{'variant':18}{'first step s':>13}{'step s':>9}{'clips/s':>9}{'speed vs ' + variants[0].name:>24}")
    for v in variants:
        step = statistics.median(v.times)
        report["variants"].append({"variant": v.name, "precision": v.precision, "compiled": v.compiled,
                                   "first_step_s": v.first_s, "step_s": step, "clips_per_s": base.batch_size / step,
                                   "speed_vs_first": reference / step, "step_times_s": v.times})
        print(f"{v.name:18}{v.first_s:>13.2f}{step:>9.3f}{base.batch_size / step:>9.1f}{reference / step:>23.2f}x")
    finish_report(report, bench.json)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
