"""`vidpred-sample`: K futures of any clip, its free energy, and fill-in-the-blank inference.

    vidpred-sample --ckpt=runs/default/checkpoints/last.pt --input=clip.mp4
    python -m vidpred.sample_cli --ckpt=... --input=FRAMES_FOLDER|ARRAY.npy [--key=value ...]

The input is a video file (any container PyAV reads), a folder of frames or an array file; the
context frames are taken from `--start` (a frame) or `--start_time` (seconds), converted to the
model's size and channels, and K futures of T frames are sampled. Writes into --out:
  samples.png   one row per future, each starting with the context: the input's own continuation
                (when the input is long enough), the z = 0 prediction, then the K samples;
  samples.mp4   the same rows side by side as a video (--video=gif for a GIF);
  samples.npy   the futures (K, T, c, H, W) in [0, 1], with --save_array;
  summary.json  what was read and converted, the options, and the scores below.
--score also gives the free energy of the input's continuation, per frame and in total (lower is
more plausible). --mask (top, bottom, left, right, R0:R1,C0:C1, or a mask file) and/or
--mask_frames (e.g. -1: the last frame as a goal) say what of the input's continuation is
observed: the rest is filled in by inference over z, and the samples are ranked by their energy
against the observation (best first). Every option is listed by --help.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image

from .build import run_home
from .choices import PriorKind
from .config import ConfigError, check_device, check_numbers, describe, parse_overrides, set_key
from .data.clips import DataError
from .media import read_clip, to_model_frames, write_video
from .sampling import BACKGROUND_FILL


@dataclass
class SampleConfig:
    ckpt: str = ""  # checkpoint (required)
    input: str = ""  # video file, folder of frames, or .npy/.npz array (required)
    out: str = ""  # output folder; empty: <run folder>/samples/<input name>
    samples: int = 8  # K futures
    context: int = 0  # frames given to the model (0: as many as it was trained with)
    horizon: int = 0  # frames predicted (0: as many as it was trained to predict)
    start: int = 0  # first frame taken from the input
    start_time: float | None = None  # or: seconds into a video file
    clip: int = 0  # which clip of an array file holding several
    layout: str = "auto"  # axes of an array file, e.g. tnhw (mnist_test_seq.npy), nthwc, thw
    seed: int = 0  # seeds the sampled latents
    prior: PriorKind | None = None  # bank | fitted | learned; empty: the checkpoint's
    background_fill: float = BACKGROUND_FILL  # glide_mask=trust: the share of futures that leave the background where they drop a glided object (the rest: generated pixels)
    video: str = "mp4"  # mp4 | gif
    fps: float = 4.0  # frame rate of the written video
    scale: int = 0  # output pixels per model pixel (0: frames about 128 pixels high)
    save_array: bool = False  # also write samples.npy
    score: bool = False  # free energy of the input's own continuation, per frame and in total
    mask: str = ""  # observed region of the continuation: top|bottom|left|right|all|R0:R1,C0:C1 or a mask file
    mask_frames: str = ""  # observed frames of the continuation, e.g. -1 or 0,2 (empty: all, if --mask is given)
    steps: int = 40  # inference steps (scoring and filling in)
    starts: int = 8  # fill-in: inference starts (z = 0 and draws from the prior); the best is kept
    device: str = "auto"  # auto | cpu | cuda | cuda:N


def parse_sample_args(argv: list[str]) -> SampleConfig:
    scfg = SampleConfig()
    for key, value in parse_overrides(argv).items():
        set_key(scfg, key, value)
    for key, what in (("ckpt", "the checkpoint (e.g. runs/default/checkpoints/last.pt)"),
                      ("input", "a video file, a folder of frames, or an array file")):
        if not getattr(scfg, key):
            raise ConfigError(f"--{key}=PATH is required: {what}")
    check_numbers(scfg, positive=("samples", "steps", "starts", "fps"),
                  nonneg=("context", "horizon", "start", "clip", "scale"), shares=("background_fill",))
    check_device(scfg.device)
    if scfg.video not in ("mp4", "gif"):
        raise ConfigError(f"video={scfg.video!r}: expected mp4 or gif")
    if scfg.start_time is not None and scfg.start_time < 0:
        raise ConfigError(f"start_time={scfg.start_time}: expected seconds >= 0")
    return scfg


def parse_frame_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"mask_frames={text!r}: expected frame indices such as -1 or 0,2") from None


def build_mask(scfg: SampleConfig, *, horizon: int, size: int, channels: int, input_size: tuple[int, int]) -> Tensor:
    """The observed part of the continuation (T or 1, c or 1, size, size) from --mask and --mask_frames."""
    from .trained import future_mask

    frames = parse_frame_list(scfg.mask_frames) if scfg.mask_frames else None
    region = scfg.mask or "all"
    if not Path(region).suffix:  # a named region or a box R0:R1,C0:C1; a mask file has a suffix
        try:
            return future_mask(horizon=horizon, size=size, channels=channels, region=region, frames=frames)
        except ValueError as e:
            raise ConfigError(f"mask: {e}") from None
    mask = load_mask_file(Path(region), size=size, input_size=input_size)
    if frames is not None:  # keep the file's mask on the listed frames only
        mask = mask * future_mask(horizon=horizon, size=size, channels=1, frames=frames)
    return mask


def load_mask_file(path: Path, *, size: int, input_size: tuple[int, int]) -> Tensor:
    """A mask image (nonzero = observed) or .npy array of shape (H, W), (T, H, W) or (T, c, H, W), at
    the model's size or the input frames' size (then cropped and resized as the frames were)."""
    if not path.is_file():
        raise DataError(f"mask {path}: no such file")
    if path.suffix.lower() == ".npy":
        try:
            a = np.load(path, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as e:
            raise DataError(f"mask {path}: could not be read as a NumPy array ({e})") from None
    else:
        from PIL import Image

        try:
            with Image.open(path) as im:
                a = (np.asarray(im.convert("L")) > 127).astype(np.float32)
        except OSError as e:
            raise DataError(f"mask {path}: could not be read as an image ({e})") from None
    if a.ndim not in (2, 3, 4):
        raise DataError(f"mask {path} has shape {a.shape}; expected (H, W), (T, H, W) or (T, c, H, W)")
    if a.ndim == 2:
        a = a[None, None]  # one mask for every frame
    elif a.ndim == 3:
        a = a[:, None]  # one mask per frame, for every channel
    hw = a.shape[-2:]
    if hw == (size, size):
        return torch.from_numpy(a)
    if hw != input_size:
        raise DataError(f"mask {path} is {hw[1]}x{hw[0]} pixels; expected the model's {size}x{size} "
                        f"or the input frames' {input_size[1]}x{input_size[0]}")
    t, c = a.shape[:2]
    flat = a.reshape(t * c, *hw)[..., None]  # each mask plane as a grayscale frame
    resized, _ = to_model_frames(flat, size=size, channels=1)
    return resized.reshape(t, c, size, size)


def upscale(frames: Tensor, factor: int) -> Tensor:
    """Nearest-neighbour upscaling (..., H, W) -> (..., H f, W f): pixels stay crisp."""
    return frames.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def show_observed(observed: Tensor, mask: Tensor) -> Tensor:
    """Observed pixels as they are, unobserved ones as a gray checkerboard (unmistakable for content)."""
    h, w = observed.shape[-2:]
    checker = 0.35 + 0.3 * ((torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2).to(observed)
    return observed * mask + checker * (1 - mask)


def panels(context: Tensor, rows: list[Tensor]) -> Tensor:
    """(R, C0 + T, c, H, W): each future row (T, c, H, W) after the context frames."""
    return torch.stack([torch.cat([context, row]) for row in rows])


def write_outputs(out: Path, shown: Tensor, *, scale: int, video: str, fps: float) -> list[Path]:
    """samples.png (one row per future) and the same futures side by side as a video."""
    r, t = shown.shape[:2]
    big = upscale(shown.float().cpu(), scale)
    png = out / "samples.png"
    save_image(make_grid(big.flatten(0, 1), nrow=t, padding=scale, pad_value=0.5), png)
    per_row = min(r, 6)  # panels per line of the video
    frames = [make_grid(big[:, i], nrow=per_row, padding=scale, pad_value=0.5) for i in range(t)]
    clip = torch.stack(frames).permute(0, 2, 3, 1).numpy()  # (t, H, W, 3): make_grid gives 3 channels
    if shown.shape[2] == 1:
        clip = clip[..., :1]
    return [png, write_video(out / f"samples.{video}", clip, fps=fps)]


def read_input(scfg: SampleConfig, predictor) -> tuple[Tensor, Tensor | None, dict]:
    """The context (C0, c, H, W) and, when the input holds it, its continuation (T, c, H, W), converted
    for the model; and what was read, for the summary."""
    context_len = scfg.context or predictor.context
    horizon = scfg.horizon or predictor.horizon
    predictor.model.check_context(context_len, ConfigError)
    clip = read_clip(scfg.input, count=context_len + horizon, start=scfg.start, start_time=scfg.start_time,
                     clip=scfg.clip, layout=scfg.layout)
    if len(clip.frames) < context_len:
        raise DataError(f"input {scfg.input}: {clip.description} holds {len(clip.frames)} frames; "
                        f"the context needs {context_len}")
    frames, conversion = to_model_frames(clip.frames, size=predictor.size, channels=predictor.channels)
    frames = frames.to(predictor.device)
    truth = frames[context_len:] if len(frames) == context_len + horizon else None
    print(f"input: {clip.description}")
    print(f"converted: {conversion}")
    wants_truth = [flag for flag, on in (("--score", scfg.score), ("--mask", scfg.mask or scfg.mask_frames)) if on]
    if truth is None and wants_truth:
        raise DataError(f"{' and '.join(wants_truth)} need{'s' if len(wants_truth) == 1 else ''} the input's "
                        f"continuation: {clip.description} holds {len(clip.frames)} frames, and context "
                        f"{context_len} + horizon {horizon} = {context_len + horizon} are needed")
    return frames[:context_len], truth, {"input": clip.description, "conversion": conversion,
                                         "input_size": list(clip.frames.shape[1:3]), "context": context_len,
                                         "horizon": horizon}


def fill_in(scfg: SampleConfig, predictor, context: Tensor, truth: Tensor, input_size: tuple[int, int]):
    """Rows to show (the observation, the filled-in future), the K samples ranked against the
    observation, and the numbers for the summary."""
    mask = build_mask(scfg, horizon=len(truth), size=predictor.size, channels=predictor.channels,
                      input_size=input_size).to(predictor.device)
    prior = scfg.prior or None
    try:
        filled = predictor.infer(context, truth, mask, steps=scfg.steps, starts=scfg.starts, seed=scfg.seed,
                                 prior=prior)
        ranked = predictor.rank(context, truth, mask, k=scfg.samples, seed=scfg.seed, prior=prior,
                                background_fill=scfg.background_fill)
    except ValueError as e:
        raise DataError(f"--mask={scfg.mask or 'all'} --mask_frames={scfg.mask_frames or 'all'}: {e}") from None
    full = mask.expand_as(truth)
    print(f"filled in the unobserved {1 - full.mean().item():.0%} of the continuation: masked energy "
          f"{filled.energy.item():.4f}; samples ranked by energy against the observation, "
          f"from {ranked.energy[0, 0].item():.4f} to {ranked.energy[0, -1].item():.4f}")
    numbers = {"mask": scfg.mask or "all", "mask_frames": scfg.mask_frames or "all",
               "observed_share": full.mean().item(), "energy": filled.energy.item(),
               "energy_per_frame": filled.per_frame[0].tolist(), "steps": scfg.steps, "starts": scfg.starts,
               "samples_energy": ranked.energy[0].tolist(), "samples_order": ranked.order[0].tolist()}
    return [show_observed(truth, full), filled.future[0]], ranked.futures[0], numbers


def run(scfg: SampleConfig) -> dict:
    """Sample (and score, and fill in) as configured; writes the outputs and returns the summary."""
    from .trained import TEACHER_FORCED_SCORE_REFUSAL, load

    predictor = load(scfg.ckpt, scfg.device)
    if scfg.score and predictor.model.feedback == "latent":  # refused before any reading or sampling
        raise ConfigError(f"--score: {TEACHER_FORCED_SCORE_REFUSAL}")
    context, truth, summary = read_input(scfg, predictor)
    horizon = summary["horizon"]
    summary.update(checkpoint=scfg.ckpt, samples=scfg.samples, seed=scfg.seed,
                   prior=scfg.prior or predictor.prior)
    rows, legend = ([], []) if truth is None else ([truth], ["input"])
    rows.append(predictor.deterministic(context, horizon=horizon)[0])
    legend.append("z = 0")
    if scfg.mask or scfg.mask_frames:
        shown, futures, summary["fill"] = fill_in(scfg, predictor, context, truth, tuple(summary["input_size"]))
        rows += shown
        legend += ["observed (checkerboard: not observed)", "filled in", f"{scfg.samples} samples ranked by "
                   "energy, best first"]
    else:
        futures = predictor.sample(context, k=scfg.samples, horizon=horizon, seed=scfg.seed,
                                   prior=scfg.prior or None, background_fill=scfg.background_fill)[0]
        legend.append(f"{scfg.samples} samples")
    rows += list(futures)
    if scfg.score:
        score = predictor.energy(context, truth, steps=scfg.steps)
        summary["score"] = {"total": score.total.item(), "per_frame": score.per_frame[0].tolist(),
                            "cost_per_frame": score.cost[0].tolist(), "penalty_per_frame": score.penalty[0].tolist(),
                            "steps": scfg.steps}
        per_frame = " ".join(f"{v:.4f}" for v in score.per_frame[0].tolist())
        print(f"free energy of the input's continuation: {score.total.item():.4f} (per frame: {per_frame})")

    out = Path(scfg.out) if scfg.out else run_home(scfg.ckpt) / "samples" / Path(scfg.input).stem
    out.mkdir(parents=True, exist_ok=True)
    scale = scfg.scale or max(1, round(128 / predictor.size))
    written = write_outputs(out, panels(context, rows), scale=scale, video=scfg.video, fps=scfg.fps)
    if scfg.save_array:
        np.save(out / "samples.npy", futures.float().cpu().numpy())
        written.append(out / "samples.npy")
    summary["rows"] = legend
    summary["files"] = [str(p) for p in written] + [str(out / "summary.json")]
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"rows: {', '.join(legend)}")
    print(f"wrote {', '.join(summary['files'])}")
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--help" in argv or "-h" in argv:
        print(__doc__ + "\nOptions (default, meaning, allowed values):\n" + "\n".join(describe(SampleConfig())))
        return 0
    from .checkpoint import CheckpointError

    try:
        run(parse_sample_args(argv))
    except (ConfigError, CheckpointError, DataError) as e:
        print(f"vidpred-sample: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
