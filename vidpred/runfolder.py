"""A run folder belongs to one run: a new run refuses a folder that holds one, and a lock keeps two
live training processes from writing the same folder.

- Starting a run (not `--resume`) where `checkpoints/last.pt` exists refuses, naming the checkpoint
  and the ways on: `--resume=true` continues it, `--overwrite=true` starts over (the old run's
  checkpoints, log.jsonl and preview media are removed first, so the folder never mixes two runs),
  or another `--out`.
- While a training process writes a folder it holds an advisory lock (`flock`) on `OUT/.lock`,
  which names its PID and host. A second process on the same folder, resumed or not, refuses,
  naming them. The kernel drops the lock when the holder exits, however it dies (kill -9
  included), so a lock is never stale; the file itself stays and means nothing without the lock.

Under torchrun only the main rank claims the folder; its verdict is shared, so every rank starts or
refuses together. Every other rank then checks that it sees the lock file the main rank just wrote
(a random number in it): on several nodes, an `--out` that is not on a file system all of them mount
at the same path would otherwise leave each node writing its own half of the run.
"""

from __future__ import annotations

import os
import random
import socket
from contextlib import contextmanager
from pathlib import Path

import torch

from .errors import ConfigError
from .distributed import Ranks, sum_over_ranks

try:
    import fcntl
except ImportError:  # Windows: no flock; the checkpoint check still applies
    fcntl = None

LOCK_NAME = ".lock"


class RunFolderError(ConfigError):
    """The output folder holds another run, or another process is writing it."""


class FolderLock:
    """An exclusive, non-blocking flock on `folder/.lock` for as long as it is held (see `release`)."""

    def __init__(self, folder: Path, nonce: int = 0):
        self.path = Path(folder) / LOCK_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # BlockingIOError: another process holds it
                holder = os.read(fd, 200).decode(errors="replace").split()
                os.close(fd)
                who = f"PID {holder[0]}" + (f" on {holder[1]}" if len(holder) > 1 else "") if holder else \
                    "a process that has not written its PID yet"
                raise RunFolderError(
                    f"{folder} is being written by another training process ({who}, which holds {self.path}); "
                    "wait for it to end or stop it, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()} {nonce}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def previous_run_files(out: Path) -> list[Path]:
    """What a run writes that a new run must not mix with its own: checkpoints, log and previews."""
    files = [out / "checkpoints" / "last.pt", out / "checkpoints" / "best.pt", out / "log.jsonl"]
    files += sorted((out / "media").glob("samples_*.png")) + sorted((out / "media").glob("samples_*.mp4"))
    return [f for f in files if f.exists()]


def check_start(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a fresh run where a run's checkpoint is; with `overwrite`, remove the old run's files."""
    last = out / "checkpoints" / "last.pt"
    if resume or not last.exists():
        return  # (--resume without a checkpoint: load_checkpoint names the missing file)
    if not overwrite:
        raise RunFolderError(
            f"{out} already holds a run: {last} exists, and a new run would replace it. To continue that run "
            "use --resume=true; to start over and replace it, --overwrite=true; or give another --out")
    for f in previous_run_files(out):
        f.unlink()


def lock_nonce(out: Path) -> int | None:
    """The random number the main rank wrote into `out/.lock` (None where there is no such file)."""
    try:
        fields = (Path(out) / LOCK_NAME).read_text().split()
        return int(fields[2])
    except (OSError, IndexError, ValueError):
        return None


@contextmanager
def claim(out: Path, ranks: Ranks, *, resume: bool, overwrite: bool):
    """Hold the output folder `out` for this training process (the main rank); every rank refuses together,
    also when some rank does not see the folder the main rank holds."""
    lock, error = None, None
    nonce = random.SystemRandom().randrange(1, 2**31) if ranks.main else 0
    if ranks.main:
        try:
            lock = FolderLock(out, nonce)
            check_start(out, resume=resume, overwrite=overwrite)
        except RunFolderError as e:
            error = e
    verdict = sum_over_ranks(torch.tensor([float(error is not None), float(nonce)], dtype=torch.float64), ranks)
    refused, nonce = verdict[0].item() > 0, int(verdict[1].item())
    try:
        if error is not None:
            raise error
        if refused:
            raise RunFolderError(f"the main rank refused the output folder {out} (its message says why)")
        sees = torch.zeros(ranks.world, dtype=torch.float64)
        sees[ranks.rank] = float(ranks.main or lock_nonce(out) == nonce)
        blind = [r for r, seen in enumerate(sum_over_ranks(sees, ranks).tolist()) if not seen]
        if blind:  # (rank 0 speaks for all)
            raise RunFolderError(
                f"{len(blind)} of the {ranks.world} training processes (rank {', '.join(map(str, blind))}) do not "
                f"see the output folder {out.resolve()} that rank 0 holds on {socket.gethostname()}: with several "
                "nodes, --out must be on a file system every node mounts at the same path")
        yield lock
    finally:
        if lock is not None:
            lock.release()
