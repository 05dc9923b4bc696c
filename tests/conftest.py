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


def random_lpips_file(path, trunk="alexnet", *, seed=0, layout="torchvision"):
    """LPIPS weights as a user's file holds them (docs/PROTOCOL.md), with a randomly initialised trunk and
    positive linear layers (trained LPIPS clamps them to >= 0): a torchvision trunk beside the lpips
    package's lin layers, or (layout="lpips") an `lpips.LPIPS` state dict; .safetensors by the suffix."""
    from safetensors.torch import save_file

    from vidpred.perceptual import LPIPS

    torch.manual_seed(seed)
    net = LPIPS(trunk)
    state = {k: v for k, v in net.state_dict().items() if k.startswith("features.")}
    if layout == "lpips":  # the trunk in slices, the ScalingLayer's buffers beside it
        state = {f"net.slice1.{k.split('.', 1)[1]}": v for k, v in state.items()}
        state["scaling_layer.shift"] = torch.zeros(1, 3, 1, 1)
    for i, lin in enumerate(net.lins):
        state[f"lin{i}.model.1.weight"] = torch.rand(1, len(lin), 1, 1)
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def random_i3d_file(path, *, seed=0):
    """A randomly initialised I3D with random batch-norm statistics (so that loading them matters), saved
    without the BN counters, as the converted pytorch-i3d files are. He-initialised convolutions keep the
    activations at scale through its 20 layers; PyTorch's default init shrinks them until every video gets
    nearly the same logits (FVDs of 1e-12)."""
    from vidpred.perceptual import I3D

    torch.manual_seed(seed)
    net = I3D()
    for weight in net.parameters():
        if weight.dim() == 5:
            torch.nn.init.kaiming_normal_(weight, nonlinearity="relu")
    state = net.state_dict()
    for key, value in state.items():
        if key.endswith("running_var"):
            value.uniform_(0.5, 2.0)
        elif key.endswith("running_mean") or key.endswith("bn.bias"):
            value.normal_(0, 0.1)
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)
    return path
