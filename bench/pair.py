"""Paired comparison across `bench/quality.py` reports: every model of the given JSON files against one
reference model, clip by clip, when the reports scored the same test clips.

    python bench/pair.py runs/bench/quality10.json runs/bench/quality10_noise.json --reference=energy

A model trained in a later bench run (a new design) can then be compared with the rows of an earlier
one without training them again. Reports are comparable only if their evaluation protocol matches
(clips, K, context, horizon, seed) and their training overrides common to every model match;
otherwise the comparison is refused, naming the field that differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quality import paired  # noqa: E402  (bench/ is sys.path[0] when a bench runs)

PROTOCOL = ("clips", "samples", "eval_context", "eval_horizon", "seed")


def load_rows(paths: list[str]) -> list[dict]:
    """The model rows of every report, refused unless their protocols and common overrides match."""
    rows, first = [], None
    for path in paths:
        try:
            report = json.loads(Path(path).read_text())
            protocol = {k: report["bench"][k] for k in PROTOCOL}
            common = report["common_overrides"]
            models = report["models"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"pair.py: {path}: not a bench/quality.py report ({type(e).__name__}: {e})")
        if first is None:
            first = (path, protocol, common)
        else:
            for key in PROTOCOL:
                if protocol[key] != first[1][key]:
                    raise SystemExit(f"pair.py: {path}: {key}={protocol[key]} but {first[0]} has "
                                     f"{key}={first[1][key]}; paired figures need the same test clips")
            if common != first[2]:
                raise SystemExit(f"pair.py: {path}: training overrides {common} differ from {first[0]}'s {first[2]}")
        rows += [dict(row, report=path) for row in models]
    return rows


def table(rows: list[dict], reference: str) -> str:
    matches = [r for r in rows if r["model"] == reference]
    if not matches:
        raise SystemExit(f"pair.py: reference={reference}: no such model in the reports "
                         f"(models: {', '.join(r['model'] for r in rows)})")
    ref = matches[-1]
    width = max(24, *(len(r["model"]) + 2 for r in rows))  # model names are left-aligned in this column
    lines = [f"{'model':{width}}{'steps':>7}{'best-of-K PSNR':>16}{'SSIM':>9}{'cover.':>8}"
             f"  {'vs ' + reference + ' PSNR':>22}{'SSIM':>20}  report"]
    for r in rows:
        b = r["best_of_k"]
        versus = ""
        if r is not ref:
            (dp, hp), (ds, hs) = (paired(r["per_clip"][k], ref["per_clip"][k]) for k in ("psnr", "ssim"))
            versus = f"{dp:>+16.2f} ± {hp:4.2f}{ds:>+11.4f} ± {hs:6.4f}"
        cov = "n/a" if r.get("coverage") is None else f"{r['coverage']:.3f}"
        lines.append(f"{r['model']:{width}}{r['steps']:>7}{b['psnr']:>16.2f}{b['ssim']:>9.4f}{cov:>8}{versus:<47}  {r['report']}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    reference = "energy"
    paths = []
    for arg in argv:
        if arg.startswith("--reference="):
            reference = arg.split("=", 1)[1]
        elif arg.startswith("--"):
            print(f"pair.py: unknown option {arg}; expected report paths and --reference=MODEL", file=sys.stderr)
            return 2
        else:
            paths.append(arg)
    if not paths:
        print("pair.py: give one or more bench/quality.py JSON reports", file=sys.stderr)
        return 2
    print(table(load_rows(paths), reference))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
