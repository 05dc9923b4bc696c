"""A run folder is never overwritten by accident, and two live processes never write one folder."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tiny_args

from vidpred.checkpoint import load_checkpoint
from vidpred.config import ConfigError, parse_args
from vidpred.runfolder import RunFolderError
from vidpred.training import train

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (but the lock file, which only names its last holder)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def steps_logged(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 6-step run: last.pt, best.pt, log.jsonl and a preview at step 6."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(parse_args(tiny_args(out)))
    assert (out / "checkpoints" / "best.pt").exists() and (out / "media" / "samples_0000006.png").exists()
    return out


def test_a_new_run_where_a_checkpoint_is_refuses_and_leaves_every_file_as_it_was(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    before = digest(out)
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *tiny_args(out, "--steps=2")], cwd=tmp_path,
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    last = out / "checkpoints" / "last.pt"
    assert done.stderr.startswith(f"train.py: {out} already holds a run: {last} exists"), done.stderr
    for way in ("--resume=true", "--overwrite=true", "another --out"):
        assert way in done.stderr
    assert "Traceback" not in done.stderr
    assert digest(out) == before  # same bytes: checkpoints, log, config, previews
    assert load_checkpoint(last)["step"] == 6


def test_overwrite_starts_the_folder_over_with_only_the_new_runs_files(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "notes.txt").write_text("mine")  # not a file of the run: stays
    train(parse_args(tiny_args(out, "--steps=4", "--overwrite=true")))
    assert steps_logged(out) == [2, 4]  # a fresh log, not the old one's [2, 4, 6] and then the new lines
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 4
    assert load_checkpoint(out / "checkpoints" / "best.pt")["step"] == 4
    assert sorted(p.name for p in (out / "media").iterdir()) == ["samples_0000004.mp4", "samples_0000004.png"]
    assert json.loads((out / "config.json").read_text())["steps"] == 4
    assert (out / "notes.txt").read_text() == "mine"


def test_resume_and_overwrite_together_are_refused():
    with pytest.raises(ConfigError, match=r"resume=true and overwrite=true contradict each other"):
        parse_args(["--resume=true", "--overwrite=true"])


def test_a_folder_a_live_run_writes_refuses_a_second_start_until_that_run_is_killed(tmp_path):
    """A real training process holds the folder; a second start (fresh or --resume) names its PID;
    after kill -9 no stale lock is left and --resume goes on from its last checkpoint."""
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *tiny_args(out, "--steps=100000",
                                                                               "--ckpt_every=1")],
                             cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoints" / "last.pt").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.05)
        for extra in ("--resume=true", "--overwrite=true"):
            with pytest.raises(RunFolderError) as refused:
                train(parse_args(tiny_args(out, extra)))
            assert str(refused.value).startswith(f"{out} is being written by another training process "
                                                 f"(PID {first.pid} on "), refused.value
            assert "wait for it to end or stop it, or choose another --out" in str(refused.value)
        assert first.poll() is None  # the refusals did not disturb it
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    step = load_checkpoint(out / "checkpoints" / "last.pt")["step"]
    train(parse_args(tiny_args(out, "--steps=100000", "--resume=true", f"--stop_at={step + 1}")))
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == step + 1


def test_resume_auto_starts_a_new_folder_then_goes_on_from_its_checkpoint(tmp_path):
    """One command for the first launch and every restart (torchrun --max-restarts, a requeued job)."""
    out = tmp_path / "run"
    train(parse_args(tiny_args(out, "--resume=auto", "--stop_at=4")))  # nothing there: starts at step 0
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 4
    first_log = (out / "log.jsonl").read_text().splitlines()
    train(parse_args(tiny_args(out, "--resume=auto")))  # the same command again: goes on to --steps
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 6
    log = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert (out / "log.jsonl").read_text().splitlines()[:len(first_log)] == first_log and log == [2, 4, 6]


def test_resume_takes_true_false_or_auto_and_names_them_otherwise():
    assert parse_args(["--resume=auto"]).resume == "auto" and parse_args(["--resume=yes"]).resume is True
    with pytest.raises(ConfigError, match=r"resume='later': expected a boolean \(true/false\) or one of auto"):
        parse_args(["--resume=later"])
    with pytest.raises(ConfigError, match="resume=auto and overwrite=true contradict each other"):
        parse_args(["--resume=auto", "--overwrite=true"])


def test_a_checkpoint_older_than_the_content_code_loads_and_a_resume_that_does_not_fit_says_why(tmp_path):
    """A checkpoint saved before model.skips and model.content existed was trained with the plain decoder
    (skips from the recent frames, no content code) and loads as that whatever today's defaults; resuming
    it with a decoder its weights do not fit is refused with the changed keys named, and the run is left
    as it was."""
    from vidpred.build import load_predictor
    from vidpred.checkpoint import CheckpointError, save_checkpoint

    out = tmp_path / "run"
    train(parse_args(tiny_args(out, "--steps=2", "--model.skips=recent", "--model.content=0")))
    last = out / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    for key in ("skips", "content"):  # as a checkpoint of an earlier vidpred holds its config
        del state["config"]["model"][key]
    save_checkpoint(last, {k: v for k, v in state.items() if k != "format"})
    model, cfg, _, _ = load_predictor(last)
    assert (model.skips, model.content, cfg.model.skips, cfg.model.content) == ("recent", None, "recent", 0)
    before = last.read_bytes()
    with pytest.raises(CheckpointError, match=r"does not fit .*changed: .*model\.skips recent -> context, "
                                              r"model\.content 0 -> 32"):
        train(parse_args(tiny_args(out, "--steps=4", "--resume=true", "--model.skips=context", "--model.content=32")))
    assert last.read_bytes() == before
