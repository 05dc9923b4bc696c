"""The data section of the config: kind defaults, and refusals that name the key."""

import json
import re
import runpy
from pathlib import Path

import pytest

from vidpred.config import ConfigError, parse_args

ROOT = Path(__file__).resolve().parents[1]


def test_mmnist_takes_the_sm_mnist_canvas_and_speed_unless_they_are_set(tmp_path):
    cfg = parse_args(["--data.kind=mmnist", f"--data.path={tmp_path}"])
    assert (cfg.data.size, cfg.data.max_speed) == (64, 4)
    cfg = parse_args(["--data.kind=mmnist", f"--data.path={tmp_path}", "--data.size=32"])
    assert (cfg.data.size, cfg.data.max_speed) == (32, 4)
    (tmp_path / "c.json").write_text(json.dumps({"data": {"max_speed": 2}}))
    cfg = parse_args(["--data.kind=mmnist", f"--data.path={tmp_path}", f"--config={tmp_path / 'c.json'}"])
    assert (cfg.data.size, cfg.data.max_speed) == (64, 2)
    assert parse_args([]).data.size == 32  # sprites keep theirs


@pytest.mark.parametrize("args, message", [
    (["--data.kind=video"], "data.kind=video needs --data.path: a folder of video files"),
    (["--data.kind=array", "--data.path=/no/such.npy"], "data.path=/no/such.npy: no such file; data.kind=array reads"),
    (["--data.kind=mmnist", "--data.path=/no/mnist"], "data.path=/no/mnist: no such folder"),
    (["--data.bounce=discrete", "--data.max_speed=1", "--data.branches=4"],
     "data.branches=4: discrete bounces pick among 2 .. 2 * data.max_speed + 1 = 3"),
    (["--data.val_share=1"], "data.val_share=1.0: expected a share in [0, 1)"),
    (["--data.layout=thwn"], "data.layout='thwn': expected one of auto, tnhw, nthw, nthwc, ntchw"),
    (["--data.frame_step=0"], "data.frame_step=0: expected a positive number"),
])
def test_bad_data_settings_refuse_to_start_naming_the_key(args, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_args(args)


def test_train_cli_names_an_unreadable_data_file_without_a_traceback(tmp_path, capsys):
    (tmp_path / "junk.npy").write_bytes(b"junk")
    main = runpy.run_path(str(ROOT / "train.py"), run_name="train")["main"]
    code = main(["--wandb=disabled", f"--out={tmp_path / 'run'}", "--data.kind=array",
                 f"--data.path={tmp_path / 'junk.npy'}"])
    assert code == 2
    assert f"train.py: {tmp_path / 'junk.npy'}: not a readable .npy file" in capsys.readouterr().err
