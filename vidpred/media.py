"""Clips from the files people have, converted for a model; and the videos vidpred-sample writes.

Inputs: a video file (any container PyAV/FFmpeg reads: mp4, avi, mkv, webm, ...), a folder of
frames (PNG, JPEG, ...; natural sort order, so frame_2 comes before frame_10), or an array file
(.npy / .npz). Each becomes frames `(t, H, W, c)` float32 in [0, 1] with c = 1 or 3;
`to_model_frames` then resizes, crops and converts the channels to what a model takes, and says
what it did. Video files are probed and decoded, and arrays opened, by the data pipeline's own
code (`vidpred.data.video`, `vidpred.data.arrays`), so a file reads here as it does in training.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from .data.arrays import as_layout, detect_layout, open_array
from .data.clips import DataError, fit_frames, non_finite_pixels

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
ARRAY_SUFFIXES = (".npy", ".npz")
SINGLE_CLIP_LAYOUTS = ("thw", "thwc", "tchw")  # besides the data pipeline's layouts of many clips


class Clip(NamedTuple):
    frames: np.ndarray  # (t, H, W, c) float32 in [0, 1], c = 1 or 3
    fps: float | None  # frame rate of a video file; None for frames and arrays
    description: str  # what was read, for the user: "frames 10-24 of clip.mp4 (320x240 RGB, 25 fps)"


def read_clip(path: str | Path, *, count: int, start: int = 0, start_time: float | None = None,
              clip: int = 0, layout: str = "auto") -> Clip:
    """Up to `count` frames from `start` (a frame index) or `start_time` (seconds, video files only).

    `clip` and `layout` pick one clip out of an array file that holds several.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"input {path}: no such file or folder")
    if start < 0:
        raise DataError(f"start={start}: expected a frame index >= 0")
    if start_time is not None and (path.is_dir() or path.suffix.lower() in ARRAY_SUFFIXES):
        raise DataError(f"start_time needs a video file, and {path} is not one; give the first frame as --start=N")
    if path.is_dir():
        return read_frame_folder(path, start=start, count=count)
    if path.suffix.lower() in ARRAY_SUFFIXES:
        return read_array(path, start=start, count=count, clip=clip, layout=layout)
    return read_video(path, start=start, start_time=start_time, count=count)


def _taken(start: int, n: int) -> str:
    return f"frame {start}" if n == 1 else f"frames {start}-{start + n - 1}"


def _colour(c: int) -> str:
    return "grayscale" if c == 1 else "RGB"


# --- video files ------------------------------------------------------------------------------------


def read_video(path: Path, *, start: int = 0, start_time: float | None = None, count: int) -> Clip:
    """RGB frames of the first video stream from frame `start`, or from `start_time` seconds.

    The file is probed as the data pipeline probes it (a truncated file is refused, not read
    short), and decoding seeks to the keyframe before the first frame rather than reading from
    the start.
    """
    import av  # imported here: PyAV is only needed for video files

    from .data.video import probe_video, read_frames

    try:
        meta = probe_video(path)
        fps = meta["fps"]
        first = round(start_time * fps) if start_time is not None else start
        if first >= meta["frames"]:
            where = f"t={start_time:g}s (frame {first})" if start_time is not None else f"frame {first}"
            raise DataError(f"the video has {meta['frames']} frames, none at or after {where}")
        wanted = np.arange(first, min(first + count, meta["frames"]))
        frames = read_frames(path, wanted, fps=fps, start=meta["start"], channels=3)
    except DataError as e:
        raise DataError(f"input {path}: {e}") from None
    except (av.FFmpegError, OSError) as e:
        raise DataError(f"input {path}: could not be read as a video ({e})") from None
    at = f" (t={start_time:g}s)" if start_time is not None else ""
    return Clip(frames.astype(np.float32) / 255.0, fps, f"{_taken(first, len(frames))}{at} of {path} "
                                                        f"({meta['width']}x{meta['height']} RGB, {fps:g} fps)")


