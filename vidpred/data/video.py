"""Clips from a folder of video files (mp4, avi, mkv, mov, webm, ...), decoded with PyAV.

Each file is probed once from its stream metadata (frame count or duration, frame rate, start
time) and by decoding its last frames — a truncated file promises frames it does not hold. The
results are cached per folder under `$XDG_CACHE_HOME/vidpred` (default `~/.cache/vidpred`),
keyed by each file's size and modification time, so later runs open no file to build the index.
A file that cannot be read is reported with its reason, skipped and counted; a folder with
nothing decodable is an error.

A clip is `frames` frames `frame_step` apart; clips follow each other every `stride` frames of a
file (0: back to back). Reading one seeks to the keyframe before its first frame and decodes
from there, never the whole file. Frames are resized (shorter side) and centre-cropped to the
canvas with torchvision, in grayscale or RGB.

Files are split by file: with `train/` and `test/` (or `val/`) subfolders, those; otherwise a
`val_share` of the files, chosen by a hash of their path (stable as files are added), is held out
for the `val` and `test` splits. One video (a folder holding one decodable file, or `root` naming
the file) is split in time: its last `val_share` of frames are held out. `split_by=subject` or
`time` splits every file by its subject or in time instead (splits.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from ..files import atomic_path
from ..reports import report
from .clips import ClipWindows, DataError, fit_frames
from .clips import ClipSource
from .splits import check_split_by, subject_split, time_split

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv",
                    ".3gp", ".ts")
INDEX_VERSION = 1


def find_videos(root: Path) -> list[str]:
    """Paths (relative to `root`, sorted) of every video file under `root`."""
    if not root.is_dir():
        raise DataError(f"video folder {root} does not exist" + (" (it is a file)" if root.exists() else ""))
    found = [p.relative_to(root).as_posix() for p in root.rglob("*")
             if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()]
    if not found:
        raise DataError(f"no video files under {root} (looked for {', '.join(VIDEO_EXTENSIONS)})")
    return sorted(found)


def _frame_index(frame: av.VideoFrame, start: float, fps: float) -> int:
    """The frame's position in the stream, from its timestamp (-1 for a frame without one)."""
    return -1 if frame.time is None else round((frame.time - start) * fps)


def _seek(container, stream, seconds: float) -> None:
    """Seek to the keyframe at or before `seconds` (stream time)."""
    container.seek(max(int(seconds / stream.time_base), 0), stream=stream, backward=True)


