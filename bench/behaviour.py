"""A fingerprint of what the code computes, to show that a refactor changed no behaviour.

    python bench/behaviour.py --out=/tmp/before.json                        # on the old code
    python bench/behaviour.py --out=/tmp/after.json --compare=/tmp/before.json   # on the new code
    python bench/behaviour.py --compare=/tmp/before.json --ignore=_per_clip        # leave out figures added since

For each model kind (and the free-running options) it trains a seeded 50-step run in a temporary
folder, evaluates it, and records every logged figure of `log.jsonl` (losses, energies, latent
statistics, validation; not the timings) and every number of `metrics.json` (not the paths and
times). `--compare` prints each figure that differs and exits 1 if any does. Runs on the CPU, one
thread, so that the figures are bit-for-bit reproducible (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--steps=50", "--batch_size=8", "--log_every=5", "--val_every=25", "--val_clips=16", "--media_every=0",
          "--prior.fit_clips=32", "--wandb=disabled", "--device=cpu", "--threads=1", "--warmup=10",
          "--latent.warmup=20", "--ckpt_every=25"]
RUNS = {
    "energy": [],
    "energy-separate": ["--latent.fused=false"],  # the one step in its own passes (the default is fused)
    "energy-steps3": ["--latent.steps=3", "--prior.kind=fitted"],
    "energy-rollout": ["--rollout=true", "--rollout_start=20", "--model.recurrent=true", "--model.decoder=kernels",
                       "--prior.chained=true"],
    "energy-residual": ["--model.residual=true", "--prior.kind=bank"],
    "vae": ["--model.kind=vae"],
    "vae-rollout": ["--model.kind=vae", "--rollout=true"],
    "deterministic": ["--model.kind=deterministic"],
}
EVAL = ["--clips=8", "--samples=10", "--horizon=10", "--video=none", "--show=2", "--device=cpu"]
TIMINGS = {"clips_per_s", "data_wait", "seconds", "elapsed_s", "clips_per_second"}


def numbers(tree, prefix: str = "") -> dict[str, float]:
    """Every number of a JSON tree by its dotted path, but timings and paths."""
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k not in TIMINGS and k not in ("checkpoint", "path", "out"):
                out.update(numbers(v, f"{prefix}{k}."))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out.update(numbers(v, f"{prefix}{i}."))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        out[prefix.rstrip(".")] = float(tree)
    return out


def fingerprint(name: str, extra: list[str], folder: Path) -> dict[str, float]:
    out = folder / name
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, str(ROOT / "train.py"), f"--out={out}", *COMMON, *extra], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([sys.executable, str(ROOT / "evaluate.py"), f"--ckpt={out}/checkpoints/last.pt",
                    f"--out={out}/eval", *EVAL], check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    figures = {}
    for i, line in enumerate((out / "log.jsonl").read_text().splitlines()):
        figures.update({f"log.{i}.{k}": v for k, v in numbers(json.loads(line)).items()})
    figures.update({f"metrics.{k}": v for k, v in numbers(json.loads((out / "eval" / "metrics.json").read_text())).items()})
    return figures


def main(argv: list[str]) -> int:
    options = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in RUNS.items():
            result[name] = fingerprint(name, extra, Path(tmp))
            print(f"{name}: {len(result[name])} figures")
    if "out" in options:
        Path(options["out"]).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    if "compare" not in options:
        return 0
    before = json.loads(Path(options["compare"]).read_text())
    differences = 0
    for name in sorted(set(before) | set(result)):
        old, new = before.get(name, {}), result.get(name, {})
        for key in sorted(set(old) | set(new)):
            if "ignore" in options and options["ignore"] in key:
                continue
            a, b = old.get(key), new.get(key)
            same = a is not None and b is not None and (a == b or (math.isnan(a) and math.isnan(b)))
            if not same:
                differences += 1
                if differences <= 40:
                    print(f"  {name} {key}: {a} -> {b}")
    print(f"{differences} figures differ" if differences else "identical: every logged and evaluated figure matches")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
