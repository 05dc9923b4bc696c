"""Clips from the files people have, converted for a model; and the videos vidpred-sample writes.

Inputs: a video file (any container PyAV/FFmpeg reads: mp4, avi, mkv, webm, gif...), a folder of
frames (PNG, JPEG, ...; natural sort order, so frame_2 comes before frame_10), or an array file
(.npy / .npz, in the layouts of section 4 of DESIGN.md). Each becomes frames `(t, H, W, c)` float32
in [0, 1] with c = 1 or 3; `to_model_frames` then centre-crops, resizes and converts the channels to
what a model takes, and says what it did.

(A single-file reader for vidpred-sample; the data pipeline's reader of video folders is separate.)
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
ARRAY_SUFFIXES = (".npy", ".npz")
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")


class InputError(ValueError):
    """An input that cannot be used; the message names the file and what was expected."""


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
        raise InputError(f"input {path}: no such file or folder")
    if start < 0:
        raise InputError(f"start={start}: expected a frame index >= 0")
    if start_time is not None and (path.is_dir() or path.suffix.lower() in ARRAY_SUFFIXES):
        raise InputError(f"start_time needs a video file, and {path} is not one; give the first frame as --start=N")
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
    """Frames of the first video stream, decoded as RGB.

    With `start_time`, seeks to the keyframe before it and skips frames whose time is earlier, so
    long files are not decoded from the start; with `start`, counts decoded frames (exact also for
    variable frame rates).
    """
    import av  # imported here: PyAV is only needed for video files

    frames, first = [], None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"input {path}: the file has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else None
            if start_time is not None and start_time > 0 and stream.time_base:
                container.seek(int(start_time / stream.time_base), stream=stream, backward=True)
            half_frame = 0.5 / fps if fps else 0.0
            for index, frame in enumerate(container.decode(stream)):
                if start_time is not None:
                    if frame.time is not None and frame.time < start_time - half_frame:
                        continue
                elif index < start:
                    continue
                if first is None:
                    first = frame.time if start_time is not None else index
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == count:
                    break
    except av.FFmpegError as e:
        raise InputError(f"input {path}: could not be read as a video ({e})") from None
    where = f"t={start_time:g}s" if start_time is not None else f"frame {start}"
    if not frames:
        raise InputError(f"input {path}: no frames at or after {where} (the video is shorter)")
    h, w = frames[0].shape[:2]
    taken = (f"{len(frames)} frames from t={first:.3f}s" if start_time is not None and first is not None
             else _taken(start, len(frames)))
    rate_note = f", {fps:g} fps" if fps else ""
    return Clip(np.stack(frames).astype(np.float32) / 255.0, fps, f"{taken} of {path} ({w}x{h} RGB{rate_note})")


def write_video(path: str | Path, frames: np.ndarray, *, fps: float) -> Path:
    """Frames (t, H, W, c) in [0, 1] as an MP4 (H.264) or, for a .gif path, a GIF; both via PyAV.

    MP4 needs even sides (4:2:0 chroma), so odd sides get one black row or column.
    """
    import av

    path = Path(path)
    pixels = (np.clip(frames, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    gif = path.suffix.lower() == ".gif"
    if not gif:
        pixels = np.pad(pixels, ((0, 0), (0, pixels.shape[1] % 2), (0, pixels.shape[2] % 2), (0, 0)))
    gray = pixels.shape[-1] == 1
    if gray and not gif:
        pixels = pixels.repeat(3, axis=-1)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("gif" if gif else "libx264", rate=rate)
        stream.height, stream.width = pixels.shape[1:3]
        # GIF: exact grays, or the fixed 3-3-2 palette for colour; MP4: the 4:2:0 every player reads
        stream.pix_fmt = ("gray" if gray else "rgb8") if gif else "yuv420p"
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
        raise InputError(f"input {path}: the folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    if start >= len(files):
        raise InputError(f"input {path}: start={start} but the folder holds {len(files)} frames")
    chosen = files[start:start + count]
    images = []
    for f in chosen:
        try:
            with Image.open(f) as im:
                im.load()
                images.append(im.copy())
        except OSError as e:
            raise InputError(f"input {f}: could not be read as an image ({e})") from None
    gray = all(im.mode in ("1", "L", "LA", "I", "I;16", "F") for im in images)
    arrays = []
    for f, im in zip(chosen, images):
        a = np.asarray(im.convert("L") if gray else im.convert("RGB"), dtype=np.float32) / 255.0
        if arrays and a.shape != arrays[0].shape:
            raise InputError(f"input {f}: {a.shape[1]}x{a.shape[0]} pixels, but {chosen[0].name} has "
                             f"{arrays[0].shape[1]}x{arrays[0].shape[0]}; frames must share one size")
        arrays.append(a)
    frames = np.stack(arrays)
    frames = frames[..., None] if gray else frames
    h, w = frames.shape[1:3]
    return Clip(frames, None, f"{_taken(start, len(frames))} of {path}/ ({w}x{h} {_colour(frames.shape[-1])} images)")


# --- array files ----------------------------------------------------------------------------------


def _guess_layout(shape: tuple[int, ...], path: Path) -> str:
    """Axis letters (n clips, t time, c channels, h, w) for the unambiguous array shapes."""
    colour = (1, 3)
    if len(shape) == 3:
        return "thw"
    if len(shape) == 4 and shape[-1] in colour:
        return "thwc"
    if len(shape) == 4 and shape[1] in colour:
        return "tchw"
    if len(shape) == 5 and shape[-1] in colour:
        return "nthwc"
    if len(shape) == 5 and shape[2] in colour:
        return "ntchw"
    if len(shape) == 4:
        raise InputError(f"input {path}: an array of shape {shape} could be (t, n, h, w) clips, as in "
                         f"mnist_test_seq.npy, or (n, t, h, w); say which with --layout=tnhw or --layout=nthw")
    raise InputError(f"input {path}: an array of shape {shape}; expected (t, h, w), (t, h, w, c), (t, c, h, w), "
                     f"(t, n, h, w), (n, t, h, w) or (n, t, h, w, c), with c = 1 or 3")


def _load_array(path: Path) -> np.ndarray:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"input {path}: could not be read as a NumPy array ({e})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            if len(data.files) != 1:
                raise InputError(f"input {path}: holds arrays {data.files}; expected exactly one")
            return data[data.files[0]]
    return data


def _as_unit_floats(a: np.ndarray, path: Path) -> np.ndarray:
    """uint8 (or integers in 0..255) scaled to [0, 1]; floats must already be in [0, 1]."""
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if np.issubdtype(a.dtype, np.integer):
        if lo < 0 or hi > 255:
            raise InputError(f"input {path}: integer pixels in [{lo:g}, {hi:g}]; expected 0..255")
        return a.astype(np.float32) / 255.0
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise InputError(f"input {path}: float pixels in [{lo:.3g}, {hi:.3g}]; expected [0, 1] (or uint8 0..255)")
    return np.clip(a.astype(np.float32), 0.0, 1.0)


def read_array(path: Path, *, start: int = 0, count: int, clip: int = 0, layout: str = "auto") -> Clip:
    """Clip `clip` of an array file, frames `start` to `start + count`."""
    a = _load_array(path)
    layout = _guess_layout(a.shape, path) if layout == "auto" else layout
    if sorted(layout) != sorted(set(layout)) or not set("thw") <= set(layout) <= set("ntchw") \
            or len(layout) != a.ndim:
        raise InputError(f"layout={layout!r} for an array of shape {a.shape} from {path}: expected one letter per "
                         "axis from n (clips), t (time), c (channels), h, w, with t, h and w present")
    full = layout + "".join(axis for axis in "nc" if axis not in layout)  # add the missing axes at size 1
    a = np.transpose(a.reshape(a.shape + (1,) * (len(full) - a.ndim)), [full.index(axis) for axis in "nthwc"])
    if not 0 <= clip < a.shape[0]:
        raise InputError(f"clip={clip}: {path} holds {a.shape[0]} clips (0..{a.shape[0] - 1})")
    if a.shape[-1] not in (1, 3):
        raise InputError(f"input {path}: {a.shape[-1]} channels; expected 1 or 3")
    if start >= a.shape[1]:
        raise InputError(f"input {path}: start={start} but the clip has {a.shape[1]} frames")
    frames = _as_unit_floats(a[clip, start:start + count], path)
    which = f" of clip {clip}" if a.shape[0] > 1 else ""
    h, w = frames.shape[1:3]
    return Clip(frames, None, f"{_taken(start, len(frames))}{which} of {path} ({w}x{h} {_colour(frames.shape[-1])}, "
                              f"array {a.dtype} read as {layout})")


# --- conversion for a model -------------------------------------------------------------------------


def to_model_frames(frames: np.ndarray, *, size: int, channels: int) -> tuple[Tensor, str]:
    """(t, H, W, c) in [0, 1] -> (t, channels, size, size) and a sentence saying what was changed.

    Non-square frames are centre-cropped to a square (no distortion), then resized with
    antialiasing; RGB becomes grayscale by luma (BT.601), grayscale becomes RGB by repetition.
    """
    x = rearrange(torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)), "t h w c -> t c h w")
    t, c, h, w = x.shape
    steps = []
    if h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        x = x[:, :, top:top + side, left:left + side]
        steps.append(f"centre-cropped {w}x{h} to {side}x{side}")
    if x.shape[-1] != size:
        steps.append(f"resized {x.shape[-1]}x{x.shape[-1]} to {size}x{size}")
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    if c == 3 and channels == 1:
        x = torch.einsum("tchw,c->thw", x, torch.tensor(LUMA))[:, None]
        steps.append("converted RGB to grayscale (luma)")
    elif c == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
        steps.append("repeated grayscale into RGB")
    elif c != channels:
        raise InputError(f"frames with {c} channels cannot be converted to {channels}")
    target = f"the model's {channels}x{size}x{size} frames"
    note = f"{', '.join(steps)} for {target}" if steps else f"already {target}; used as they are"
    return x.contiguous(), note
