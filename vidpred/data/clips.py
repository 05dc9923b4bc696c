"""What every clip source shares: the `ClipSource` base, the error type, and for the file-backed
sources (video folders, array files) cutting sequences into clips of `frames` frames and fitting
decoded frames to the model's canvas."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from ..errors import ConfigError


class DataError(ConfigError):
    """Data that cannot be used as configured: the message names the file or folder and what was expected."""


def non_finite_pixels(frames: np.ndarray, where: str):
    """The DataError for frames (any layout) holding NaN or +-inf: how many of each, and where."""
    counts = {"NaN": int(np.isnan(frames).sum()), "+inf": int(np.isposinf(frames).sum()),
              "-inf": int(np.isneginf(frames).sum())}
    found = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    return DataError(f"{where}: {found} of its {frames.size} pixel values are not finite; expected numbers in [0, 1] "
                     "(or uint8 0..255): fix or drop that clip")


class ClipSource(Dataset):
    """A dataset of clips `(t, c, h, w)` float32 in [0, 1]: `source[i]` is a torch tensor.

    Generated sources (`finite = False`) are pure functions of (seed, split, index) and are read
    at ever new indices; finite ones (files) are read in seeded epochs of permutations.
    """

    frames: int
    channels: int
    size: int
    seed: int = 0
    finite = False
    lists_futures = False  # True where `futures(i)` can list every true continuation of clip i (coverage)

    def clip(self, index: int) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement clip(index)")

    def __getitem__(self, index: int) -> torch.Tensor:
        video = torch.from_numpy(self.clip(int(index)))
        if not bool(torch.isfinite(video).all()):  # the last gate: no source may serve NaN or inf pixels
            raise non_finite_pixels(video.numpy(), f"clip {int(index)} of {self.describe()}")
        return video

    def futures(self, index: int) -> np.ndarray:
        """(m, t, c, h, w): every clip that shares clip `index`'s context, where `lists_futures` says the
        source can list them; a DataError saying why not otherwise."""
        raise DataError(f"{self.describe()} cannot list the possible futures of a clip (mode coverage needs them): "
                        "only generated sources with deterministic or discrete bounces, and the fork toy, can")

    def describe(self) -> str:
        """The source, as an error message names it: its file or folder, else its kind."""
        where = getattr(self, "path", None) or getattr(self, "root", None)
        return str(where) if where is not None else f"the {type(self).__name__} source"


class ClipWindows:
    """Clips cut from sequences of known lengths: clip j of a sequence starts at frame j * stride
    and takes `frames` frames `frame_step` apart. Maps a clip index to (sequence, first frame)."""

    def __init__(self, lengths: list[int] | np.ndarray, *, frames: int, frame_step: int = 1, stride: int = 0):
        if frames < 1 or frame_step < 1 or stride < 0:
            raise ValueError(f"frames={frames}, frame_step={frame_step}, stride={stride}: expected positive "
                             "frames and frame_step, stride >= 0")
        self.frames, self.frame_step = frames, frame_step
        self.span = (frames - 1) * frame_step + 1  # source frames one clip covers
        self.stride = stride or self.span  # 0: clips follow each other without overlap
        lengths = np.asarray(lengths, dtype=np.int64)
        self.counts = np.where(lengths >= self.span, (lengths - self.span) // self.stride + 1, 0)
        self.ends = np.cumsum(self.counts)  # clip index just past each sequence's clips

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def locate(self, index: int) -> tuple[int, int]:
        """(sequence, first source frame) of clip `index`. Indices wrap around (clip n is clip 0),
        so code written for endless generated sources, which reads past the last training
        index (the prior's refit after training), also runs on files."""
        if len(self) == 0:
            raise IndexError("there are no clips")
        index %= len(self)
        seq = int(np.searchsorted(self.ends, index, side="right"))
        first = int(index - (self.ends[seq] - self.counts[seq]))
        return seq, first * self.stride

    def frame_indices(self, start: int) -> np.ndarray:
        """The source frames of the clip starting at `start`."""
        return start + self.frame_step * np.arange(self.frames)


def fit_frames(video: Tensor, *, size: int, channels: int) -> Tensor:
    """Frames `(t, c, H, W)` (uint8, or float in [0, 1]) -> float32 `(t, channels, size, size)` in
    [0, 1]: shorter side resized to `size` (antialiased), centre crop, grayscale <-> RGB."""
    if video.shape[1] == 3 and channels == 1:
        video = TF.rgb_to_grayscale(video)  # ITU-R 601 luma, as PIL's convert("L")
    elif video.shape[1] == 1 and channels == 3:
        video = video.repeat(1, 3, 1, 1)  # a copy: the in-place clamp below cannot write to an expanded view
    elif video.shape[1] != channels:
        raise ValueError(f"frames with {video.shape[1]} channels cannot be turned into {channels}")
    if video.shape[-2:] != (size, size):
        video = TF.resize(video, size, antialias=True)  # shorter side to `size`, aspect ratio kept
        video = TF.center_crop(video, [size, size])
    if video.dtype == torch.uint8:
        return video.float().div_(255.0)
    return video.float().clamp_(0.0, 1.0)  # resizing float frames may overshoot [0, 1] slightly