def probe_video(path: Path) -> dict:
    """{frames, fps, start, width, height} of a file's first video stream; DataError if unusable."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise DataError("no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            raise DataError("no frame rate in the stream metadata")
        fps = float(rate)
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        promised = stream.frames  # 0 in containers that do not store it (mkv, webm)
        if not promised:
            seconds = (float(stream.duration * stream.time_base) if stream.duration
                       else container.duration / av.time_base if container.duration else 0.0)
            promised = round(seconds * fps)
        if promised <= 0:
            raise DataError("neither a frame count nor a duration in the stream metadata")
        last = -1
        _seek(container, stream, start + (promised - 2) / fps)
        try:
            for frame in container.decode(stream):
                last = max(last, _frame_index(frame, start, fps))
        except av.FFmpegError:
            pass  # a damaged tail: `last` says how far decoding got
        if last < promised - 2:  # 1 frame of slack: durations round
            raise DataError(f"truncated or damaged: the metadata promise {promised} frames, "
                            f"decoding near the end {'fails' if last < 0 else f'stops at frame {last + 1}'}")
        return {"frames": last + 1, "fps": fps, "start": start,
                "width": stream.codec_context.width, "height": stream.codec_context.height}


def read_frames(path: Path, wanted: np.ndarray, *, fps: float, start: float, channels: int) -> np.ndarray:
    """Frames `wanted` (increasing stream positions) of a file's first video stream, uint8
    `(len(wanted), H, W)` in grayscale (channels 1) or `(len(wanted), H, W, 3)`; `fps` and `start`
    are the stream's, as `probe_video` gives them. Seeks to the keyframe before the first wanted
    frame and decodes from there, never the whole file."""
    fmt = "gray" if channels == 1 else "rgb24"
    # One converter for the clip: frame.to_ndarray(format=...) builds one per frame, 15x slower.
    convert = VideoReformatter()
    out: list[np.ndarray] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        # Half a frame early, so a timestamp rounded down still lands before the first frame;
        # if the keyframe found still lies past it (bad seek index), decode from the start.
        for seek_to in (start + (wanted[0] - 0.5) / fps, start):
            _seek(container, stream, seek_to)
            for frame in container.decode(stream):
                i = _frame_index(frame, start, fps)
                if not out and i > wanted[0]:
                    break
                if i >= wanted[len(out)]:
                    out.append(convert.reformat(frame, format=fmt).to_ndarray())
                    if len(out) == len(wanted):
                        return np.stack(out)
            if out:
                break
    raise DataError(f"{path}: decoding stops after {len(out)} of the {len(wanted)} frames from frame {wanted[0]}")


def index_file(root: Path) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vidpred"
    return cache / f"video-index-{hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]}.json"


def load_index(root: Path, files: list[str]) -> dict[str, dict]:
    """Metadata (or {'error': reason}) of every file, from the cache where the file is unchanged."""
    path = index_file(root)
    cached = {}
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
            cached = saved["files"] if saved.get("version") == INDEX_VERSION else {}
        except (json.JSONDecodeError, KeyError, TypeError):
            cached = {}  # a damaged cache is rebuilt
    index, probed = {}, 0
    for rel in files:
        stat = (root / rel).stat()
        key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        entry = cached.get(rel)
        if entry is None or {k: entry.get(k) for k in key} != key:
            if probed == 0:
                print(f"indexing video files under {root} ...")
            try:
                entry = {**key, **probe_video(root / rel)}
            except (av.FFmpegError, DataError, OSError, ZeroDivisionError) as e:
                reason = str(e) if isinstance(e, DataError) else f"{type(e).__name__}: {e}"
                entry = {**key, "error": reason}
            probed += 1
        index[rel] = entry
    if probed or set(cached) != set(files):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps({"version": INDEX_VERSION, "root": str(root.resolve()), "files": index}))
        except OSError as e:
            report(f"could not cache the video index at {path} ({e}); it will be rebuilt next time")
    return index


def split_files(root: Path, files: list[str], split: str, val_share: float) -> list[str]:
    """The files of `split`: from train/ and test/ (or val/) subfolders when there are, otherwise
    the held-out share of the files with the smallest path hashes (at least one of 2 or more)."""
    held_out_dir = next((d for d in ("test", "val") if (root / d).is_dir()), None)
    if (root / "train").is_dir() and held_out_dir:
        prefix = "train/" if split == "train" else f"{held_out_dir}/"
        return [f for f in files if f.startswith(prefix)]
    by_hash = sorted(files, key=lambda f: hashlib.sha1(f.encode()).hexdigest())
    held = max(1, round(val_share * len(files))) if val_share > 0 and len(files) > 1 else 0
    chosen = set(by_hash[:held]) if split in ("val", "test") else set(by_hash[held:])
    return [f for f in files if f in chosen]


class VideoFolder(ClipSource):
    """Clips `(frames, channels, size, size)` cut from the video files of one split of a folder."""

    finite = True

    def __init__(self, root: str | Path, *, seed: int = 0, split: str = "train", frames: int, size: int,
                 channels: int = 1, frame_step: int = 1, stride: int = 0, val_share: float = 0.1,
                 split_by: str = "auto", test_subjects: str = "17-25"):
        if split not in ("train", "val", "test"):
            raise ValueError(f"split {split!r}: expected train, val or test")
        check_split_by(split_by)
        self.root, self.seed, self.split = Path(root), seed, split
        self.frames, self.size, self.channels = frames, size, channels
        named = self.root if self.root.is_file() else None
        if named:  # one video file: a dataset split in time
            self.root, files = self.root.parent, [self.root.name]
        else:
            files = find_videos(self.root)
        index = load_index(self.root, files)
        self.skipped = {f: index[f]["error"] for f in files if "error" in index[f]}
        for rel, reason in self.skipped.items():
            report(f"skipping video {self.root / rel}: {reason}")
        good = [f for f in files if f not in self.skipped]
        if not good:
            raise DataError(f"none of the {len(files)} video files under {self.root} could be decoded "
                            f"(first: {files[0]}: {self.skipped[files[0]]})")
        in_folders = (self.root / "train").is_dir() and any((self.root / d).is_dir() for d in ("test", "val"))
        spans, how = None, ""  # spans: (first frame, frames) of each file that the split takes
        if split_by == "subject":
            self.files = subject_split(good, split, test_subjects, str(self.root))
            how = f" (subjects {'' if split in ('val', 'test') else 'other than '}{test_subjects})"
        elif split_by == "time" or (split_by == "auto" and len(good) == 1 and not in_folders):
            if split != "train" and val_share == 0:
                raise DataError(f"the videos of {self.root} are split in time ({len(good)} file"
                                f"{'s' * (len(good) != 1)}), and data.val_share=0 holds no frames out for split "
                                f"{split!r}; raise data.val_share")
            self.files = good
            spans = [time_split(index[f]["frames"], split, val_share) for f in good]
            share = val_share if split in ("val", "test") else 1 - val_share
            how = f" (the {'last' if split in ('val', 'test') else 'first'} {share:.0%} of each file's frames)"
        else:
            self.files = split_files(self.root, good, split, val_share)
        self.meta = [index[f] for f in self.files]
        self.spans = spans or [(0, m["frames"]) for m in self.meta]
        self.windows = ClipWindows([n for _, n in self.spans], frames=frames, frame_step=frame_step, stride=stride)
        if not self.files:
            raise DataError(f"no video file of {self.root} falls in split {split!r} ({len(good)} decodable "
                            "files; add files, raise data.val_share, or use train/ and test/ subfolders)")
        if len(self.windows) == 0:
            longest = max(n for _, n in self.spans)
            raise DataError(f"the {split} videos of {self.root}{how} are too short for clips of {frames} frames "
                            f"{frame_step} apart ({self.windows.span} frames; the longest has {longest})")
        self.failed: set[int] = set()  # clips that would not decode, replaced by the next good one
        n_split = f"{len(self.files)} file{'s' * (len(self.files) != 1)}"
        where = f"video file {named}" if named else f"video folder {self.root}"
        print(f"{where}: {len(files)} files, {len(good)} decodable, {len(self.skipped)} skipped; "
              f"split {split}{how}: {n_split}, {len(self)} clips of {frames} frames")

    def __len__(self) -> int:
        return len(self.windows)

    def read(self, index: int) -> np.ndarray:
        """The decoded frames of clip `index`, uint8 `(frames, H, W)` or `(frames, H, W, 3)`."""
        seq, start = self.windows.locate(index)
        meta = self.meta[seq]
        return read_frames(self.root / self.files[seq], self.spans[seq][0] + self.windows.frame_indices(start),
                           fps=meta["fps"],
                           start=meta["start"], channels=self.channels)

    def clip(self, index: int) -> np.ndarray:
        index %= len(self)  # indices wrap around, as in ClipWindows.locate
        for candidate in range(index, index + len(self)):  # a clip that fails is replaced by the next good one
            candidate %= len(self)
            if candidate in self.failed:
                continue
            try:
                frames = self.read(candidate)
            except (av.FFmpegError, DataError, OSError) as e:
                self.failed.add(candidate)
                report(f"skipping clip {candidate} of {self.root}: {e}")
                continue
            video = torch.from_numpy(frames)
            video = video[:, None] if video.ndim == 3 else video.permute(0, 3, 1, 2)  # (t, c, H, W)
            return fit_frames(video, size=self.size, channels=self.channels).numpy()
        raise DataError(f"no clip of {self.root} ({self.split}) could be decoded")
