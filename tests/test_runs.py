"""Runs that last: the offline wandb folder, exact resume, failed writes, NaN stops, torchrun DDP."""

import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
import torch
from conftest import tiny_args

import vidpred.training as training
from vidpred.checkpoint import load_checkpoint, save_checkpoint
from vidpred.objectives import Objective
from vidpred.config import ConfigError, parse_args
from vidpred.training import Interrupted, train

ROOT = Path(__file__).resolve().parents[1]
TRAIN_STEP = Objective.loss  # every kind's training step (objectives.py); tests wrap it
VAL = "--val_every=2", "--val_clips=8"  # validate (and keep best.pt) every 2 steps, on 8 held-out clips
TIMING = ("clips_per_s", "data_wait")  # wall-clock figures: the only fields a resumed log may change
# Two ranks average per-rank mean gradients and run convolutions on half batches: the same sums in
# another order, so float32 rounding (~1e-7 relative) differs and Adam carries it a few steps.
DDP_ATOL = 1e-5


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def assert_same_weights(a: Path, b: Path, atol: float = 0.0) -> None:
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    for name in wa:
        if atol == 0.0:
            assert torch.equal(wa[name], wb[name]), name
        else:
            torch.testing.assert_close(wa[name], wb[name], atol=atol, rtol=0, msg=name)


