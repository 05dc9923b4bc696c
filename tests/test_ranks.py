"""Several processes at once: evaluation split over torchrun's ranks, a video folder indexed once per node,
and an output folder that some rank does not see."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_args
from test_video import encoded_frames, write_video
from vidpred.config import parse_args
from vidpred.training import train

ROOT = Path(__file__).resolve().parents[1]
INDEXING = "indexing video files under"


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true", **extra}


def numbers(tree, prefix: str = "") -> dict[str, float]:
    """Every number of a metrics.json tree, by its path (lists flattened)."""
    out = {}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for key, value in items:
        if isinstance(value, (dict, list)):
            out.update(numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


def test_evaluation_split_over_two_ranks_scores_what_one_process_does(tmp_path):
    """5 test clips over 2 ranks (3 + 2): the same figures, clip by clip, as one process; and the test
    videos are indexed by one process of the node, the other reading the index it cached."""
    videos = tmp_path / "videos"
    for split, names in (("train", ["a"]), ("test", ["b", "c"])):
        (videos / split).mkdir(parents=True)
        for i, name in enumerate(names):
            write_video(videos / split / f"{name}.mp4", encoded_frames(3 * i))
    ckpt = train(parse_args(tiny_args(tmp_path / "run", "--steps=2")))  # 16x16 grey, as the videos are read
    args = [f"--ckpt={ckpt}", "--samples=4", "--context=3", "--horizon=3", "--clips=5", "--video=none", "--show=2",
            "--data.kind=video", f"--data.path={videos}"]
    one = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *args, f"--out={tmp_path / 'one'}"],
                         env=environment(XDG_CACHE_HOME=str(tmp_path / "cache1")), capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(ROOT / "evaluate.py"), *args, f"--out={tmp_path / 'two'}"],
                         env=environment(XDG_CACHE_HOME=str(tmp_path / "cache2")), capture_output=True, text=True)
    assert two.returncode == 0, (two.stdout + two.stderr)[-3000:]
    assert one.stdout.count(INDEXING) == 1 and (two.stdout + two.stderr).count(INDEXING) == 1
    a, b = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("one", "two"))
    assert len(a["best_of_k"]["psnr_per_clip"]) == len(b["best_of_k"]["psnr_per_clip"]) == 5
    x, y = numbers({k: v for k, v in a.items() if k != "protocol"}), numbers({k: v for k, v in b.items()
                                                                               if k != "protocol"})
    assert x.keys() == y.keys()
    assert all(y[k] == pytest.approx(x[k], rel=1e-4, abs=1e-5) for k in x), \
        [(k, x[k], y[k]) for k in x if y[k] != pytest.approx(x[k], rel=1e-4, abs=1e-5)][:5]
    assert (tmp_path / "two" / "samples.png").is_file() and (tmp_path / "two" / "report.html").is_file()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_rank_that_does_not_see_the_output_folder_stops_every_rank(tmp_path):
    """Two ranks whose working folders differ, as two nodes without a shared file system: the same
    relative --out names two folders. Both refuse before training, naming the folder and the reason."""
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        cwd = tmp_path / f"node{rank}"
        cwd.mkdir()
        env = environment(RANK=str(rank), LOCAL_RANK="0", WORLD_SIZE="2", LOCAL_WORLD_SIZE="1",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "train.py"), *tiny_args("run")], cwd=cwd, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [2, 2], outputs
    said = outputs[0][1]  # rank 0 speaks for all
    assert (f"1 of the 2 training processes (rank 1) do not see the output folder {tmp_path / 'node0' / 'run'} "
            f"that rank 0 holds on {socket.gethostname()}: with several nodes, --out must be on a file system "
            "every node mounts at the same path") in said, said[-2000:]
    assert not (tmp_path / "node0" / "run" / "checkpoints").exists()  # nothing trained
    assert not (tmp_path / "node1" / "run").exists()
