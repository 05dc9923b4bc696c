"""Reports a user must see are printed to stderr, so `-W ignore` cannot hide them; --wandb wins
over a stray WANDB_MODE."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import tiny_args
from test_video import FRAMES, encoded_frames, write_video

from vidpred.data import VideoFolder
from vidpred.reports import ReportWarning
from vidpred.tracking import Tracker

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def private_homes(tmp_path, monkeypatch):
    """wandb's staging files and the video index cache out of the user's home."""
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))


def videos(root: Path) -> Path:
    root.mkdir()
    write_video(root / "a.mp4", encoded_frames(0))
    write_video(root / "c.mp4", encoded_frames(6))
    good = (root / "a.mp4").read_bytes()
    (root / "broken.mp4").write_bytes(good[: len(good) // 2])  # truncated: the index (moov) is lost
    return root


@pytest.mark.parametrize("silenced", [["-W", "ignore"], ["-W", "error"], "PYTHONWARNINGS=ignore"])
def test_a_skipped_video_file_is_printed_whatever_the_warning_filters(tmp_path, silenced):
    root = videos(tmp_path / "videos")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    flags = silenced if isinstance(silenced, list) else []
    if isinstance(silenced, str):
        env["PYTHONWARNINGS"] = silenced.split("=")[1]
    script = ("import sys\nfrom vidpred.data import VideoFolder\n"
              "VideoFolder(sys.argv[1], frames=6, size=16, val_share=0)\n")
    done = subprocess.run([sys.executable, *flags, "-c", script, str(root)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    if flags == ["-W", "error"]:  # a user's own filter wins over the default that hides the duplicate
        assert done.returncode == 1 and "ReportWarning: skipping video" in done.stderr, done.stderr
    else:
        assert done.returncode == 0, done.stderr
    assert f"vidpred: skipping video {root / 'broken.mp4'}: InvalidDataError" in done.stderr
    assert "UserWarning" not in done.stderr  # said once, not once more as a Python warning


def test_a_clip_that_stops_decoding_is_printed_with_warnings_off(tmp_path, capsys):
    root = videos(tmp_path / "videos")
    with pytest.warns(ReportWarning, match="skipping video .*broken.mp4"):
        source = VideoFolder(root, frames=6, size=16, val_share=0)
    capsys.readouterr()
    data = (root / "c.mp4").read_bytes()
    (root / "c.mp4").write_bytes(data[: len(data) // 10])  # cut after indexing: its later clips no longer decode
    last = source.files.index("c.mp4") * (FRAMES // 6) + FRAMES // 6 - 1  # c.mp4's last clip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert source.clip(last).shape == (6, 1, 16, 16)  # replaced by the next clip that decodes
    assert f"vidpred: skipping clip {last} of {root}: " in capsys.readouterr().err
    assert source.failed == {last}


def test_a_tracker_that_cannot_start_is_printed_by_train_py_under_W_ignore(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "wandb").write_text("a file where wandb wants its folder")
    done = subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "train.py"),
                           *tiny_args(out, "--steps=2", "--wandb=offline")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "vidpred: wandb (offline) could not start, training goes on with log.jsonl only: NotADirectoryError" \
        in done.stderr, done.stderr[-3000:]
    assert (out / "log.jsonl").read_text() and (out / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize("stray", ["", "ofline"])
def test_an_explicit_wandb_mode_wins_over_a_stray_WANDB_MODE(tmp_path, monkeypatch, capsys, stray):
    monkeypatch.setenv("WANDB_MODE", stray)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = Tracker(tmp_path, config={"a": 1}, name="x", project="p", mode="offline")
        assert tracker.run is not None and tracker.run.settings.mode == "offline"
        tracker.log(1, {"loss": 0.5})
        tracker.close()
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1
    err = capsys.readouterr().err
    said = [str(w.message) for w in caught if issubclass(w.category, ReportWarning)]
    if stray:
        line = ("WANDB_MODE='ofline' in the environment is not a wandb mode (online, offline, shared, disabled, "
                "dryrun, run); ignored, --wandb=offline decides")
        assert f"vidpred: {line}\n" in err and said == [line]
    else:  # an empty variable is an unset one: nothing to say
        assert "vidpred:" not in err and said == []
