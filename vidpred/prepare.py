"""Write the fixed Stochastic Moving MNIST test set: `vidpred prepare --mnist=FOLDER [--key=value ...]`.

By default SRVP's protocol: 5,000 clips of 25 frames, seed 42, 2 test digits on a 64x64 canvas,
speed up to 4, stochastic bounces, pixel-wise max, from the MNIST IDX files in `--mnist` (see
README: get them once from the MNIST site or with torchvision's downloader). Writes
`data/smmnist_test.npy` (relative to the current folder: uint8,
(clips, frames, 64, 64), 512 MB; memory-mapped when read) and `data/smmnist_test.json` (how it was
made, with the array's SHA-256), which evaluation reads with

    python evaluate.py --ckpt=RUN/checkpoints/last.pt --data.kind=array --data.path=data/smmnist_test.npy

Clip i of the file is clip i of `--data.kind=mmnist` with split `test` and the same seed: the file
makes the set portable (numpy reads it; no vidpred needed) and immune to later code changes.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .choices import Bounce, Composite
from .config import ConfigError, describe, parse_overrides, set_key
from .data import MovingMNIST
from .files import atomic_path


@dataclass
class PrepareConfig:
    mnist: str = ""  # folder with the MNIST IDX files (or MNIST/raw inside it); required
    out: str = "data/smmnist_test.npy"  # the .npy to write (and its .json beside it)
    clips: int = 5000  # clips in the set (SRVP: 5000)
    frames: int = 25  # frames per clip (5 context + 20 predicted)
    seed: int = 42  # clip i is clip i of --data.kind=mmnist, split test, with this seed
    split: str = "test"  # test digits (train for a fixed training set)
    size: int = 64  # canvas; digits are 28x28 at 64 and scaled in proportion elsewhere
    digits: int = 2  # digits per clip
    max_speed: int = 4  # pixels per frame per axis, at most
    bounce: Bounce = "stochastic"  # stochastic | deterministic | discrete
    branches: int = 2  # discrete bounces: directions to pick from at each bounce
    composite: Composite = "max"  # max | sum (clipped to 1)


def parse(argv: list[str]) -> PrepareConfig:
    cfg = PrepareConfig()
    for key, value in parse_overrides(argv).items():
        set_key(cfg, key, value)
    if not cfg.mnist:
        raise ConfigError("--mnist=FOLDER is required: the folder with the MNIST IDX files "
                          "(t10k-images-idx3-ubyte[.gz] for the test digits)")
    for key in ("clips", "frames", "size", "digits", "max_speed"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{key}={getattr(cfg, key)}: expected a positive number")
    if cfg.split not in ("train", "test"):
        raise ConfigError(f"split={cfg.split!r}: expected train or test")
    return cfg


def prepare(cfg: PrepareConfig) -> Path:
    """Write the clips and their description; returns the path of the .npy."""
    out = Path(cfg.out)
    source = MovingMNIST(cfg.mnist, seed=cfg.seed, split=cfg.split, size=cfg.size, frames=cfg.frames,
                         objects=cfg.digits, max_speed=cfg.max_speed, bounce=cfg.bounce, branches=cfg.branches,
                         composite=cfg.composite)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with atomic_path(out) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                          shape=(cfg.clips, cfg.frames, cfg.size, cfg.size))
        for i in range(cfg.clips):
            array[i] = np.rint(source.clip(i)[:, 0] * 255.0)  # digits are bytes: max and clipped sum stay exact
        array.flush()
        digest = hashlib.sha256(np.ascontiguousarray(array)).hexdigest()
        del array
    info = {"file": out.name, "shape": [cfg.clips, cfg.frames, cfg.size, cfg.size], "layout": "nthw",
            "dtype": "uint8", "sha256": digest, "generator": "vidpred.data.MovingMNIST", **asdict(cfg)}
    out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {out} ({cfg.clips} clips of {cfg.frames} frames, {cfg.size}x{cfg.size}, seed {cfg.seed}, "
          f"{out.stat().st_size / 2**20:.0f} MiB, {time.perf_counter() - start:.0f} s) and {out.with_suffix('.json')}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--help" in argv or "-h" in argv:
        print(__doc__ + "\nKeys (default, meaning):\n" + "\n".join(describe(PrepareConfig())))
        return 0
    try:
        prepare(parse(argv))
    except (ConfigError, ValueError) as e:  # DataError is a ConfigError: it names the file
        print(f"vidpred prepare: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
