"""Clips from an array file: `.npy` or `.npz`, memory-mapped, in any of the layouts the field uses.

- `tnhw`: (frames, sequences, h, w), the layout of Srivastava et al.'s `mnist_test_seq.npy`;
- `nthw`, `nthwc`, `ntchw`: (sequences, frames, h, w[, c]) or with channels before the pixels.
uint8 pixels are divided by 255; float pixels must already lie in [0, 1] (NaN and +-inf are refused
when a clip is read, naming the clip). `auto` tells 4-d
layouts apart by taking the longer of the first two axes as the sequences (mnist_test_seq has
10,000 sequences of 20 frames) and 5-d ones by which axis has 1 or 3 entries; set `layout` when a
file breaks that rule (a `.json` beside the file with a "layout" entry, as `data/prepare.py`
writes, also settles it). An `.npz` stored without compression is memory-mapped too; a compressed one
is read into memory. One file is one split: train on one file, evaluate on another.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..choices import Layout, values
from .clips import ClipWindows, DataError, fit_frames, non_finite_pixels
from .clips import ClipSource

LAYOUTS = values(Layout)
EXPECTED = "(t, n, h, w), (n, t, h, w), (n, t, h, w, c) or (n, t, c, h, w) with c = 1 or 3"


def _read_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) from the .npy header at the file position."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


def _npz_member(path: Path) -> np.ndarray:
    """The one 4-d or 5-d array of an .npz, memory-mapped when it is stored uncompressed."""
    with zipfile.ZipFile(path) as zf:
        headers = {}
        for info in zf.infolist():
            if info.filename.endswith(".npy"):
                with zf.open(info) as f:
                    headers[info] = _read_header(f)
        found = {info: h for info, h in headers.items() if len(h[0]) in (4, 5)}
        if len(found) != 1:
            listing = ", ".join(f"{i.filename[:-4]} {h[0]}" for i, h in headers.items()) or "no arrays"
            raise DataError(f"{path}: expected exactly one 4-d or 5-d array of clips {EXPECTED}; it holds {listing}")
        (info, (shape, fortran, dtype)), = found.items()
        if info.compress_type != zipfile.ZIP_STORED or dtype.hasobject:
            return np.asarray(np.load(path)[info.filename[:-4]])
    with open(path, "rb") as f:  # stored: the .npy bytes lie in the zip as they are; map them
        f.seek(info.header_offset)
        name_len, extra_len = struct.unpack("<HH", f.read(30)[26:30])  # from the local file header
        f.seek(info.header_offset + 30 + name_len + extra_len)
        _read_header(f)
        offset = f.tell()
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def open_array(path: str | Path) -> np.ndarray:
    """The array of clips in `path`, memory-mapped where the format allows."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"array file {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        if path.suffix == ".npz":
            return _npz_member(path)
        if path.suffix == ".npy":
            return np.load(path, mmap_mode="r")
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable {path.suffix} file ({e})") from None
    raise DataError(f"{path}: expected a .npy or .npz file")


def detect_layout(shape: tuple[int, ...], layout: str, path: Path) -> str:
    """The layout of an array of `shape`: `layout` checked against it, or guessed when 'auto'."""
    ndim = len(shape)
    if layout == "auto" and ndim == 4:
        layout = "tnhw" if shape[0] < shape[1] else "nthw"
    elif layout == "auto" and ndim == 5:
        layout = "nthwc" if shape[4] in (1, 3) else "ntchw" if shape[2] in (1, 3) else "unknown"
    if layout not in LAYOUTS[1:] or len(layout) != ndim:  # one letter per axis
        given = "" if layout in ("auto", "unknown") else f" as {layout}"
        raise DataError(f"{path}: array of shape {tuple(shape)} cannot be read{given}: expected {EXPECTED}")
    channels = shape[layout.index("c")] if "c" in layout else 1
    if channels not in (1, 3):
        raise DataError(f"{path}: array of shape {tuple(shape)} read as {layout} has {channels} channels; "
                        f"expected 1 or 3 ({EXPECTED})")
    return layout


def as_layout(a: np.ndarray, layout: str, target: str) -> np.ndarray:
    """A view of `a`, stored in `layout` (with or without a channel axis), with its axes in `target`
    order (which names c); memory-mapped arrays stay memory-mapped."""
    full = layout if "c" in layout else layout + "c"
    a = a if "c" in layout else a[..., None]
    return np.transpose(a, [full.index(axis) for axis in target])


class ArrayClips(ClipSource):
    """Clips of `frames` frames (`frame_step` apart, a new clip every `stride` frames; 0: back to
    back) cut from each sequence of an array file, fitted to `size` x `size` and `channels`."""

    finite = True

    def __init__(self, path: str | Path, *, seed: int = 0, frames: int, size: int, channels: int = 1,
                 layout: str = "auto", frame_step: int = 1, stride: int = 0):
        self.path, self.seed, self.frames, self.size, self.channels = Path(path), seed, frames, size, channels
        self.array = open_array(self.path)
        described = self.path.with_suffix(".json")
        if layout == "auto" and described.is_file():
            try:
                layout = json.loads(described.read_text()).get("layout", "auto")
            except (json.JSONDecodeError, AttributeError):
                pass  # not our description: guess from the shape
        self.layout = detect_layout(self.array.shape, layout, self.path)
        self.clips = as_layout(self.array, self.layout, "ntchw")  # a view: (sequences, length, c, h, w)
        self.sequences, self.length = self.clips.shape[:2]
        self.windows = ClipWindows([self.length] * self.sequences, frames=frames, frame_step=frame_step,
                                   stride=stride)
        if len(self.windows) == 0:
            raise DataError(f"{self.path}: sequences of {self.length} frames are too short for clips of {frames} "
                            f"frames {frame_step} apart ({self.windows.span} frames)")
        dtype = self.array.dtype
        if dtype != np.uint8 and dtype != np.bool_ and not np.issubdtype(dtype, np.floating):
            raise DataError(f"{self.path}: pixels of type {dtype}; expected uint8 (0..255) or float (0..1)")
        if np.issubdtype(dtype, np.floating):
            sample = self._checked_frames(0)
            low, high = float(sample.min()), float(sample.max())
            if low < -1e-3 or high > 1 + 1e-3:
                raise DataError(f"{self.path}: float pixels in [{low:g}, {high:g}]; expected [0, 1] "
                                "(store 0..255 pixels as uint8)")
        print(f"array file {self.path}: {tuple(self.array.shape)} read as {self.layout} ({self.sequences} "
              f"sequences of {self.length} frames, {dtype}) -> {len(self)} clips of {frames} frames")

    def __len__(self) -> int:
        return len(self.windows)

    def _frames(self, index: int) -> np.ndarray:
        """The raw frames of clip `index`, as stored: (t, c, h, w)."""
        seq, start = self.windows.locate(index)
        return self.clips[seq, self.windows.frame_indices(start)]

    def _checked_frames(self, index: int) -> np.ndarray:
        """`_frames`, refusing NaN and +-inf, which resizing would spread and clamping would hide
        (inf -> 1), and which would otherwise surface only as a NaN loss."""
        frames = self._frames(index)
        if frames.dtype.kind == "f" and not np.isfinite(frames).all():
            seq, start = self.windows.locate(index)
            taken = self.windows.frame_indices(start)
            raise non_finite_pixels(frames, f"{self.path}: clip {index} (sequence {seq}, frames {taken[0]}.."
                                            f"{taken[-1]})")
        return frames

    def clip(self, index: int) -> np.ndarray:
        video = np.ascontiguousarray(self._checked_frames(index))
        if video.dtype != np.uint8:  # bool and every float width (longdouble too) as float32
            video = video.astype(np.float32, copy=False)
        return fit_frames(torch.from_numpy(video), size=self.size, channels=self.channels).numpy()
