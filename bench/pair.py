"""Paired comparison across `bench/quality.py` reports, or across `evaluate.py` results: every model of the
given JSON files against one reference model, clip by clip, when they scored the same test clips.

    python bench/pair.py runs/bench/quality10.json runs/bench/quality10_noise.json --reference=energy
    python bench/pair.py runs/default/eval/metrics.json runs/other/eval/metrics.json --reference=default
    python bench/pair.py runs/camera/eval/metrics.json --reference=copy_last

A model trained in a later bench run (a new design) can then be compared with the rows of an earlier
one without training them again. Reports are comparable only if their evaluation protocol matches
(clips, K, context, horizon, seed) and their training overrides common to every model match;
otherwise the comparison is refused, naming the field that differs.

`evaluate.py`'s `metrics.json` files are read too (not mixed with bench reports): each is a model named
after its run folder (`runs/NAME/eval/metrics.json` -> NAME; another eval folder -> NAME/FOLDER), and
they must share the protocol (context, horizon, K, clips, seed, split, data). The floors of those clips
come as more models, `blank`, `copy_last` and `constant_motion` (files written before 2026-12-06 lack the last),
so a run can be paired against a floor (the futures
issue's real-video target: at or above copying the last frame). Their rows also count the predicted
frames where best of K is over each floor, in PSNR and in SSIM (per-frame means).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quality import paired  # noqa: E402  (bench/ is sys.path[0] when a bench runs)

PROTOCOL = ("clips", "samples", "eval_context", "eval_horizon", "seed")
EVALUATION = ("context", "horizon", "samples", "clips", "seed", "split", "data")  # what makes two evaluate.py results pairable
FLOORS = ("blank", "copy_last", "constant_motion")  # (metrics.json files before 2026-12-06 have the first two)


def check_same_clips(path: str, protocol: dict, first_path: str, first: dict) -> None:
    """Refuse `path` unless its protocol (the fields that choose the test clips) is the first report's."""
    for key, value in protocol.items():
        if value != first[key]:
            raise SystemExit(f"pair.py: {path}: {key}={json.dumps(value)} but {first_path} has "
                             f"{key}={json.dumps(first[key])}; paired figures need the same test clips")


def read_report(path: str):
    """The parsed JSON of `path` (each file is read once), refused with its reason when it cannot be read."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"pair.py: {path}: cannot read it as JSON ({type(e).__name__}: {e})")


def is_evaluation(report) -> bool:
    """Whether a parsed report is an `evaluate.py` result (metrics.json) rather than a bench report."""
    return isinstance(report, dict) and "protocol" in report and "best_of_k" in report


def evaluation_name(path: Path) -> str:
    """runs/NAME/eval/metrics.json -> NAME; runs/NAME/eval_10_30/metrics.json -> NAME/eval_10_30."""
    folder = path.resolve().parent
    return folder.parent.name if folder.name == "eval" else f"{folder.parent.name}/{folder.name}"


def frames_over(scores: list[float], floor: list[float]) -> int:
    return sum(s > f for s, f in zip(scores, floor, strict=True))


def evaluation_row(model: str, group: dict, floors: dict, steps, coverage: float | None = None) -> dict:
    """A row of `table` from one group of a metrics.json (per-clip scores), with frames over each floor."""
    over = {name: "; ".join(str(frames_over(group[f"{k}_per_frame"], floors[name][f"{k}_per_frame"]))
                            for k in ("psnr", "ssim")) for name in FLOORS if name in floors}
    return {"model": model, "steps": steps, "coverage": coverage,
            "best_of_k": {k: group[k] for k in ("psnr", "ssim")},
            "per_clip": {k: group[f"{k}_per_clip"] for k in ("psnr", "ssim")}, "over": over}


def load_evaluations(paths: list[str], reports: list) -> list[dict]:
    """The best-of-K rows of every metrics.json, then the floors' rows; refused unless the protocols match."""
    rows, first = [], None
    for path, report in zip(paths, reports, strict=True):
        try:
            protocol = {k: report["protocol"][k] for k in EVALUATION}
            best, floors = report["best_of_k"], report["floors"]
            row = evaluation_row(evaluation_name(Path(path)), best, floors, report["protocol"].get("checkpoint_step", "?"),
                                 report.get("coverage"))
        except (KeyError, TypeError) as e:
            raise SystemExit(f"pair.py: {path}: not an evaluate.py metrics.json with per-clip scores "
                             f"({type(e).__name__}: {e})")
        if first is None:
            first = (path, protocol, floors)
        else:
            check_same_clips(path, protocol, *first[:2])
        rows.append(dict(row, report=path))
    path, _, floors = first
    return rows + [dict(evaluation_row(name, floors[name], floors, "-"), report=path) for name in FLOORS if name in floors]


def load_rows(paths: list[str]) -> list[dict]:
    """The model rows of every report, refused unless their protocols and common overrides match."""
    reports = [read_report(path) for path in paths]
    kinds = {is_evaluation(report) for report in reports}
    if kinds == {True}:
        return load_evaluations(paths, reports)
    if len(kinds) > 1:
        raise SystemExit("pair.py: give either bench/quality.py reports or evaluate.py metrics.json files, not both")
    rows, first = [], None
    for path, report in zip(paths, reports, strict=True):
        try:
            protocol = {k: report["bench"][k] for k in PROTOCOL}
            common = report["common_overrides"]
            models = report["models"]
        except (KeyError, TypeError) as e:
            raise SystemExit(f"pair.py: {path}: not a bench/quality.py report ({type(e).__name__}: {e})")
        if first is None:
            first = (path, protocol, common)
        else:
            check_same_clips(path, protocol, *first[:2])
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
    floors = any("over" in r for r in rows)  # evaluate.py results: frames over each floor, PSNR; SSIM
    over = f"{'> blank':>9}{'> copy':>9}{'> motion':>9}" if floors else ""
    lines = [f"{'model':{width}}{'steps':>7}{'best-of-K PSNR':>16}{'SSIM':>9}{'cover.':>8}{over}"
             f"  {'vs ' + reference + ' PSNR':>22}{'SSIM':>20}  report"]
    for r in rows:
        b = r["best_of_k"]
        versus = ""
        if r is not ref:
            (dp, hp), (ds, hs) = (paired(r["per_clip"][k], ref["per_clip"][k]) for k in ("psnr", "ssim"))
            versus = f"{dp:>+16.2f} ± {hp:4.2f}{ds:>+11.4f} ± {hs:6.4f}"
        cov = "n/a" if r.get("coverage") is None else f"{r['coverage']:.3f}"
        over = "".join(f"{r['over'].get(name, '-'):>9}" for name in FLOORS) if floors else ""
        lines.append(f"{r['model']:{width}}{r['steps']:>7}{b['psnr']:>16.2f}{b['ssim']:>9.4f}{cov:>8}{over}"
                     f"{versus:<47}  {r['report']}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    reference = None  # bench reports: energy; evaluate.py results: the first file's run
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
        print("pair.py: give one or more bench/quality.py JSON reports or evaluate.py metrics.json files",
              file=sys.stderr)
        return 2
    rows = load_rows(paths)
    if reference is None:
        reference = rows[0]["model"] if "over" in rows[0] else "energy"
    print(table(rows, reference))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
