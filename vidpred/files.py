"""Writing files so that a crash or a kill never leaves a half-written one under the real name."""

from __future__ import annotations

import errno
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


# What each errno means for a file that could not be written, in the user's words.
WRITE_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "its folder no longer exists (deleted or unmounted while the run wrote it)",
    errno.ENOTDIR: "a part of its folder path is not a folder",
    errno.EFBIG: "the file is larger than this process may write (the file-size limit, ulimit -f)",
    errno.EIO: "input/output error (a failing disk or a lost network mount)",
}


def write_reason(error: BaseException) -> str:
    """Why a write failed, in words: 'no space left on device', 'the file system is read-only', ..."""
    if isinstance(error, OSError) and error.errno in WRITE_REASONS:
        return WRITE_REASONS[error.errno]
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[:1].lower() + error.strerror[1:]
    return f"{type(error).__name__}: {error}"


class WriteError(OSError):
    """A file that could not be written: the message names the path and why ('no space left on
    device'), and, where the caller knows it, the last good checkpoint (`then`)."""

    def __init__(self, path: str | Path, error: BaseException, then: str = ""):
        errnum = error.errno if isinstance(error, OSError) else None
        super().__init__(errnum, write_reason(error), str(path))
        self.path, self.reason, self.then = Path(path), write_reason(error), then

    def __str__(self) -> str:
        return f"could not write {self.path}: {self.reason}" + (f"; {self.then}" if self.then else "")


class RecordingWriter:
    """A binary file wrapper that remembers the first OSError of a write: torch.save turns one into
    a RuntimeError ('unexpected pos ...') that has lost the reason (ENOSPC, EROFS, ...)."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name):
        return getattr(self.file, name)
