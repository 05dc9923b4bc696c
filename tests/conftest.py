"""Shared helpers: tiny configurations that train in seconds on a CPU."""

import os

import pytest
import torch

from vidpred.config import Config, parse_args

os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(min(2, torch.get_num_threads()))


def tiny_args(out, *extra: str) -> list[str]:
    """Command-line overrides for a small, fast model on 16x16 sprites."""
    return [f"--out={out}", "--wandb=disabled", "--steps=6", "--batch_size=4", "--log_every=2", "--ckpt_every=4",
            "--data.size=16", "--data.sprite_min=3", "--data.sprite_max=5", "--data.max_speed=2", "--data.frames=6",
            "--context=3", "--horizon=3", "--model.widths=8,16,16", "--model.window=2", "--model.blocks=1",
            "--latent.dim=4", "--prior.fit_clips=8", "--prior.bank=256", "--warmup=2", "--val_clips=8", *extra]


@pytest.fixture
def tiny_config(tmp_path):
    def make(*extra: str) -> Config:
        return parse_args(tiny_args(tmp_path / "run", *extra))
    return make
