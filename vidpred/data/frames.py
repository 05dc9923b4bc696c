"""Clips from a folder of frame folders: one folder of image files (png, jpg, ...) per video, the
layout the field converts KTH and BAIR into (SVG's and SRVP's scripts write
`processed_64/boxing/person01_boxing_d1/image-001.png` and `processed_data/train/traj_0_to_255/1/0.png`).

Every folder under the root that holds image files is one video, its frames those images in
natural order (`2.png` before `10.png`), so nesting (action/video, split/shard/video) is free. A
clip is `frames` frames `frame_step` apart, a new one every `stride` frames (0: back to back), as
with video files; frames are read with PIL, resized (shorter side) and centre-cropped to the
canvas, in grayscale or RGB. Clips take turns among the videos (clip 0 of every video, then clip 1
of every video, ...), so that `evaluate.py --clips=N` scores clips of all the test videos, not the
first few videos' every clip.

Split (`split_by=auto`): with `train/` and `test/` (or `val/`) folders at the root, those (val reads
`val/` when there is one, else `test/`; test reads `test/`, else `val/`); otherwise a hashed
`val_share` of the videos, or, for a root that is one video, its last `val_share` of frames.
`split_by=subject` and `split_by=time` split every video by subject or in time, folders or not
(splits.py).

Images are listed, not opened, when the source is built (BAIR has 1.3 million). One that cannot
be decoded, or whose size differs from its video's first frame, is found when a clip reads it:
it is reported naming the file, and that clip (and every later clip that would read the file) is
replaced by the next good one, as corrupt video files are skipped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..reports import report
from .clips import ClipWindows, DataError, fit_frames
from .splits import check_split_by, hash_split, subject_split, time_split
from .clips import ClipSource

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
SPLIT_DIRS = {"train": ("train",), "val": ("val", "test"), "test": ("test", "val")}


def natural_key(name: str) -> list:
    """Sorts names with their numbers compared as numbers: frame 2 before frame 10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def find_frame_folders(root: Path) -> dict[str, list[str]]:
    """{video folder relative to `root` ('.' for the root itself): its image file names in order}."""
    if not root.is_dir():
        raise DataError(f"frame folder {root} does not exist" + (" (it is a file)" if root.exists() else ""))
    found = {}
    for folder, _dirs, names in os.walk(root):
        images = [n for n in names if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
        if images:
            found[Path(folder).relative_to(root).as_posix()] = sorted(images, key=natural_key)
    if not found:
        raise DataError(f"no image files under {root} (looked for {', '.join(IMAGE_EXTENSIONS)}); expected one "
                        "folder of frames per video")
    return {rel: found[rel] for rel in sorted(found, key=natural_key)}


def load_image(path: Path, channels: int) -> np.ndarray:
    """uint8 `(H, W)` (channels 1, ITU-R 601 luma for colour images) or `(H, W, 3)`; DataError naming the file."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L" if channels == 1 else "RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot be decoded ({type(e).__name__}: {e})") from None


class FrameFolders(ClipSource):
    """Clips `(frames, channels, size, size)` cut from the frame folders of one split of a root."""

    finite = True

    def __init__(self, root: str | Path, *, seed: int = 0, split: str = "train", frames: int, size: int,
                 channels: int = 1, frame_step: int = 1, stride: int = 0, val_share: float = 0.1,
                 split_by: str = "auto", test_subjects: str = "17-25"):
        if split not in SPLIT_DIRS:
            raise ValueError(f"split {split!r}: expected train, val or test")
        check_split_by(split_by)
        self.root, self.seed, self.split = Path(root), seed, split
        self.frames, self.size, self.channels = frames, size, channels
        videos = find_frame_folders(self.root)
        names = list(videos)
        tops = {d for d in ("train", "val", "test") if (self.root / d).is_dir()}
        by_folder = split_by == "auto" and "train" in tops and tops & {"val", "test"}
        whole = [(name, 0, len(videos[name])) for name in names]  # (video, first frame, frames) of each part taken
        if by_folder:
            top = next(d for d in SPLIT_DIRS[split] if d in tops)
            parts, how = [p for p in whole if p[0].split("/")[0] == top], f"the {top}/ folder"
        elif split_by == "subject":
            chosen = set(subject_split(names, split, test_subjects, str(self.root)))
            parts = [p for p in whole if p[0] in chosen]
            how = f"subjects {'' if split in ('val', 'test') else 'other than '}{test_subjects}"
        elif split_by == "time" or len(names) == 1:
            parts = [(name, *time_split(len(videos[name]), split, val_share)) for name in names]
            share = val_share if split in ("val", "test") else 1 - val_share
            how = f"the {'last' if split in ('val', 'test') else 'first'} {share:.0%} of each video's frames"
            if split != "train" and val_share == 0:
                raise DataError(f"{self.root} is split in time ({len(names)} video{'s' * (len(names) != 1)}), and "
                                f"data.val_share=0 holds no frames out for split {split!r}; raise data.val_share")
        else:
            chosen = set(hash_split(names, split, val_share))
            parts, how = [p for p in whole if p[0] in chosen], f"a hashed {val_share:.0%} of the videos held out"
        if not parts:
            raise DataError(f"no frame folder of {self.root} falls in split {split!r} (by {how}; {len(names)} "
                            "videos; add videos, raise data.val_share, or use train/ and test/ folders)")
        self.videos = [p[0] for p in parts]
        self.images = [videos[p[0]] for p in parts]
        self.offsets = [p[1] for p in parts]
        self.windows = ClipWindows([p[2] for p in parts], frames=frames, frame_step=frame_step, stride=stride)
        if len(self.windows) == 0:
            longest = max(p[2] for p in parts)
            raise DataError(f"the {split} frame folders of {self.root} are too short for clips of {frames} frames "
                            f"{frame_step} apart ({self.windows.span} frames; the longest has {longest})")
        counts = self.windows.counts
        turn = np.concatenate([np.arange(c) for c in counts])  # clip k of its video ...
        video = np.repeat(np.arange(len(counts)), counts)  # ... of video s
        self.order = np.lexsort((video, turn))  # first clip of every video, then the second of each, ...
        self.failed: set[int] = set()  # clips that would not read, replaced by the next good one
        self.bad: dict[Path, str] = {}  # images found unreadable, with the reason (each reported once)
        self._reported: set[Path] = set()
        self._first_size: dict[int, tuple[int, int] | None] = {}
        count = sum(map(len, videos.values()))
        videos_ = lambda n: f"{n} video{'s' * (n != 1)}"  # noqa: E731
        print(f"frame folders {self.root}: {videos_(len(names))}, {count} frames; split {split} ({how}): "
              f"{videos_(len(parts))}, {len(self)} clips of {frames} frames")

    def __len__(self) -> int:
        return len(self.windows)

    def locate(self, index: int) -> tuple[int, int]:
        """(video, first frame of the video's part) of clip `index`. Clips take turns among the
        videos (clip 0 of each, then clip 1 of each, ...), so the first N clips that evaluation
        reads spread over every video of the split instead of exhausting the first few."""
        return self.windows.locate(int(self.order[index % len(self)]))

    def frame_paths(self, index: int) -> list[Path]:
        """The image files of clip `index`, in order."""
        seq, start = self.locate(index)
        folder, names = self.root / self.videos[seq], self.images[seq]
        return [folder / names[i] for i in self.offsets[seq] + self.windows.frame_indices(start)]

    def _reference_size(self, seq: int) -> tuple[int, int] | None:
        """(width, height) of video `seq`'s first image, read from its header (None if unreadable)."""
        if seq not in self._first_size:
            try:
                with Image.open(self.root / self.videos[seq] / self.images[seq][0]) as image:
                    self._first_size[seq] = image.size
            except (OSError, SyntaxError, ValueError):
                self._first_size[seq] = None
        return self._first_size[seq]

    def read(self, index: int) -> np.ndarray:
        """The frames of clip `index`, uint8 `(frames, H, W)` or `(frames, H, W, 3)`; DataError
        naming the first image that cannot be decoded or has another size than its video's first."""
        paths = self.frame_paths(index)
        known = next((p for p in paths if p in self.bad), None)
        if known is not None:
            raise DataError(f"{known}: {self.bad[known]}")
        expected = self._reference_size(self.locate(index)[0])
        out = []
        for path in paths:
            try:
                frame = load_image(path, self.channels)
            except DataError as e:
                self.bad[path] = str(e).removeprefix(f"{path}: ")
                raise
            size = (frame.shape[1], frame.shape[0])
            expected = expected or size
            if size != expected:
                self.bad[path] = (f"{size[0]}x{size[1]} pixels, but its video's frames are "
                                  f"{expected[0]}x{expected[1]}")
                raise DataError(f"{path}: {self.bad[path]}")
            out.append(frame)
        return np.stack(out)

    def clip(self, index: int) -> np.ndarray:
        index %= len(self)  # indices wrap around, as in ClipWindows.locate
        for candidate in range(index, index + len(self)):  # a clip that fails is replaced by the next good one
            candidate %= len(self)
            if candidate in self.failed:
                continue
            try:
                frames = self.read(candidate)
            except DataError:
                self.failed.add(candidate)
                for path, reason in self.bad.items():
                    if path not in self._reported:
                        self._reported.add(path)
                        report(f"skipping image {path}: {reason} (clip {candidate} of {self.root}, and any "
                               "other clip that reads it)")
                continue
            video = torch.from_numpy(frames)
            video = video[:, None] if video.ndim == 3 else video.permute(0, 3, 1, 2)  # (t, c, H, W)
            return fit_frames(video, size=self.size, channels=self.channels).numpy()
        raise DataError(f"no clip of {self.root} ({self.split}) could be read: every one holds a bad image")
