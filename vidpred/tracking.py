"""Where a run's numbers and pictures go: `log.jsonl` (one JSON object per logged step, readable by any
tool) and a wandb run (offline by default, so nothing needs a network; `wandb sync` uploads it later).

Tracking never stops training: an `online` run that cannot reach its server says so (on stderr,
see reports.py) and records offline instead, and a wandb failure mid-run says so and leaves
log.jsonl going.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from .files import WriteError
from .reports import report


WANDB_MODES = ("online", "offline", "shared", "disabled", "dryrun", "run")  # what wandb's Settings accept


def _plain(value):
    """JSON-safe scalars: floats stay floats, non-finite ones become null."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    value = float(value)
    return value if math.isfinite(value) else None


def _step_of(line: str) -> float:
    """The step of a log.jsonl line; a line cut short by a killed process counts as after any step."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


class Tracker:
    """log.jsonl and the wandb run of one training run (made by rank 0 only).

    `resume_step`: the step a resumed run continues from; records logged after it by the interrupted
    run are dropped, so the log reads as if the run had never stopped. `run_id` continues that wandb run.
    """

    def __init__(self, out: Path, *, config: dict, name: str, project: str, mode: str,
                 resume_step: int | None = None, run_id: str | None = None):
        self.path = Path(out) / "log.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if _step_of(line) <= resume_step]
        try:
            self.file = self.path.open("w")
            self.file.writelines(line + "\n" for line in kept)
            self.file.flush()
        except OSError as e:  # disk full, a read-only folder: the path and why (train.py adds the checkpoint)
            raise WriteError(self.path, e) from None
        self.name = name
        self.run = None
        if mode != "disabled":
            self.run = self._start_wandb(out, config=config, name=name, project=project, mode=mode, run_id=run_id)

    @staticmethod
    def _start_wandb(out: Path, *, config: dict, name: str, project: str, mode: str, run_id: str | None):
        os.environ.setdefault("WANDB_SILENT", "true")
        # wandb validates WANDB_MODE even when init() is given a mode, and a stray empty or misspelt
        # one would make it refuse to start: the --wandb option decides instead.
        stray = os.environ.get("WANDB_MODE")
        if stray is not None and stray not in WANDB_MODES:
            del os.environ["WANDB_MODE"]
            if stray.strip():  # (an empty variable is an unset one, and needs no word)
                report(f"WANDB_MODE={stray!r} in the environment is not a wandb mode ({', '.join(WANDB_MODES)}); "
                       f"ignored, --wandb={mode} decides")
        for attempt in (mode, "offline") if mode == "online" else (mode,):
            # A patient default, since a loaded machine starts wandb slowly; WANDB_INIT_TIMEOUT, when
            # set, bounds the wait for a server (an offline run has none to wait for).
            timeout = {} if attempt == "online" and "WANDB_INIT_TIMEOUT" in os.environ else {"init_timeout": 120}
            try:
                import wandb

                return wandb.init(project=project, name=name, dir=str(out), mode=attempt, config=config,
                                  id=run_id, resume="allow" if run_id else None,
                                  settings=wandb.Settings(console="off", **timeout))
            except Exception as e:  # a tracking failure must not stop training
                then = "recording offline instead (upload later with `wandb sync`)" if attempt == "online" else \
                    "training goes on with log.jsonl only"
                report(f"wandb ({attempt}) could not start, {then}: {type(e).__name__}: {e}", stacklevel=3)
        return None

    @property
    def run_id(self) -> str | None:
        return None if self.run is None else self.run.id

    def log(self, step: int, values: dict, *, images: dict[str, Path] | None = None,
            videos: dict[str, Path] | None = None) -> None:
        """One record for `step`: scalars to log.jsonl and wandb; image and video files to wandb."""
        record = {"step": step, **{k: _plain(v) for k, v in values.items()}}
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as e:
            raise WriteError(self.path, e) from None
        if self.run is None:
            return
        import wandb

        def call():
            media = {k: wandb.Image(str(p)) for k, p in (images or {}).items()}
            media.update({k: wandb.Video(str(p)) for k, p in (videos or {}).items()})
            self.run.log({**values, **media}, step=step)
        self._guard(call)

    def log_checkpoints(self, paths: list[Path], *, step: int) -> None:
        """The checkpoint files of `paths` that exist, as one wandb artifact of type model, aliased
        `latest` and `step-N`."""
        paths = [p for p in paths if p.exists()]
        if self.run is None or not paths:
            return
        import wandb

        def call():
            artifact = wandb.Artifact(re.sub(r"[^\w.-]", "_", f"{self.name}-{self.run.id}"), type="model",
                                      metadata={"step": step})
            for path in paths:
                artifact.add_file(str(path))
            self.run.log_artifact(artifact, aliases=["latest", f"step-{step}"])
        self._guard(call)

    def summary(self, values: dict) -> None:
        if self.run is not None:
            self._guard(lambda: self.run.summary.update(values))

    def _guard(self, call) -> None:
        try:
            call()
        except Exception as e:  # wandb trouble mid-run: keep training, keep log.jsonl
            report(f"wandb failed ({type(e).__name__}: {e}); log.jsonl goes on without it", stacklevel=3)
            self.run = None

    def close(self, exit_code: int = 0) -> None:
        if not self.file.closed:
            try:
                self.file.close()
            except OSError:  # a full disk refused the last flush; log() has raised WriteError for it already
                pass
        if self.run is not None:
            run, self.run = self.run, None
            try:
                import wandb

                run.finish(exit_code=exit_code)
                # finish() may return before wandb-core has written the run's files (seen in 0.31 after
                # logging an artifact); teardown waits for them, so they are complete when training returns.
                wandb.teardown()
            except Exception as e:
                report(f"wandb could not finish the run cleanly ({type(e).__name__}: {e})")
