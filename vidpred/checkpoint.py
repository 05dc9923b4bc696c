"""Checkpoints as plain data: state dicts, optimizer, step, RNG states, the config, the latent prior.

Nothing is pickled but tensors and builtins, so `torch.load(weights_only=True)` reads them and a
checkpoint never depends on the code's class layout. Writes go to a temporary file that is then
renamed over the target, so an interrupted save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch

from .files import RecordingWriter, WriteError, atomic_path, write_reason
from .prior import LatentBank

FORMAT = 1


class CheckpointError(FileNotFoundError):
    """A checkpoint that is missing or unreadable; the message names the path."""


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write `state` to `path` atomically: a save that fails or is killed leaves the old file as it was.

    A write the file system refuses (disk full, read-only, the folder gone, ulimit -f) raises
    WriteError naming `path` and the reason, with the temporary file removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, tmp.open("wb") as raw:
            f = RecordingWriter(raw)
            try:
                torch.save({"format": FORMAT, **state}, f)
            except RuntimeError as e:  # torch's zip writer reports a failed write as 'unexpected pos'
                if f.error is None:
                    raise
                raise f.error from e
            raw.flush()
            os.fsync(raw.fileno())  # the bytes are on disk before the name points at them
    except OSError as e:
        raise WriteError(path, e) from None
    return path


def last_good(last: str | Path) -> str:
    """What a user may count on after a failed write: the checkpoint at `last`, read back to check
    that it is whole, with its step; or that there is none."""
    last = Path(last)
    if not last.exists():
        return f"there is no checkpoint at {last} to go on from"
    try:
        step = load_checkpoint(last)["step"]
    except CheckpointError as e:
        return f"the checkpoint at {last} is not usable either ({e})"
    return f"the last good checkpoint, {last} (step {step}), is intact: make room and go on with --resume=true"


def fitted_copy(bank: LatentBank) -> LatentBank:
    """A copy of a training run's latent bank with its distribution fitted, so that `fitted` sampling
    works from a mid-run checkpoint; the running bank stays as training left it."""
    copy = LatentBank.from_state_dict(bank.state_dict())
    if len(copy):
        copy.fit()
    return copy


def training_state(model, optimizer, bank: LatentBank, config: dict, step: int, progress: dict, average=None) -> dict:
    """Everything a run needs to go on exactly where it stopped: weights, optimizer, the step, the
    torch RNG, the config as plain data, the latent bank, `progress` (plain data the loop keeps) and,
    under --ema, the weight average (`ema`, which evaluation loads instead of `model`)."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "config": config, "prior": fitted_copy(bank).state_dict(),
             "rng": {"torch": torch.get_rng_state()}, "progress": dict(progress)}
    if average is not None:
        state["ema"] = average.state_dict()
    return state


EXPECTED = "expected a checkpoint that vidpred's train.py writes (a torch zip archive of tensors and plain data: model, config, prior, step)"


def mismatch_detail(error: RuntimeError) -> str:
    """What `load_state_dict` found wrong: the line after its 'Error(s) in loading state_dict' header
    (the whole message where there is no second line)."""
    lines = str(error).splitlines()
    return (lines[1] if len(lines) > 1 else lines[0] if lines else repr(error)).strip()


def _what_it_is(path: Path, error: BaseException) -> str:
    """What a file that torch.load(weights_only=True) refused holds, in words; never torch's own
    message, which suggests weights_only=False (that would run code from an untrusted file)."""
    with path.open("rb") as f:
        head = f.read(512)
    if not head:
        return "the file is empty (0 bytes)"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return ("it is a zip archive that is cut short or damaged (truncated: a full disk, a killed copy or "
                    "an unfinished download)")
        if not any(n.endswith("data.pkl") for n in names):
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            return f"it is a zip archive, but not one torch writes (it holds {shown or 'nothing'})"
        if isinstance(error, pickle.UnpicklingError):
            return ("it is a torch file holding Python objects besides tensors and plain data, which vidpred never "
                    "writes; it was not loaded, since loading such a file can run code from it")
        return "it is a torch zip archive whose contents are damaged"
    if head[:1] == b"\x80":
        return ("it is a Python pickle (or torch's legacy format) holding more than tensors and plain data; it was "
                "not loaded, since loading such a file can run code from it")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\n\r\t" for c in text):
        return f"it is a text file (it begins {text[:40]!r})"
    return f"it holds unrecognized binary data (it begins with bytes {head[:8].hex(' ')})"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A vidpred checkpoint's state; CheckpointError, naming the file and what was expected, for a
    missing or unreadable file and for anything else (random bytes, text, a foreign zip or pickle,
    a truncated checkpoint). Only tensors and plain data are ever unpickled (weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        hint = " (a run folder holds it at checkpoints/last.pt)" if path.is_dir() else ""
        raise CheckpointError(f"checkpoint not found: {path}{hint}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} could not be read: {write_reason(e)}") from None
    except Exception as e:  # torch raises several types for truncated or foreign files
        try:
            what = _what_it_is(path, e)
        except OSError as read_error:
            raise CheckpointError(f"checkpoint {path} could not be read: {write_reason(read_error)}") from None
        raise CheckpointError(f"{path} is not a vidpred checkpoint: {what}; {EXPECTED}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a vidpred checkpoint: it is a torch file holding a "
                              f"{type(state).__name__}, not a dict; {EXPECTED}")
    missing = {"model", "config", "prior", "step"} - set(state)
    if missing:
        raise CheckpointError(f"{path} is not a vidpred checkpoint: it is a torch file holding a dict without "
                              f"{', '.join(sorted(map(str, missing)))}; {EXPECTED}")
    wrong = [k for k, t in (("model", dict), ("config", dict), ("prior", dict), ("step", int))
             if not isinstance(state[k], t)]
    if wrong:
        raise CheckpointError(f"{path} is not a vidpred checkpoint: its {', '.join(wrong)} "
                              f"{'is' if len(wrong) == 1 else 'are'} not what vidpred writes; {EXPECTED}")
    if state.get("format", FORMAT) != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {state.get('format')!r}; this vidpred reads "
                              f"format {FORMAT} (saved by another version of vidpred?)")
    return state
