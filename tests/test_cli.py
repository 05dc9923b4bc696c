"""The `vidpred` command: subcommands, --help that says what each key means, --print_config."""

import json
import sys
from pathlib import Path

import pytest

from vidpred.cli import main
from vidpred.config import from_dict, parse_args, tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_the_command_lists_its_subcommands_and_refuses_an_unknown_one(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"vidpred {c}" in out for c in ("train", "evaluate", "sample", "prepare"))
    assert main(["fit"]) == 2
    assert "unknown command 'fit': expected one of train, evaluate, sample, prepare" in capsys.readouterr().err
    assert main([]) == 2  # no command: the usage, and a failure status for scripts


def test_train_help_gives_each_key_its_default_type_meaning_and_allowed_values(capsys):
    assert main(["train", "--help"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  --")}
    assert "(choice)" in lines["--model.kind=energy"] and "vae" in lines["--model.kind=energy"]
    assert "noisy channel" in lines["--latent.noise=0.75"] and "(float)" in lines["--latent.noise=0.75"]
    assert "sparsity" in lines["--latent.l1=0.0"]
    assert "(list of int)" in lines["--model.widths=16,32,64"]
    # a choice whose comment does not list its values gets them appended
    assert lines["--data.channels=1"].endswith("[1 | 3]") or "3 (RGB)" in lines["--data.channels=1"]
    assert all(len(line.split(None, 2)) == 3 for line in lines.values()), "a key without a meaning"


def test_evaluate_help_says_which_weights_files_lpips_and_fvd_take(capsys):
    assert main(["evaluate", "--help"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  --")}
    assert "AlexNet or VGG16" in lines["--lpips="] and "docs/PROTOCOL.md" in lines["--lpips="]
    assert "I3D Kinetics-400" in lines["--fvd="] and "rgb_imagenet.pt" in lines["--fvd="]


def test_print_config_shows_the_resolved_config_and_trains_nothing(capsys, tmp_path):
    argv = [f"--out={tmp_path / 'run'}", "--steps=7", "--model.kind=vae", "--data.kind=mmnist",
            f"--data.path={tmp_path}"]
    assert main(["train", *argv, "--print_config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["steps"] == 7 and shown["data"]["size"] == 64  # mmnist's own default, resolved
    assert from_dict(shown) == parse_args(argv)
    assert not (tmp_path / "run").exists()
    assert main(["train", "--steps=-1", "--print_config"]) == 2
    assert "steps=-1: expected a positive number" in capsys.readouterr().err


def test_evaluate_print_config_and_its_refusals(capsys, tmp_path):
    assert main(["evaluate", "--ckpt=x.pt", "--samples=3", "--data.size=32", "--print_config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["samples"] == 3 and shown["data_overrides"] == {"size": "32"}
    assert main(["evaluate", "--samples=3"]) == 2
    assert "--ckpt" in capsys.readouterr().err


def test_the_installed_scripts_name_importable_functions():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["vidpred"] == "vidpred.cli:main"
    for target in scripts.values():
        module, func = target.split(":")
        __import__(module)
        assert callable(getattr(sys.modules[module], func))