def wandb_records(run_dir: Path) -> list:
    """Every protobuf Record of an offline run's `run-ID.wandb` file (LevelDB-style log: 32 KiB
    blocks, 7-byte record headers: crc32c, length, type FULL=1 FIRST=2 MIDDLE=3 LAST=4)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb transaction log"
    records, pos, chunks = [], 7, b""
    while pos + 7 <= len(data):
        room = 32768 - pos % 32768
        if room < 7:  # a block's tail too short for a header is padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding up to the block's end
            pos += room
            continue
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def wandb_history(run_dir: Path) -> list[dict]:
    """History rows as {key: value}; media entries become {field: value} dicts."""
    rows = []
    for record in wandb_records(run_dir):
        if record.WhichOneof("record_type") != "history":
            continue
        row = {}
        for item in record.history.item:
            *parents, key = [item.key] if item.key else item.nested_key  # media: (name, field)
            node = row
            for parent in parents:
                node = node.setdefault(parent, {})
            node[key] = json.loads(item.value_json)
        rows.append(row)
    return rows


@pytest.fixture(autouse=True)
def wandb_home(tmp_path, monkeypatch):
    """Keep wandb's staging and cache files out of the user's home."""
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    train(parse_args(tiny_args(out, *VAL)))
    return out


def test_offline_wandb_folder_holds_history_media_config_and_checkpoint(tmp_path):
    out = tmp_path / "run"
    train(parse_args(tiny_args(out, "--wandb=offline", *VAL, "--media_every=3")))
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    history = wandb_history(run_dir)
    log = read_log(out)
    assert [row["_step"] for row in history] == [r["step"] for r in log] == [2, 3, 4, 6]
    for row, record in zip(history, log):
        for key, value in record.items():
            if key != "step":
                assert row[key] == pytest.approx(value, rel=1e-12), key
    assert {"loss", "energy", "latent_norm", "latent_active", "grad_norm", "lr",
            "clips_per_s", "data_wait", "val/energy", "val/best_energy"} <= history[-1].keys()
    assert {"eval/best_of_k_psnr", "eval/deterministic_ssim", "eval/diversity"} <= history[1].keys()

    media = [(row["samples"], row["futures"]) for row in history if "samples" in row]
    assert len(media) == 2  # steps 3 and 6
    for image, video in media:
        assert image["_type"] == "image-file" and video["_type"] == "video-file"
        for entry in (image, video):
            data = (run_dir / "files" / entry["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        with av.open(str(run_dir / "files" / video["path"])) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == 3 + 3  # context + horizon
        # evaluate.py's video layout: 4 clips x 6 columns (truth, z = 0, best, 3 samples) of 16-px frames
        # enlarged 6x in cells of 16 * 6 + 2 * 3 (border) + 4 (gap) = 106 px, after a 30-px title band
        assert frames[0].shape[:2] == (30 + 4 * 106, 4 + 6 * 106)

    kinds = {}
    for record in wandb_records(run_dir):
        kinds.setdefault(record.WhichOneof("record_type"), []).append(record)
    config = {u.key: json.loads(u.value_json) for u in kinds["run"][0].run.config.update}
    assert config["steps"] == 6 and config["latent"]["dim"] == 4
    (artifact,) = kinds["artifact"]
    assert artifact.artifact.type == "model"
    assert sorted(e.path for e in artifact.artifact.manifest.contents) == ["best.pt", "last.pt"]


def test_online_run_without_its_server_warns_and_records_offline(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match=r"wandb \(online\) could not start, recording offline instead"):
        train(parse_args(tiny_args(out, "--wandb=online")))
    assert [r["step"] for r in read_log(out)] == [2, 4, 6]
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    assert [row["_step"] for row in wandb_history(run_dir)] == [2, 4, 6]


def test_a_resumed_log_drops_what_the_interrupted_run_wrote_after_its_checkpoint(tmp_path):
    from vidpred.tracking import Tracker

    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (2, 4, 6)] + ['{"step": 8, "lo']  # killed mid-line
    (tmp_path / "log.jsonl").write_text("\n".join(lines))
    tracker = Tracker(tmp_path, config={}, name="x", project="p", mode="disabled", resume_step=4)
    tracker.log(5, {"loss": 0.5})
    tracker.close()
    assert [r["step"] for r in read_log(tmp_path)] == [2, 4, 5]


def test_disabled_wandb_writes_no_wandb_folder(uninterrupted):
    assert (uninterrupted / "log.jsonl").exists() and not (uninterrupted / "wandb").exists()


def _signal_at(monkeypatch, call: int, signum: int) -> None:
    """Send `signum` to this process from inside the `call`-th training step, as a user or scheduler would."""
    calls = []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signum)
        return TRAIN_STEP(*args, **kwargs)
    monkeypatch.setattr(Objective, "loss", step)


@pytest.mark.parametrize("how", ["stop_at", "SIGINT"])  # (SIGTERM: the torchrun test)
def test_interrupted_then_resumed_logs_and_ends_exactly_as_uninterrupted(uninterrupted, tmp_path, monkeypatch, how):
    """Stopped after step 3 (mid log window, between checkpoints), then resumed: exact equality."""
    out = tmp_path / "run"
    if how == "stop_at":
        train(parse_args(tiny_args(out, *VAL, "--stop_at=3")))
    else:
        handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
        _signal_at(monkeypatch, 3, getattr(signal, how))
        with pytest.raises(Interrupted, match=f"{how} stopped training after step 3") as stopped:
            train(parse_args(tiny_args(out, *VAL)))
        assert stopped.value.signum == getattr(signal, how)
        assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == handlers  # given back
        monkeypatch.setattr(Objective, "loss", TRAIN_STEP)
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 3
    assert [r["step"] for r in read_log(out)] == [2]
    train(parse_args(tiny_args(out, *VAL, "--resume")))

    assert without_timing(read_log(out)) == without_timing(read_log(uninterrupted))
    for name in ("last.pt", "best.pt"):
        assert_same_weights(out / "checkpoints" / name, uninterrupted / "checkpoints" / name)
    a, b = (load_checkpoint(p / "checkpoints" / "last.pt") for p in (out, uninterrupted))
    assert a["progress"] == b["progress"] and a["step"] == b["step"] == 6
    assert torch.equal(a["prior"]["z"], b["prior"]["z"])


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "config": {}, "prior": {}, "step": 1})
    real_save = torch.save

    def dies_halfway(obj, f):
        real_save(obj, f)
        f.truncate(f.tell() // 2)  # half the bytes reached the disk, then the "disk is full"
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(OSError, match=f"could not write {path}: no space left on device"):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "config": {}, "prior": {}, "step": 2})
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # the partial temporary file is gone


def test_a_process_killed_while_saving_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    writer = ("import sys, torch\nfrom vidpred.checkpoint import save_checkpoint\n"
              "save_checkpoint(sys.argv[1], {'model': {'w': torch.ones(3)}, 'config': {}, 'prior': {}, 'step': 1})\n"
              "print('saved', flush=True)\n"
              "big = {'model': {'w': torch.randn(8_000_000)}, 'config': {}, 'prior': {}, 'step': 2}\n"
              "while True:\n    save_checkpoint(sys.argv[1], big)\n")
    child = subprocess.Popen([sys.executable, "-c", writer, str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.stdout.readline() == b"saved\n"
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".last.pt.tmp-*")):  # a write of the big state is under way
        assert time.monotonic() < deadline and child.poll() is None, "the writer never started a save"
        time.sleep(0.002)
    child.kill()
    child.wait()
    assert load_checkpoint(path)["step"] in (1, 2)  # the old file or the new one, never a torn one


class _InfiniteGradient(torch.autograd.Function):
    """Identity forward, infinite backward: a finite loss whose gradient overflows."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


