import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidpred.build import build_model, build_objective, load_predictor
from vidpred.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vidpred.config import parse_args
from vidpred.prior import LatentBank
from vidpred.sampling import sample_futures
from vidpred.training import compile_parts, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for a few steps, shared by the tests that only read it."""
    from conftest import tiny_args

    out = tmp_path_factory.mktemp("run")
    return train(parse_args(tiny_args(out))), out


def test_a_run_writes_config_log_and_a_plain_data_checkpoint(trained):
    ckpt, out = trained
    assert ckpt == out / "checkpoints" / "last.pt"
    config = json.loads((out / "config.json").read_text())
    assert config["steps"] == 6 and config["data"]["size"] == 16
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    for key in ("loss", "energy", "latent_active", "out_mean", "clips_per_s", "data_wait", "lr"):
        assert key in records[-1]
    assert "energy_before" not in records[-1]  # the default's one step is fused into the training pass
    validated = [r for r in records if "val/energy" in r]  # validation infers in separate passes: never worse
    assert validated and all(r["val/energy"] <= r["val/energy_z0"] + 1e-6 for r in validated)
    state = load_checkpoint(ckpt)  # weights_only=True: nothing but tensors and plain data inside
    assert state["step"] == 6 and state["config"] == config
    assert set(state["rng"]) == {"torch"} and "optimizer" in state
    assert state["prior"]["z"].shape[1] == 4 and state["prior"]["z"].shape[0] > 0


def _spread_bank(ckpt, tmp_path):
    """The checkpoint with a bank of spread-out latents (6 steps leave every z* at exactly 0)."""
    state = load_checkpoint(ckpt)
    bank = LatentBank(4, 64)
    bank.add(torch.randn(64, 4, generator=torch.Generator().manual_seed(0)))
    bank.fit()
    state["prior"] = bank.state_dict()
    return save_checkpoint(tmp_path / "spread.pt", state)


def test_reloading_a_checkpoint_gives_identical_samples(trained, tmp_path):
    ckpt = _spread_bank(trained[0], tmp_path)
    clips = torch.rand(2, 3, 1, 16, 16)
    runs = []
    for _ in range(2):
        model, cfg, bank, _ = load_predictor(ckpt)
        objective = build_objective(cfg, model)
        runs.append({p: sample_futures(objective, clips, samples=5, horizon=4, prior=p, bank=bank, seed=7)
                     for p in ("bank", "fitted", "learned")})
    for prior in runs[0]:
        assert runs[0][prior].shape == (2, 5, 4, 1, 16, 16)
        assert torch.equal(runs[0][prior], runs[1][prior])
        other = sample_futures(objective, clips, samples=5, horizon=4, prior=prior, bank=bank, seed=8)
        assert not torch.equal(other, runs[0][prior]), f"prior {prior}: another seed gave the same futures"


def test_missing_checkpoint_is_named():
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*nowhere/last.pt"):
        load_predictor("nowhere/last.pt")


def _run(script, *args):
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--latent.sparsity=1"], "unknown config key 'latent.sparsity'"),
    (["--horizon=30"], "context + horizon = 5 + 30 = 35 is longer than the clips"),
    (["--batch_size=many"], "batch_size='many': expected an integer"),
])
def test_train_cli_refuses_bad_config_before_doing_anything(tmp_path, args, message):
    result = _run("train.py", f"--out={tmp_path / 'x'}", *args)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "x").exists()


def test_evaluate_cli_names_a_missing_checkpoint(tmp_path):
    result = _run("evaluate.py", f"--ckpt={tmp_path / 'none.pt'}")
    assert result.returncode == 2 and f"checkpoint not found: {tmp_path / 'none.pt'}" in result.stderr


def test_evaluate_refuses_a_protocol_longer_than_the_data(trained, tmp_path):
    ckpt, _ = trained
    result = _run("evaluate.py", f"--ckpt={ckpt}", "--context=1", f"--out={tmp_path}")
    assert result.returncode == 2 and "needs at least 2 frames" in result.stderr


def test_fork_toy_best_of_k_beats_the_blurry_deterministic_prediction(tmp_path):
    """One sprite turns up or down with equal odds: z must carry the branch; z = 0 gives the blur. (The pixels
    decoder: every pixel reads z. The default glide decoder carries the sprite on at its constant motion and
    generates only where its trust mask gives up, which these 300 steps do not teach it to do at the fork.)"""
    from vidpred.data import ForkToy

    cfg = parse_args([f"--out={tmp_path}", "--wandb=disabled", "--model.decoder=pixels", "--data.kind=fork",
                      "--data.size=16", "--data.sprite_min=4", "--data.max_speed=2", "--data.frames=5", "--context=3", "--horizon=2",
                      "--model.widths=8,16,16", "--model.window=2", "--model.blocks=1", "--latent.dim=2",
                      "--steps=300", "--batch_size=32", "--lr=3e-3", "--warmup=20", "--log_every=100",
                      "--prior.fit_clips=256", "--prior.kind=bank"])
    model, _, bank, _ = load_predictor(train(cfg))
    objective = build_objective(cfg, model)
    toy = ForkToy(seed=1, split="test", size=16, frames=5, fork_at=3, branches=2, sprite=4, speed=2)
    clips = torch.stack([toy[i] for i in range(32)])
    context, truth = clips[:, :3], clips[:, 3:]
    futures = sample_futures(objective, context, samples=20, horizon=2, prior="bank", bank=bank, seed=0)
    det = objective.deterministic(context, horizon=2)
    err = (futures - truth[:, None]).pow(2).mean(dim=(2, 3, 4, 5))  # (clips, K)
    best, det_err = err.min(dim=1).values.mean(), (det - truth).pow(2).mean()
    assert best < 0.5 * det_err, f"best-of-20 MSE {best:.4f} vs deterministic {det_err:.4f}"
    # At the fork, z = 0 predicts the average of both branches: far closer to it than to either branch.
    # (Later frames of the z = 0 rollout are fed that blur back, so only the fork frame is exact.)
    branches = torch.stack([torch.from_numpy(toy.futures(i))[:, 3] for i in range(32)])  # (clips, 2, c, H, W)
    to_blur = (det[:, 0] - branches.mean(dim=1)).pow(2).mean()
    to_branch = (det[:, None, 0] - branches).pow(2).mean(dim=(2, 3, 4)).min(dim=1).values.mean()
    assert to_blur < 0.4 * to_branch, f"deterministic is {to_blur:.4f} from the blur, {to_branch:.4f} from a branch"


def test_sparsity_steering_revives_dead_latents_and_returns_to_the_configured_l1():
    from vidpred.training import steer_sparsity

    l1 = 0.01
    for _ in range(50):  # z all zero: l1 falls by 10% a step (a factor exp(-0.1))
        l1 = steer_sparsity(l1, 0.0, floor=0.02, cap=0.01)
    assert l1 == pytest.approx(0.01 * math.exp(-0.1 * 50), rel=1e-6)
    for _ in range(100):  # z in use again: back up, but never above the configured weight
        l1 = steer_sparsity(l1, 0.5, floor=0.02, cap=0.01)
    assert l1 == 0.01
    assert steer_sparsity(0.005, 0.03, floor=0.02, cap=0.01) == pytest.approx(0.005 * math.exp(0.05))
    assert steer_sparsity(1e-6, 0.0, floor=0.02, cap=0.01) == 1e-6  # bounded below


def test_a_steered_l1_is_saved_and_used_by_the_api(tmp_path):
    from conftest import tiny_args

    import vidpred
    from vidpred.build import trained_l1

    # l1 = 1 kills z at once (|dC/dz| is far below it): the steering must lower it, and say so
    ckpt = train(parse_args(tiny_args(tmp_path, "--latent.l1=1.0", "--latent.min_active=0.5", "--latent.warmup=0")))
    state = load_checkpoint(ckpt)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert records[-1]["l1"] < records[0]["l1"] <= 1.0
    assert trained_l1(state, parse_args(tiny_args(tmp_path))) == state["progress"]["l1"] < 1.0
    assert vidpred.load(ckpt).energy_fn.l1 == pytest.approx(state["progress"]["l1"])


def test_head_lr_gives_the_moving_heads_their_own_share_of_the_learning_rate(tmp_path):
    """--head_lr puts the kernels decoder's taps and mask in a second optimizer group that learns at
    head_lr x lr; every parameter is in exactly one group, and the default (1) keeps a single group."""
    from conftest import tiny_args

    from vidpred.training import param_groups

    model = build_model(parse_args(["--model.decoder=kernels"]))
    rest, heads = param_groups(model, 0.25)
    names = {id(p): name for name, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in heads["params"]) == ["decoder.mask.bias", "decoder.mask.weight",
                                                             "decoder.taps.bias", "decoder.taps.weight"]
    assert (rest["lr_share"], heads["lr_share"]) == (1.0, 0.25)
    assert sorted(map(id, rest["params"] + heads["params"])) == sorted(map(id, model.parameters()))
    assert len(param_groups(model, 1.0)) == 1
    assert len(param_groups(build_model(parse_args([])), 0.25)) == 1  # the pixels decoder has no moving heads

    out = tmp_path / "run"
    train(parse_args(tiny_args(out, "--model.decoder=kernels", "--model.kernel=3", "--head_lr=0.25", "--steps=4")))
    groups = load_checkpoint(out / "checkpoints" / "last.pt")["optimizer"]["param_groups"]
    assert len(groups) == 2 and groups[0]["lr"] > 0 and math.isclose(groups[1]["lr"], 0.25 * groups[0]["lr"])


def test_a_resume_that_changes_the_optimizer_groups_is_refused_and_another_share_holds(tmp_path):
    """head_lr 1 -> 0.5 changes the optimizer's groups: refused with the key named, the checkpoint left
    as it was; 0.5 -> 0.1 keeps them and the new share holds from the resumed step on."""
    from conftest import tiny_args

    out = tmp_path / "run"
    train(parse_args(tiny_args(out, "--model.decoder=kernels", "--model.kernel=3", "--steps=6", "--stop_at=2")))
    last = out / "checkpoints" / "last.pt"
    before = last.read_bytes()
    with pytest.raises(CheckpointError, match=r"optimizer state does not fit .*changed: head_lr 1\.0 -> 0\.5"):
        train(parse_args(tiny_args(out, "--model.decoder=kernels", "--model.kernel=3", "--steps=6", "--resume=true",
                                   "--head_lr=0.5")))
    assert last.read_bytes() == before

    other = tmp_path / "other"
    train(parse_args(tiny_args(other, "--model.decoder=kernels", "--model.kernel=3", "--steps=6", "--stop_at=2", "--head_lr=0.5")))
    train(parse_args(tiny_args(other, "--model.decoder=kernels", "--model.kernel=3", "--steps=6", "--resume=true", "--head_lr=0.1")))
    groups = load_checkpoint(other / "checkpoints" / "last.pt")["optimizer"]["param_groups"]
    assert math.isclose(groups[1]["lr"], 0.1 * groups[0]["lr"]) and groups[1]["lr_share"] == 0.1


def _still_and_moving_video(context=3, frames=3):
    """Two clips of 16x16 frames: clip 0 a still 8x8 square, clip 1 a 4x4 square moving 2 pixels a frame (the
    frames differ in what they show, so an untrained model's frame costs differ too)."""
    video = torch.zeros(2, context + frames, 1, 16, 16)
    video[0, :, :, 4:12, 4:12] = 1.0
    for t in range(context + frames):
        video[1, t, :, 2:6, 2 * t:2 * t + 4] = 1.0
    return video


def test_still_weights_count_still_frames_more_capped_and_fade_after_still_steps(tiny_config):
    """Each target weighs 1 / (copy-last MSE + 1e-3), mean 1 over the step, capped at still_weight; the
    schedule holds still_steps steps, then fades linearly to the plain cost (None) over as many again."""
    from vidpred.objectives import STILL_FLOOR

    cfg = tiny_config("--still_weight=100", "--still_steps=10")
    objective = build_objective(cfg, build_model(cfg))
    video = _still_and_moving_video()
    objective.at_step(0)
    weights = objective.still_weights(video, context=3)
    moving = 16 / 256  # a frame's copy MSE on the moving clip: 16 of 256 pixels change (8 off, 8 on)
    expected = torch.tensor([1 / STILL_FLOOR] * 3 + [1 / (moving + STILL_FLOOR)] * 3)
    assert torch.allclose(weights, expected / expected.mean())
    assert weights.shape == (6,) and weights[:3].min() > 10 * weights[3:].max()

    capped = build_objective(tiny_config("--still_weight=1.5"), build_model(cfg))
    capped.at_step(0)
    assert torch.allclose(capped.still_weights(video, context=3)[:3], torch.full((3,), 1.5))

    shares = []
    for step in (0, 9, 10, 15, 20, 30):
        objective.at_step(step)
        shares.append(objective.still_share)
    assert shares == [1.0, 1.0, 1.0, 0.5, 0.0, 0.0]
    objective.at_step(15)
    assert torch.allclose(objective.still_weights(video, context=3), 0.5 * weights + 0.5)
    objective.at_step(20)
    assert objective.still_weights(video, context=3) is None
    assert build_objective(tiny_config(), build_model(cfg)).still_weights(video, context=3) is None  # off by default


@pytest.mark.parametrize("kind", ["energy", "vae", "deterministic"])
def test_still_weight_weighs_each_frames_loss_and_reports_the_plain_energy(tiny_config, kind):
    """With still clips and moving clips in one batch the loss is the weighted mean of the frames' losses:
    the same model on the same batch gives the plain loss without still_weight and another with it,
    while the "energy" statistic stays the plain mean; with all frames alike the two losses agree. (The pixels
    decoder: the glide decoder predicts the sprite's constant motion exactly, so every frame costs the same.)"""
    from vidpred.build import build_energy

    options = (f"--model.kind={kind}", "--model.decoder=pixels", "--latent.dropout=0", "--latent.noise=0")
    plain_cfg = tiny_config(*options)
    weighted_cfg = tiny_config(*options, "--still_weight=10")
    torch.manual_seed(0)
    model = build_model(plain_cfg)
    energy = build_energy(plain_cfg)
    losses = {}
    for name, cfg in (("plain", plain_cfg), ("weighted", weighted_cfg)):
        objective = build_objective(cfg, model)
        objective.at_step(1000)
        draws = objective.draws(seed=0, step=0, clips=range(2), frames=3)
        for video_name, video in (("mixed", _still_and_moving_video()),
                                  ("alike", _still_and_moving_video()[[1, 1]])):
            loss, stats, _ = objective.loss(video, context=3, energy=energy, draws=draws)
            losses[name, video_name] = (loss.item(), stats["energy"])
    assert losses["plain", "mixed"][1] == pytest.approx(losses["weighted", "mixed"][1], rel=1e-5)
    assert losses["plain", "mixed"][0] != pytest.approx(losses["weighted", "mixed"][0], rel=1e-3)
    assert losses["plain", "alike"][0] == pytest.approx(losses["weighted", "alike"][0], rel=1e-5)


def test_still_weight_trains_and_resumes_and_bad_settings_are_refused(tmp_path):
    """A run with still_weight trains and resumes under it; a cap under 1, a schedule with no weight, and a
    weight on a run with no teacher-forced steps are refused before anything is written."""
    from conftest import tiny_args

    from vidpred.config import ConfigError

    out = tmp_path / "run"
    train(parse_args(tiny_args(out, "--still_weight=10", "--still_steps=2", "--steps=6", "--stop_at=3")))
    train(parse_args(tiny_args(out, "--still_weight=10", "--still_steps=2", "--steps=6", "--resume=true")))
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 6
    for args, message in ((["--still_weight=0.5"], r"still_weight=0\.5: expected 0 \(off\) or a cap of 1 or more"),
                          (["--still_steps=100"], "still_steps=100 schedules still_weight, which is 0"),
                          (["--still_weight=10", "--rollout=true"], "rollout=true with rollout_start=0 has none")):
        with pytest.raises(ConfigError, match=message):
            parse_args(tiny_args(tmp_path / "refused", *args))
    assert not (tmp_path / "refused").exists()
    parse_args(tiny_args(tmp_path / "ok", "--still_weight=10", "--rollout=true", "--rollout_start=3"))


def test_compiling_keeps_parameter_names_so_checkpoints_load_either_way(tiny_config):
    cfg = tiny_config()
    model, plain = build_model(cfg), build_model(cfg)
    compile_parts(model)
    parts = (model.encoder, model.predictor, model.decoder)
    assert all(part._compiled_call_impl is not None for part in parts)  # compiled lazily, at the first call
    assert model.prior._compiled_call_impl is None  # the prior is fitted on its own and stays eager
    assert list(model.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(model.state_dict())
