"""report.html as a person sees it: opened in a real headless Chromium (Debian's `chromium` package), whose
DOM after load must hold the table with the best-of-K rows and the floors, and whose decoders must turn the
embedded pictures and video into frames of the right size. The page itself carries no script: the tests
add a probe to a copy of it, which writes what the browser decoded into the DOM they read back."""

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import av
import pytest
from PIL import Image

from vidpred import html_report
from vidpred.evaluation import EvalConfig, evaluate
from vidpred.report import FLOOR_LABELS, GROUP_LABELS

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install "
                                                             "chromium; .ci/run installs it): report.html is checked "
                                                             "in a real headless browser")
PROBE = """<script>
function probe() {
  const v = document.querySelector("video");
  const out = {images: Array.from(document.images, i => [i.id, i.naturalWidth, i.naturalHeight]),
               video: v && {width: v.videoWidth, height: v.videoHeight, duration: v.duration,
                            error: v.error && v.error.code}};
  document.body.setAttribute("data-probe", JSON.stringify(out));
}
window.addEventListener("load", () => {
  const v = document.querySelector("video");
  if (v && v.readyState < 2 && !v.error) {
    v.addEventListener("loadeddata", probe);
    v.addEventListener("error", probe);
  } else probe();
});
</script>
"""


class _Dom(HTMLParser):
    """The parts of a page the tests read: every element's attributes, the text of each table row's cells,
    and the protocol's terms and descriptions (dt, dd)."""

    def __init__(self, text: str):
        super().__init__()
        self.elements, self.rows, self.terms, self._text = [], [], {"dt": [], "dd": []}, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        if tag == "tr":
            self.rows.append((dict(attrs).get("class"), []))
        elif tag in ("td", "th", "dt", "dd"):
            self._text = ""

    def handle_endtag(self, tag):
        if self._text is None:
            return
        if tag in ("td", "th"):
            self.rows[-1][1].append(self._text.strip())
        elif tag in ("dt", "dd"):
            self.terms[tag].append(self._text.strip())
        self._text = None

    def handle_data(self, data):
        if self._text is not None:
            self._text += data

    def find(self, tag: str) -> list[dict]:
        return [a for t, a in self.elements if t == tag]

    def protocol(self) -> dict[str, str]:
        return dict(zip(self.terms["dt"], self.terms["dd"]))


def _open_in_chromium(page: Path, profile: Path) -> tuple[_Dom, dict]:
    """The DOM Chromium holds after loading a probed copy of `page` (beside it, so relative links resolve)."""
    probed = page.with_name(f"probed_{page.name}")
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update", "--disable-sync",
                             f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom",
                             probed.as_uri()], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    dom = _Dom(result.stdout)
    body = dom.find("body")[0]
    assert "data-probe" in body, f"the probe never ran: {result.stdout[-500:]}"
    return dom, json.loads(body["data-probe"])


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory):
    """One tiny model evaluated twice, writing an MP4 and a GIF (with LPIPS, for its column)."""
    from conftest import random_lpips_file, tiny_args
    from vidpred.config import parse_args
    from vidpred.training import train

    root = tmp_path_factory.mktemp("report")
    ckpt = train(parse_args(tiny_args(root / "run")))
    lpips = random_lpips_file(root / "lpips_vgg.pt", "vgg16")
    out = {}
    for video in ("mp4", "gif"):
        ecfg = EvalConfig(ckpt=str(ckpt), out=str(root / video), samples=4, context=3, horizon=3, clips=3, show=2,
                          show_samples=2, video=video, lpips=str(lpips))
        out[video] = (root / video, evaluate(ecfg))
    return out


def test_the_page_needs_nothing_from_elsewhere_and_embeds_the_very_files_evaluate_wrote(evaluations):
    folder, _ = evaluations["mp4"]
    text = (folder / "report.html").read_text(encoding="utf-8")
    dom = _Dom(text)
    assert not dom.find("script") and not dom.find("link")
    references = [v for _, attrs in dom.elements for k, v in attrs.items() if k in ("src", "href")]
    assert references and not [r for r in references if re.match(r"[a-z]+://|//", r)], references
    for element_id, name in [("per-frame", "per_frame.png"), ("samples-sheet", "samples.png"),
                             ("samples-video", "samples.mp4")]:
        (element,) = [a for _, a in dom.elements if a.get("id") == element_id]
        header, payload = element["src"].split(",", 1)
        assert header == f"data:{html_report.MIME[Path(name).suffix]};base64"
        assert base64.b64decode(payload) == (folder / name).read_bytes(), name


