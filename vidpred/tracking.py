"""Where a run's numbers go: `log.jsonl` (one JSON object per logged step, readable by any tool)
and a wandb run (offline by default, so nothing needs a network; `wandb sync` uploads it later)."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path


class Tracker:
    def __init__(self, out: Path, *, config: dict, name: str, mode: str, resume: bool):
        self.path = Path(out) / "log.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.path.open("a" if resume else "w")
        self.run = None
        if mode != "disabled":
            self.run = self._start_wandb(out, config=config, name=name, mode=mode)

    @staticmethod
    def _start_wandb(out: Path, *, config: dict, name: str, mode: str):
        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            import wandb

            return wandb.init(project="vidpred", name=name, dir=str(out), mode=mode, config=config,
                              settings=wandb.Settings(init_timeout=120, console="off"))
        except Exception as e:  # a tracking failure must not stop training
            warnings.warn(f"wandb ({mode}) could not start, training goes on with log.jsonl only: {e}")
            return None

    def log(self, step: int, values: dict) -> None:
        clean = {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                 for k, v in values.items()}
        record = {"step": step, **{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                   for k, v in clean.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.run is not None:
            self.run.log(clean, step=step)

    def summary(self, values: dict) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def close(self) -> None:
        self.file.close()
        if self.run is not None:
            self.run.finish()
            self.run = None
