"""`vidpred export`: a folder a colleague loads with `vidpred.load`, the same model as the checkpoint."""

import json

import pytest
import torch
from conftest import tiny_args

import vidpred
from vidpred.checkpoint import CheckpointError
from vidpred.cli import main
from vidpred.evaluation import evaluate, parse_eval_args
from vidpred.export import read_export
from vidpred.training import train
from vidpred.config import parse_args


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    train(parse_args(tiny_args(out, "--prior.kind=bank")))
    return out


def test_an_export_loads_as_the_same_model_and_draws_the_same_futures(run, tmp_path):
    folder = tmp_path / "shared"
    assert main(["export", f"--ckpt={run / 'checkpoints' / 'last.pt'}", f"--out={folder}"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                       "prior.safetensors", "vidpred.json"]
    original, shared = vidpred.load(run / "checkpoints" / "last.pt", device="cpu"), vidpred.load(folder, device="cpu")
    for (name, a), (_, b) in zip(original.model.state_dict().items(), shared.model.state_dict().items()):
        assert torch.equal(a, b), name
    context = torch.rand(2, 3, 1, 16, 16)
    assert torch.equal(original.sample(context, k=3, horizon=2, seed=5), shared.sample(context, k=3, horizon=2, seed=5))
    assert torch.equal(original.bank.z[:len(original.bank)], shared.bank.z[:len(shared.bank)])
    assert json.loads((folder / "config.json").read_text()) == json.loads((run / "config.json").read_text())
    card = (folder / "README.md").read_text()
    assert "trained for 6 steps of 4 clips on `sprites` data (16x16" in card and "Not evaluated" in card


def test_an_evaluated_run_exports_its_metrics_and_the_card_shows_them(run, tmp_path):
    ckpt = run / "checkpoints" / "last.pt"
    evaluate(*parse_eval_args([f"--ckpt={ckpt}", "--context=3", "--horizon=3", "--samples=2", "--clips=2",
                              "--video=none"]))
    folder = tmp_path / "shared"
    assert main(["export", f"--ckpt={ckpt}", f"--out={folder}"]) == 0
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics == json.loads((run / "eval" / "metrics.json").read_text())
    card = (folder / "README.md").read_text()
    assert f"| best of K | {metrics['best_of_k']['psnr']:.2f} | {metrics['best_of_k']['ssim']:.4f} |" in card
    assert "| blank (floor) |" in card
    # evaluation reads the exported folder as it reads the checkpoint
    again = evaluate(*parse_eval_args([f"--ckpt={folder}", "--context=3", "--horizon=3", "--samples=2", "--clips=2",
                                      "--video=none"]))
    assert (folder / "eval" / "metrics.json").is_file()  # an export's outputs go inside it
    assert again["best_of_k"]["psnr"] == pytest.approx(metrics["best_of_k"]["psnr"], abs=1e-9)


def test_export_never_replaces_an_export_and_refuses_incomplete_folders(run, tmp_path, capsys):
    ckpt = run / "checkpoints" / "last.pt"
    folder = tmp_path / "shared"
    assert main(["export", f"--ckpt={ckpt}", f"--out={folder}"]) == 0
    before = (folder / "model.safetensors").read_bytes()
    assert main(["export", f"--ckpt={ckpt}", f"--out={folder}"]) == 2
    assert f"{folder} already holds an exported model" in capsys.readouterr().err
    assert (folder / "model.safetensors").read_bytes() == before
    (folder / "prior.safetensors").unlink()
    with pytest.raises(CheckpointError, match="prior.safetensors is missing"):
        read_export(folder)
    assert main(["export", f"--out={tmp_path / 'x'}"]) == 2
    assert "--ckpt is required" in capsys.readouterr().err
