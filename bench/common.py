"""What the bench scripts share: their option split and the machine's load."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from vidpred.config import parse_overrides, set_key


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: figures taken beside other jobs are disturbed."""
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def finish_report(report: dict, path: str | Path) -> None:
    """Note the load average at the end in `report`, write it as JSON to `path` (making its folder) and say so."""
    report["load_average_end"] = load_average()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nload average at the end {' '.join(map(str, report['load_average_end']))}; wrote {path}")


def split_options(argv: list[str], bench) -> list[str]:
    """Set the bench dataclass's own `--key=value` options on `bench`; return the others, which are
    training overrides, as `--key=value` arguments in their order (a bad value raises ConfigError)."""
    own = {f.name for f in dataclasses.fields(bench)}
    train_args = []
    for key, value in parse_overrides(argv).items():
        if key in own:
            set_key(bench, key, value)
        else:
            train_args.append(f"--{key}={value}")
    return train_args
