"""Does data loading limit training? Clips/s each loader delivers, against the model's step time.

    python bench/data_loading.py [--batch=16 --steps=30 --workers=0,1,2 --mnist=DIR --video=DIR]

For each source (sprites 32x32, SM-MNIST 64x64, a video folder, an array file) and each number of
loader workers, times `train_loader` delivering `steps` batches of `batch` clips of data.frames (10) frames,
then times training steps of the default model (sprites, 32x32, same batch) in this process, and
prints the ratio: data time per batch / step time. Below 1 with workers > 0, loading hides
behind the step; with 0 workers, loading adds its whole time to every step. Without --video, a
folder of 8 synthetic H.264 files (160x120, 25 fps, 300 frames, x264's default keyframe interval)
is written to a temporary folder. Figures from a shared machine are disturbed by other jobs.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidpred.build import build_model, build_objective, build_source  # noqa: E402
from vidpred.config import Config, DataConfig, parse_overrides, set_key  # noqa: E402
from vidpred.data import MovingSprites, train_loader  # noqa: E402
from throughput import training_step  # noqa: E402  (bench/ is on sys.path when this runs)


@dataclass
class BenchConfig:
    batch: int = 16
    steps: int = 30  # batches timed per loader
    workers: tuple[int, ...] = (0, 1, 2)
    model_steps: int = 5
    mnist: str = ""  # folder of the MNIST IDX files; empty: the mmnist rows are skipped
    video: str = ""  # a folder of videos; empty: synthetic files in a temporary folder
    threads: int = 2  # torch threads of the training step (the machine's cores)


def synthetic_videos(root: Path, files: int = 8, frames: int = 300) -> Path:
    """H.264 files of sprites moving on a 160x120 frame, x264's default settings (keyframes 250 apart)."""
    source = MovingSprites(seed=0, size=160, channels=3, frames=frames, objects=3, sprite_min=20, sprite_max=40)
    for i in range(files):
        clip = (source.clip(i).transpose(0, 2, 3, 1)[:, 20:140] * 255).astype(np.uint8)  # (t, 120, 160, 3)
        with av.open(str(root / f"v{i}.mp4"), "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
            for frame in clip:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return root


def loader_seconds_per_batch(source, *, batch: int, steps: int, workers: int) -> tuple[float, float]:
    """(seconds to the first batch, seconds per batch after it)."""
    start = time.perf_counter()
    loader = iter(train_loader(source, batch_size=batch, start_step=0, steps=steps + 1, workers=workers))
    next(loader)
    first = time.perf_counter()
    for _ in loader:
        pass
    return first - start, (time.perf_counter() - first) / steps


def model_seconds_per_step(batch: int, steps: int) -> float:
    """Seconds per training step (inference over z, forward, backward, update) of the default model."""
    cfg = Config()
    model = build_model(cfg)
    objective = build_objective(cfg, model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    source = MovingSprites(size=cfg.data.size, frames=cfg.context + cfg.horizon)
    video = torch.stack([source[i] for i in range(batch)])
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        training_step(objective, optimizer, video, cfg, step)  # as bench/throughput.py times it
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))  # the first step warms up


def main(argv: list[str]) -> int:
    bench = BenchConfig()
    for key, value in parse_overrides(argv).items():
        set_key(bench, key, value)
    torch.set_num_threads(bench.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = Path(bench.video) if bench.video else synthetic_videos(tmp)
        array = tmp / "clips.npy"
        np.save(array, np.random.default_rng(0).integers(0, 256, (2000, 20, 64, 64), dtype=np.uint8))
        sources = {"sprites 32x32": DataConfig()}
        if bench.mnist and Path(bench.mnist).is_dir():
            sources["mmnist 64x64"] = DataConfig(kind="mmnist", path=bench.mnist, size=64, max_speed=4)
        sources["video -> 32x32 gray"] = DataConfig(kind="video", path=str(video), val_share=0)
        sources["array 64x64 -> 32x32"] = DataConfig(kind="array", path=str(array), layout="nthw")
        step = model_seconds_per_step(bench.batch, bench.model_steps)
        print(f"default model, sprites 32x32, batch {bench.batch}: {step:.3f} s per training step "
              f"({bench.threads} torch threads)\n")
        print(f"{'source':24}{'workers':>8}{'first batch s':>15}{'clips/s':>10}{'s/batch':>9}{'/ step':>8}")
        for name, data in sources.items():
            source = build_source(data, seed=0, split="train", frames=data.frames, context=5)
            for workers in bench.workers:
                first, per_batch = loader_seconds_per_batch(source, batch=bench.batch, steps=bench.steps,
                                                            workers=workers)
                print(f"{name:24}{workers:>8}{first:>15.2f}{bench.batch / per_batch:>10.0f}{per_batch:>9.3f}"
                      f"{per_batch / step:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
