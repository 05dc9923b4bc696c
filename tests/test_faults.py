"""Faults a user meets: a disk that refuses a save, a folder that vanished, files that are not checkpoints.

The write failures are real: the child process runs under RLIMIT_FSIZE (CPython ignores SIGXFSZ,
so an oversized write fails with EFBIG exactly as a full disk fails with ENOSPC).
"""

import pickle
import resource
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from vidpred.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vidpred.files import WriteError

from conftest import tiny_args

ROOT = Path(__file__).resolve().parents[1]


def _train(args, limit: int | None = None) -> subprocess.CompletedProcess:
    def cap():
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, capture_output=True, text=True,
                          preexec_fn=cap, timeout=300)


def test_a_save_the_file_system_refuses_names_the_file_the_reason_and_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    first = _train(tiny_args(out, "--steps=4", "--ckpt_every=4", "--val_every=0", "--media_every=0"))
    assert first.returncode == 0, first.stderr
    last = out / "checkpoints" / "last.pt"
    before = last.read_bytes()
    # every file may grow to half a checkpoint: log.jsonl fits, the next checkpoint does not
    failed = _train(tiny_args(out, "--steps=8", "--ckpt_every=4", "--val_every=0", "--media_every=0", "--resume=true"),
                    limit=len(before) // 2)
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr and "unexpected pos" not in failed.stderr
    assert f"could not write {last}: the file is larger than this process may write" in failed.stderr
    assert f"the last good checkpoint, {last} (step 4), is intact" in failed.stderr
    assert last.read_bytes() == before  # the previous save is untouched
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.pt"]  # no temporary file left behind
    assert load_checkpoint(last)["step"] == 4


def test_a_first_save_that_fails_says_there_is_nothing_to_go_on_from(tmp_path):
    out = tmp_path / "run"
    failed = _train(tiny_args(out, "--steps=2", "--ckpt_every=2", "--val_every=0", "--media_every=0"), limit=20_000)
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr
    assert f"there is no checkpoint at {out / 'checkpoints' / 'last.pt'} to go on from" in failed.stderr


def test_a_run_folder_that_vanished_is_not_silently_made_again(tmp_path, monkeypatch):
    from vidpred import training

    out = tmp_path / "run"
    path = out / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True)
    shutil.rmtree(out)
    model = torch.nn.Linear(2, 2)
    with pytest.raises(WriteError, match="its folder no longer exists") as caught:
        training._save(path, {"model": model.state_dict()}, model, step=3, saved=None)
    assert f"there is no checkpoint at {path} to go on from" in str(caught.value)
    assert not out.exists()


def test_save_checkpoint_into_an_unwritable_place_raises_write_error_naming_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(WriteError, match=f"could not write {blocker / 'last.pt'}"):
        save_checkpoint(blocker / "last.pt", {"step": 1})


class Payload:  # a class: pickling it would need code to load
    pass


@pytest.mark.parametrize("make, said", [
    (lambda p: p.write_bytes(b""), "the file is empty (0 bytes)"),
    (lambda p: p.write_text("step=3\nweights here\n"), "it is a text file (it begins 'step=3"),
    (lambda p: p.write_bytes(bytes(range(7, 200))), "it holds unrecognized binary data"),
    (lambda p: zipfile.ZipFile(p, "w").writestr("readme.txt", "hi"), "it is a zip archive, but not one torch writes"),
    (lambda p: p.write_bytes(pickle.dumps(Payload())), "it is a Python pickle"),
    (lambda p: torch.save({"model": Payload()}, p), "it is a torch file holding Python objects"),
    (lambda p: torch.save([1, 2], p), "it is a torch file holding a list, not a dict"),
    (lambda p: torch.save({"model": {}}, p), "holding a dict without config, prior, step"),
])
def test_a_file_that_is_not_a_vidpred_checkpoint_says_so_and_never_suggests_unsafe_loading(tmp_path, make, said):
    path = tmp_path / "last.pt"
    make(path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert said in message and str(path) in message
    assert "weights_only=False" not in message and "weights_only" not in message


def test_a_truncated_checkpoint_is_named_as_cut_short(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", {"model": {"w": torch.ones(1000)}, "config": {}, "prior": {},
                                                  "step": 1})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut short or damaged"):
        load_checkpoint(path)
