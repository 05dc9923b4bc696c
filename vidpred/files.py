"""Writing files so that a crash or a kill never leaves a half-written one under the real name."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path):
    """Yields a temporary path beside `path` to write to; on success it replaces `path` (atomic on
    POSIX: readers see the old file or the new one, never half), on any error it is deleted and the
    old file stays as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