@pytest.mark.parametrize("poison, step, message", [
    ("nan_loss", 5, r"the loss is nan in step 5; its batch's pixels are all finite, so the model's output or loss "
                    r"diverged; .*last good checkpoint is \S+last.pt \(step 4\)\)\. Lower --lr"),
    ("inf_grad", 3, r"the gradient norm is (inf|nan) in step 3; the loss and the batch's pixels were finite; the "
                    r"backward pass overflowed; .*last good checkpoint is \S+last.pt \(step 2\)"),
    ("nan_loss", 1, r"the loss is nan in step 1; .*no checkpoint of this run was saved yet"),
])
def test_a_non_finite_step_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, poison, step,
                                                                            message):
    calls = []

    def step_fn(*args, **kwargs):
        loss, stats, z = TRAIN_STEP(*args, **kwargs)
        calls.append(1)
        if len(calls) == step:
            loss = loss * float("nan") if poison == "nan_loss" else _InfiniteGradient.apply(loss)
            stats["loss"] = loss.item()
        return loss, stats, z
    monkeypatch.setattr(Objective, "loss", step_fn)
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=message):
        train(parse_args(tiny_args(out, "--ckpt_every=2", *VAL)))
    last = out / "checkpoints" / "last.pt"
    if step == 1:
        assert not last.exists()
        return
    state = load_checkpoint(last)
    assert state["step"] == step - 1 - (step - 1) % 2  # the last multiple of ckpt_every before the bad step
    assert all(torch.isfinite(w).all() for w in state["model"].values())
    assert load_checkpoint(out / "checkpoints" / "best.pt")["step"] <= state["step"]


def test_a_non_finite_stop_blames_the_data_when_the_batch_held_non_finite_pixels():
    """Sources refuse such clips when they are read; a batch that still carries one (a source of
    one's own, a transform) must not be reported as a learning-rate problem."""
    video = torch.zeros(2, 4, 1, 8, 8)
    video[1, 2, 0, :3, 0] = float("nan")
    error = training._not_finite("the loss", float("nan"), 7, 6, Path("runs/x/checkpoints/last.pt"), video)
    assert str(error) == ("the loss is nan in step 7; the step's batch holds 3 non-finite pixel values (NaN or inf) "
                          "of 512, so the data is at fault, not the learning rate; stopped without saving, so no "
                          "checkpoint holds broken weights (the last good checkpoint is runs/x/checkpoints/last.pt "
                          "(step 6)). Find and fix those clips in the data, then go on with --resume")
    assert "--lr" not in str(training._not_finite("the gradient norm", float("inf"), 7, None, Path("x"), video))


def test_a_batch_the_ranks_cannot_split_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ConfigError, match=r"batch_size=4 is the global batch .* 3 processes .* multiple of 3"):
        train(parse_args(tiny_args(tmp_path / "run")))
    assert not (tmp_path / "run").exists()


