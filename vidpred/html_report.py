"""report.html: one page that shows an evaluation to a person, self-contained so that it can be mailed,
attached to an issue or opened from an archive without the folder beside it.

It holds the protocol (context, horizon, K, clips, data, seed, prior, checkpoint, weights), the table
that `format_table` prints with the floors, the diversity / coverage / FVD line, what each row
means, and the pictures evaluate wrote: `per_frame.png` and `samples.png` as base64 `data:` URIs,
`samples.mp4` (or `.gif`) too while it is at most EMBED_VIDEO_BYTES, otherwise linked as the file
beside the page. No script, no style sheet, font or image from elsewhere: it renders offline.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from .report import table_rows

EMBED_VIDEO_BYTES = 8 * 2**20  # a larger video is linked, not embedded (base64 adds a third to the page)
MIME = {".png": "image/png", ".gif": "image/gif", ".mp4": "video/mp4"}
STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 0.25em 0.8em; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
tr.floor td { color: #777; font-style: italic; }
dl.protocol { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.protocol dt { font-weight: bold; }
dl.protocol dd { margin: 0; font-family: monospace; word-break: break-all; }
img, video { max-width: 100%; height: auto; border: 1px solid #ddd; }
.note { color: #555; font-size: 0.9em; }
"""


def _data_uri(path: Path) -> str:
    return f"data:{MIME[path.suffix.lower()]};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _pm(value: float, half: float | None, digits: int) -> str:
    """'14.77 ± 0.21' as format_table prints it; 'n/a' for the half-width of one clip."""
    return f"{value:.{digits}f} ± {'n/a' if half is None else f'{half:.{digits}f}'}"


def metrics_table(metrics: dict) -> str:
    """The rows of format_table as an HTML table: each group, then the floors (class "floor")."""
    lpips = "lpips" in metrics["best_of_k"]
    head = ["", "PSNR (dB)", "SSIM", "MSE"] + (["LPIPS"] if lpips else [])
    rows = []
    for label, m in table_rows(metrics):
        cells = [label, _pm(m["psnr"], m["psnr_ci95"], 2), _pm(m["ssim"], m["ssim_ci95"], 4), f"{m['mse']:.5f}"]
        cells += [_pm(m["lpips"], m["lpips_ci95"], 4)] if lpips else []
        css = ' class="floor"' if "(floor)" in label else ""
        rows.append(f"<tr{css}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
    return f'<table id="metrics">\n<thead>{header}</thead>\n<tbody>\n' + "\n".join(rows) + "\n</tbody>\n</table>"


def _summary_line(metrics: dict) -> str:
    parts = [f"diversity {_pm(metrics['diversity'], metrics['diversity_ci95'], 4)}"]
    cov = metrics["coverage"]
    parts.append("coverage n/a (the data cannot list its futures)" if cov is None else
                 f"coverage {_pm(cov, metrics['coverage_ci95'], 3)}")
    if "fvd" in metrics:
        parts.append(f"FVD {metrics['fvd']:.2f} (lower is better)")
    return " &nbsp;·&nbsp; ".join(html.escape(p) for p in parts)


def _protocol_list(p: dict) -> str:
    data = p["data"]
    items = [("context → horizon", f"{p['context']} → {p['horizon']} frames"), ("K (samples per clip)", p["samples"]),
             ("clips", f"{p['clips']} ({p['split']} split)"), ("data", f"{data['kind']}: " + ", ".join(
                 f"{k}={v}" for k, v in data.items() if k != "kind")),
             ("seed", p["seed"]), ("prior", p["prior"]),
             ("checkpoint", f"{p['checkpoint']} (step {p['checkpoint_step']}"
                                f"{', weight average' if p.get('model_weights') == 'average' else ''})")]
    for name, w in p.get("weights", {}).items():
        items.append((f"{name.upper()} weights", f"{w['path']} (sha256 {w['sha256']})"))
    return '<dl class="protocol">\n' + "\n".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in items) + "\n</dl>"


def _definitions(p: dict) -> str:
    entries = [(k.replace("_", " "), v) for k, v in p["groups"].items()] + list(p["metrics"].items())
    entries += [(k, p[k]) for k in ("diversity", "coverage", "fvd") if k in p]
    return "<ul>\n" + "\n".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in entries) + "\n</ul>"


def _video_block(video: Path | None) -> str:
    if video is None:
        return '<p class="note">No video was written (<code>--video=none</code>).</p>'
    link = f'<a href="{html.escape(video.name)}">{html.escape(video.name)}</a>'
    embed = video.stat().st_size <= EMBED_VIDEO_BYTES
    src = _data_uri(video) if embed else html.escape(video.name)  # too large: the file beside this page
    note = "" if embed else (f'<p class="note">{video.stat().st_size / 2**20:.1f} MB, over the '
                             f"{EMBED_VIDEO_BYTES // 2**20} MB embedded here: played from {link} beside this page.</p>")
    if video.suffix.lower() == ".gif":
        return f'<img id="samples-video" src="{src}" alt="the shown clips as an animated GIF">\n{note}'
    return (f'<video id="samples-video" src="{src}" controls loop muted autoplay playsinline>'
            f"your browser cannot play {link}</video>\n{note}")


def save_report_html(path: Path, metrics: dict, *, per_frame: Path, samples: Path | None,
                     video: Path | None) -> None:
    """Write report.html (see the module docstring) from metrics.json's dict and the pictures beside it."""
    p = metrics["protocol"]
    title = f"vidpred evaluation: {p['data']['kind']}, {p['context']} → {p['horizon']}, K = {p['samples']}"
    samples_block = (f'<img id="samples-sheet" src="{_data_uri(samples)}" alt="context, truth, z = 0, best and '
                     'sampled futures of the shown clips">' if samples is not None else
                     '<p class="note">No clips were shown (<code>--show=0</code>).</p>')
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<h2>Protocol</h2>
{_protocol_list(p)}
<h2>Scores</h2>
<p class="note">Mean over clips of each clip's time-averaged score ± its 95% interval. Read every row against the
floors: a prediction that knows nothing scores them.</p>
{metrics_table(metrics)}
<p id="summary">{_summary_line(metrics)}</p>
<h2>Per predicted frame</h2>
<img id="per-frame" src="{_data_uri(per_frame)}" alt="scores against the predicted frame's index">
<h2>Samples</h2>
<p class="note">Per clip: the truth, z = 0, the best sample by SSIM and sampled futures, each after the context
frames. Green borders: real frames; red: predicted.</p>
{samples_block}
<h2>Video</h2>
{_video_block(video)}
<h2>What the rows and figures mean</h2>
{_definitions(p)}
</body>
</html>
"""
    path.write_text(page, encoding="utf-8")