def write_video(path: str | Path, frames: np.ndarray, *, fps: float) -> Path:
    """Frames (t, H, W, c), float in [0, 1] or uint8, as an MP4 (H.264; MPEG-4 part 2 where this
    FFmpeg lacks libx264) or, for a .gif path, a GIF; both via PyAV. The one video writer of vidpred.

    MP4 needs even sides (4:2:0 chroma), so odd sides get one black row or column.
    """
    import av

    path = Path(path)
    pixels = frames if frames.dtype == np.uint8 else (np.clip(frames, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    gif = path.suffix.lower() == ".gif"
    if not gif:
        pixels = np.pad(pixels, ((0, 0), (0, pixels.shape[1] % 2), (0, pixels.shape[2] % 2), (0, 0)))
    gray = pixels.shape[-1] == 1
    if gray and not gif:
        pixels = pixels.repeat(3, axis=-1)
    rate = Fraction(fps).limit_denominator(1001)
    codec = "gif" if gif else "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = pixels.shape[1:3]
        # GIF: exact grays, or the fixed 3-3-2 palette for colour; MP4: the 4:2:0 every player reads
        stream.pix_fmt = ("gray" if gray else "rgb8") if gif else "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18"}  # near-lossless: the frames are small and sharp
        for image in pixels:
            frame = av.VideoFrame.from_ndarray(image[..., 0] if gray and gif else image,
                                               format="gray" if gray and gif else "rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


# --- folders of frames --------------------------------------------------------------------------


def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def read_frame_folder(path: Path, *, start: int = 0, count: int) -> Clip:
    """Image files of a folder in natural order; grayscale if every one is, else RGB."""
    from PIL import Image

    files = sorted((f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
    if not files:
        raise DataError(f"input {path}: the folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    if start >= len(files):
        raise DataError(f"input {path}: start={start} but the folder holds {len(files)} frames")
    chosen = files[start:start + count]
    images = []
    for f in chosen:
        try:
            with Image.open(f) as im:
                im.load()
                images.append(im.copy())
        except OSError as e:
            raise DataError(f"input {f}: could not be read as an image ({e})") from None
    gray = all(im.mode in ("1", "L", "LA", "I", "I;16", "F") for im in images)
    arrays = []
    for f, im in zip(chosen, images):
        a = np.asarray(im.convert("L") if gray else im.convert("RGB"), dtype=np.float32) / 255.0
        if arrays and a.shape != arrays[0].shape:
            raise DataError(f"input {f}: {a.shape[1]}x{a.shape[0]} pixels, but {chosen[0].name} has "
                            f"{arrays[0].shape[1]}x{arrays[0].shape[0]}; frames must share one size")
        arrays.append(a)
    frames = np.stack(arrays)
    frames = frames[..., None] if gray else frames
    h, w = frames.shape[1:3]
    return Clip(frames, None, f"{_taken(start, len(frames))} of {path}/ ({w}x{h} {_colour(frames.shape[-1])} images)")


# --- array files ----------------------------------------------------------------------------------


def _as_unit_floats(a: np.ndarray, path: Path, which: str = "") -> np.ndarray:
    """uint8 (or integers in 0..255) scaled to [0, 1]; floats must already be in [0, 1] (and finite)."""
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise non_finite_pixels(a, f"input {path}{which}")
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if np.issubdtype(a.dtype, np.integer):
        if lo < 0 or hi > 255:
            raise DataError(f"input {path}: integer pixels in [{lo:g}, {hi:g}]; expected 0..255")
        return a.astype(np.float32) / 255.0
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise DataError(f"input {path}: float pixels in [{lo:.3g}, {hi:.3g}]; expected [0, 1] (or uint8 0..255)")
    return np.clip(a.astype(np.float32), 0.0, 1.0)


def read_array(path: Path, *, start: int = 0, count: int, clip: int = 0, layout: str = "auto") -> Clip:
    """Frames `start` to `start + count` of clip `clip` of an array file.

    Besides the data pipeline's layouts of many clips (tnhw as in mnist_test_seq.npy, nthw,
    nthwc, ntchw; `auto` as it guesses them), one clip may be stored alone as thw, thwc or tchw;
    `auto` reads a 3-d array as thw and a 4-d one whose last axis has 1 or 3 entries as thwc.
    """
    a = open_array(path)
    if layout == "auto" and (a.ndim == 3 or (a.ndim == 4 and a.shape[-1] in (1, 3))):
        layout = "thw" if a.ndim == 3 else "thwc"
    if layout in SINGLE_CLIP_LAYOUTS and a.ndim == len(layout):
        a, layout = a[None], "n" + layout
    layout = detect_layout(a.shape, layout, path)
    a = as_layout(a, layout, "nthwc")  # (n, t, h, w, c), still memory-mapped
    if not 0 <= clip < a.shape[0]:
        raise DataError(f"clip={clip}: {path} holds {a.shape[0]} clips (0..{a.shape[0] - 1})")
    if start >= a.shape[1]:
        raise DataError(f"input {path}: start={start} but the clip has {a.shape[1]} frames")
    which = f" of clip {clip}" if a.shape[0] > 1 else ""
    frames = _as_unit_floats(np.asarray(a[clip, start:start + count]), path,
                             f", frames {start}..{min(start + count, a.shape[1]) - 1}{which}")
    h, w = frames.shape[1:3]
    return Clip(frames, None, f"{_taken(start, len(frames))}{which} of {path} ({w}x{h} {_colour(frames.shape[-1])}, "
                              f"array {a.dtype} read as {layout})")


# --- conversion for a model -------------------------------------------------------------------------


def to_model_frames(frames: np.ndarray, *, size: int, channels: int) -> tuple[Tensor, str]:
    """(t, H, W, c) in [0, 1] -> (t, channels, size, size) and a sentence saying what was changed.

    The data pipeline's `fit_frames`: the shorter side resized to `size` with antialiasing, a
    centre crop (no distortion), RGB to grayscale by luma (BT.601) or grayscale repeated into RGB.
    """
    video = rearrange(torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)), "t h w c -> t c h w")
    c, h, w = video.shape[1:]
    steps = []
    if (h, w) != (size, size):
        fit = f"resized {w}x{h} to {size}x{size}" if h == w else (f"resized {w}x{h} (shorter side to {size}) "
                                                                   f"and centre-cropped to {size}x{size}")
        steps.append(fit)
    if c != channels:
        steps.append("converted RGB to grayscale (luma)" if channels == 1 else "repeated grayscale into RGB")
    try:
        fitted = fit_frames(video, size=size, channels=channels)
    except ValueError as e:
        raise DataError(str(e)) from None
    target = f"the model's {channels}x{size}x{size} frames"
    note = f"{', '.join(steps)} for {target}" if steps else f"already {target}; used as they are"
    return fitted.contiguous(), note