@needs_chromium
def test_chromium_shows_the_table_with_the_floors_the_protocol_and_decodes_every_picture(evaluations, tmp_path):
    folder, metrics = evaluations["mp4"]
    dom, probe = _open_in_chromium(folder / "report.html", tmp_path / "profile")
    (_, header), *rows = dom.rows
    assert header == ["", "PSNR (dB)", "SSIM", "MSE", "LPIPS"]
    assert [cells[0] for _, cells in rows] == list(GROUP_LABELS.values()) + list(FLOOR_LABELS.values())
    m = metrics["best_of_k"]  # the first row, with the numbers format_table prints
    assert rows[0][1][1:] == [f"{m['psnr']:.2f} ± {m['psnr_ci95']:.2f}", f"{m['ssim']:.4f} ± {m['ssim_ci95']:.4f}",
                              f"{m['mse']:.5f}", f"{m['lpips']:.4f} ± {m['lpips_ci95']:.4f}"]
    floors = [cells for css, cells in rows if css == "floor"]
    assert [cells[0] for cells in floors] == list(FLOOR_LABELS.values())
    assert floors[0][1].startswith(f"{metrics['floors']['blank']['psnr']:.2f} ± ")
    protocol = dom.protocol()
    assert protocol["context → horizon"] == "3 → 3 frames" and protocol["K (samples per clip)"] == "4"
    assert protocol["clips"] == "3 (test split)" and protocol["seed"] == "0" and protocol["prior"] == "learned"
    assert protocol["data"].startswith("sprites: ") and "size=16" in protocol["data"]
    assert protocol["LPIPS weights"].endswith(f"(sha256 {metrics['protocol']['weights']['lpips']['sha256']})")
    sizes = {element_id: [w, h] for element_id, w, h in probe["images"]}
    for element_id, name in [("per-frame", "per_frame.png"), ("samples-sheet", "samples.png")]:
        assert sizes[element_id] == list(Image.open(folder / name).size), element_id  # decoded, at full size
    _assert_plays(probe["video"], folder / "samples.mp4")


def _assert_plays(video: dict, path: Path) -> None:
    """The browser decoded the video at its size and length: context + horizon frames at 4 frames/s."""
    with av.open(str(path)) as container:
        context = container.streams.video[0].codec_context
        size = [context.width, context.height]
    assert video["error"] is None and [video["width"], video["height"]] == size, video
    assert video["duration"] == pytest.approx((3 + 3) / 4, abs=0.3)


@needs_chromium
def test_a_gif_is_embedded_as_an_image_and_a_video_over_the_limit_plays_from_beside_the_page(evaluations, tmp_path,
                                                                                             monkeypatch):
    folder, _ = evaluations["gif"]
    dom, probe = _open_in_chromium(folder / "report.html", tmp_path / "gif")
    (gif,) = [a for _, a in dom.elements if a.get("id") == "samples-video"]
    assert gif["src"].startswith("data:image/gif;base64,") and not dom.find("video")
    sizes = {element_id: [w, h] for element_id, w, h in probe["images"]}
    assert sizes["samples-video"] == list(Image.open(folder / "samples.gif").size)

    folder, metrics = evaluations["mp4"]
    monkeypatch.setattr(html_report, "EMBED_VIDEO_BYTES", 1000)  # the tiny test video is larger than this
    linked = folder / "linked.html"
    html_report.save_report_html(linked, metrics, per_frame=folder / "per_frame.png", samples=folder / "samples.png",
                                 video=folder / "samples.mp4")
    dom, probe = _open_in_chromium(linked, tmp_path / "linked")
    (video,) = dom.find("video")
    assert video["src"] == "samples.mp4" and {"href": "samples.mp4"} in dom.find("a")
    assert "played from" in linked.read_text(encoding="utf-8")
    _assert_plays(probe["video"], folder / "samples.mp4")
