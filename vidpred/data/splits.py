"""How the file-backed sources (video files, frame folders) divide their sequences into train /
val / test when there are no `train/` and `test/` folders to say it:

- by subject (`data.split_by=subject`): the subject number in each sequence's name (KTH's
  `person07_walking_d1_uncomp`, also `subject07...` or `S7...`); sequences of the subjects in
  `data.test_subjects` are held out for val and test, all others train. No subject is in two splits.
- by time (`data.split_by=time`, and on its own for a single video): the last `data.val_share`
  of each sequence's frames is held out, the frames before it train.
- by sequence (otherwise): a hashed `data.val_share` of the sequences is held out.

As with the split folders, val and test are the same held-out sequences.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePosixPath

from ..choices import SplitBy, check_choice
from .clips import DataError

HELD_OUT = ("val", "test")
SUBJECT = re.compile(r"^(?:person|subject|s)[_-]?0*(\d+)(?![0-9])", re.IGNORECASE)


def check_split_by(split_by: str) -> None:
    check_choice("split_by", split_by, SplitBy)


def parse_subjects(text: str) -> set[int]:
    """'17-25' or '9,11' or '1-4,7' -> the subject numbers it names."""
    subjects: set[int] = set()
    for part in text.replace(" ", "").split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise DataError(f"data.test_subjects={text!r}: expected subject numbers and ranges, e.g. 17-25 or 9,11")
        lo, hi = int(match[1]), int(match[2] or match[1])
        if hi < lo:
            raise DataError(f"data.test_subjects={text!r}: the range {part} runs backwards")
        subjects |= set(range(lo, hi + 1))
    return subjects


def subject_of(name: str) -> int | None:
    """The subject number of a sequence named by its path (its innermost part that names one)."""
    for part in reversed(PurePosixPath(name).parts):
        match = SUBJECT.match(part)
        if match:
            return int(match[1])
    return None


def subject_split(names: list[str], split: str, test_subjects: str, where: str) -> list[str]:
    """The sequences of `split`: val and test hold those of `test_subjects`, train the others."""
    held = parse_subjects(test_subjects)
    subjects = {name: subject_of(name) for name in names}
    unnamed = [name for name, s in subjects.items() if s is None]
    if unnamed:
        raise DataError(f"data.split_by=subject, but {len(unnamed)} of the {len(names)} sequences of {where} name no "
                        f"subject (first: {unnamed[0]}); expected names such as person07_walking_d1 (KTH), "
                        "subject07_... or S7_...")
    if split in HELD_OUT:
        return [name for name in names if subjects[name] in held]
    return [name for name in names if subjects[name] not in held]


def hash_split(names: list[str], split: str, val_share: float) -> list[str]:
    """The held-out share of the names with the smallest path hashes (at least one of 2 or more), or the rest."""
    by_hash = sorted(names, key=lambda f: hashlib.sha1(f.encode()).hexdigest())
    held = max(1, round(val_share * len(names))) if val_share > 0 and len(names) > 1 else 0
    chosen = set(by_hash[:held]) if split in HELD_OUT else set(by_hash[held:])
    return [name for name in names if name in chosen]


def time_split(length: int, split: str, val_share: float) -> tuple[int, int]:
    """(first frame, frames) of a sequence of `length` frames that `split` takes: the last
    `val_share` of it (at least one frame) for val and test, the frames before that for train."""
    held = min(length, max(1, round(val_share * length))) if val_share > 0 else 0
    return (length - held, held) if split in HELD_OUT else (0, length - held)