def _torchrun(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(ROOT / "train.py"), *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_torchrun_matches_one_process_stops_on_sigterm_and_resumes_across(tmp_path):
    """Two gloo ranks, each with half of every global batch of 4:
    - SIGTERM to torchrun (which forwards it) stops both ranks after the same step s; rank 0 saves;
    - those weights equal one process's after s steps (within DDP_ATOL);
    - the torchrun checkpoint resumes in one process, and one process's checkpoint under torchrun,
      both ending where an uninterrupted single process ends."""
    long = ("--steps=1000", *VAL)  # long enough that the signal lands mid-run
    ddp = tmp_path / "ddp"
    run = _torchrun(*tiny_args(ddp, *long))
    deadline = time.monotonic() + 120
    while not ((ddp / "log.jsonl").exists() and (ddp / "log.jsonl").read_text()):
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[0][-3000:]
        time.sleep(0.05)
    os.kill(run.pid, signal.SIGTERM)
    output = run.communicate(timeout=120)[0]
    s = load_checkpoint(ddp / "checkpoints" / "last.pt")["step"]
    assert f"SIGTERM stopped training after step {s}; saved" in output, output[-3000:]
    assert 2 <= s < 1000

    single = tmp_path / "single"
    train(parse_args(tiny_args(single, *long, f"--stop_at={s}")))
    assert_same_weights(ddp / "checkpoints" / "last.pt", single / "checkpoints" / "last.pt", atol=DDP_ATOL)
    for a, b in zip(without_timing(read_log(ddp)), without_timing(read_log(single)), strict=True):
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6) for k in a)

    whole = tmp_path / "whole"  # the reference: one process, uninterrupted, to step s + 2
    train(parse_args(tiny_args(whole, *long, f"--stop_at={s + 2}")))
    train(parse_args(tiny_args(ddp, *long, f"--stop_at={s + 2}", "--resume")))  # torchrun's checkpoint, one process
    assert_same_weights(ddp / "checkpoints" / "last.pt", whole / "checkpoints" / "last.pt", atol=DDP_ATOL)

    run = _torchrun(*tiny_args(single, *long, f"--stop_at={s + 2}", "--resume"))  # one process's, under torchrun
    output = run.communicate(timeout=300)[0]
    assert run.returncode == 0, output[-3000:]
    assert f"resuming {single / 'checkpoints' / 'last.pt'} at step {s}" in output
    assert_same_weights(single / "checkpoints" / "last.pt", whole / "checkpoints" / "last.pt", atol=DDP_ATOL)
    assert [r["step"] for r in read_log(single)] == [r["step"] for r in read_log(whole)]


def test_a_run_killed_during_the_final_prior_refit_finishes_it_on_resume(uninterrupted, tmp_path, monkeypatch):
    """The process dies refitting the prior after the last step: last.pt is still the loop's last
    save (the final step is saved only with the refitted prior), so --resume redoes the rest and
    ends as the uninterrupted run ends."""
    out = tmp_path / "run"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # (as abrupt as kill -9 for what is on disk: nothing more is written)
    monkeypatch.setattr(training, "refit_prior", killed)
    with pytest.raises(KeyboardInterrupt):
        train(parse_args(tiny_args(out, *VAL, "--ckpt_every=3")))
    half = load_checkpoint(out / "checkpoints" / "last.pt")
    assert half["step"] == 3
    monkeypatch.undo()
    monkeypatch.setattr(Objective, "loss", TRAIN_STEP)
    train(parse_args(tiny_args(out, *VAL, "--ckpt_every=3", "--resume=auto")))
    a, b = (load_checkpoint(p / "checkpoints" / "last.pt") for p in (out, uninterrupted))
    assert torch.equal(a["prior"]["z"], b["prior"]["z"])  # the refitted bank, not the training one
    assert_same_weights(out / "checkpoints" / "last.pt", uninterrupted / "checkpoints" / "last.pt")
