"""--ema: the weight average kept beside training, saved in checkpoints and used by evaluation and export."""

import json

import pytest
import torch
from torch import nn

from vidpred.averaging import WeightAverage
from vidpred.build import load_predictor
from vidpred.checkpoint import CheckpointError, load_checkpoint
from vidpred.config import ConfigError, parse_args
from vidpred.training import train


def test_the_average_is_the_decayed_sum_from_the_initial_weights():
    """After steps with weights w1..wn: d^n·w0 + sum_t (1 - d)·d^(n-t)·wt, for parameters and float buffers;
    integer buffers are copied; applied() lends the average and puts the weights back."""
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    decay = 0.75
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    average = WeightAverage(model, decay)
    seen = []
    for step in range(1, 5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(float(step))
            model[1].running_mean.add_(1.0)
            model[1].num_batches_tracked.add_(1)
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        average.update(model)
    n = len(seen)
    for key in ("0.weight", "0.bias", "1.weight", "1.running_mean"):
        expected = decay ** n * initial[key] + sum((1 - decay) * decay ** (n - t) * w[key] for t, w in enumerate(seen, 1))
        assert torch.allclose(average.state_dict()[key], expected, atol=1e-6), key
    assert average.state_dict()["1.num_batches_tracked"].item() == 4
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    with average.applied(model):
        assert torch.equal(model[0].weight, average.state_dict()["0.weight"])
        assert not torch.equal(model[0].weight, raw["0.weight"])
    assert all(torch.equal(v, raw[k]) for k, v in model.state_dict().items())


def test_a_saved_average_of_another_model_is_refused_by_name():
    average = WeightAverage(nn.Linear(2, 3), 0.9)
    with pytest.raises(ValueError, match=r"missing: bias; unexpected: none"):
        average.load_state_dict({"weight": torch.zeros(3, 2)})
    with pytest.raises(ValueError, match=r"weight has shape \(4, 2\), the model's \(3, 2\)"):
        average.load_state_dict({"weight": torch.zeros(4, 2), "bias": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"decay=1\.0: expected a number in \(0, 1\)"):
        WeightAverage(nn.Linear(2, 3), 1.0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same tiny run without and with --ema, and with --ema stopped at step 3 and resumed."""
    from conftest import tiny_args

    root = tmp_path_factory.mktemp("ema")
    plain = train(parse_args(tiny_args(root / "plain", "--model.decoder=kernels", "--model.kernel=3")))
    averaged = train(parse_args(tiny_args(root / "ema", "--model.decoder=kernels", "--model.kernel=3", "--ema=0.5")))
    train(parse_args(tiny_args(root / "resumed", "--model.decoder=kernels", "--model.kernel=3", "--ema=0.5", "--stop_at=3")))
    resumed = train(parse_args(tiny_args(root / "resumed", "--model.decoder=kernels", "--model.kernel=3", "--ema=0.5",
                                         "--resume=true")))
    return plain, averaged, resumed


def test_the_average_leaves_training_alone_is_saved_and_survives_a_resume(runs):
    plain, averaged, resumed = (load_checkpoint(path) for path in runs)
    assert "ema" not in plain and set(averaged["ema"]) == set(averaged["model"])
    for key, value in plain["model"].items():  # training itself is unchanged, to the bit
        assert torch.equal(value, averaged["model"][key]), key
    assert any(not torch.equal(averaged["ema"][k], averaged["model"][k]) for k in averaged["model"])
    for key, value in averaged["ema"].items():  # stopped and resumed: the same average as in one go
        assert torch.equal(value, resumed["ema"][key]), key


def test_ema_switched_on_or_off_at_a_resume_says_so(tmp_path, capsys):
    """--ema added when resuming starts the average from the saved weights; --ema=0 when resuming an --ema
    run goes on without it, and says so. Training itself does not change either way."""
    from conftest import tiny_args

    options = ["--model.decoder=kernels", "--model.kernel=3"]
    whole = load_checkpoint(train(parse_args(tiny_args(tmp_path / "whole", *options))))
    train(parse_args(tiny_args(tmp_path / "on", *options, "--stop_at=3")))
    on = load_checkpoint(train(parse_args(tiny_args(tmp_path / "on", *options, "--ema=0.5", "--resume=true"))))
    assert "holds no weight average: --ema=0.5 starts it from the weights of step 3" in capsys.readouterr().out
    assert set(on["ema"]) == set(on["model"]) and any(not torch.equal(on["ema"][k], v) for k, v in on["model"].items())
    train(parse_args(tiny_args(tmp_path / "off", *options, "--ema=0.5", "--stop_at=3")))
    off = load_checkpoint(train(parse_args(tiny_args(tmp_path / "off", *options, "--resume=true"))))
    assert "holds a weight average that --ema=0 leaves behind" in capsys.readouterr().out
    assert "ema" not in off
    for key, value in whole["model"].items():
        assert torch.equal(value, on["model"][key]) and torch.equal(value, off["model"][key]), key


def test_evaluation_loads_the_average_unless_asked_for_the_raw_weights(runs, tmp_path):
    from vidpred.evaluation import EvalConfig, evaluate
    from vidpred.export import export

    _, ckpt, _ = runs
    state = load_checkpoint(ckpt)
    model, _, _, loaded = load_predictor(ckpt)
    assert loaded["weights"] == "average"
    assert all(torch.equal(v, state["ema"][k]) for k, v in model.state_dict().items())
    model, _, _, loaded = load_predictor(ckpt, weights="raw")
    assert loaded["weights"] == "raw"
    assert all(torch.equal(v, state["model"][k]) for k, v in model.state_dict().items())

    metrics = evaluate(EvalConfig(ckpt=str(ckpt), out=str(tmp_path / "eval"), samples=2, context=3, horizon=3, clips=2,
                                  show=1, show_samples=1, video="none"))
    assert metrics["protocol"]["model_weights"] == "average"
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["protocol"]["model_weights"] == "average"
    assert "(step 6, weight average)" in (tmp_path / "eval" / "report.html").read_text()

    folder = export(ckpt, tmp_path / "exported")  # the export keeps the weights evaluation uses
    assert json.loads((folder / "vidpred.json").read_text())["weights"] == "average"
    model, _, _, loaded = load_predictor(folder)
    assert loaded["weights"] == "average"
    assert all(torch.equal(v, state["ema"][k]) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match=r"holds only the weight average of an --ema run"):
        load_predictor(folder, weights="raw")


def test_bad_decays_and_weight_choices_are_refused(tmp_path):
    from conftest import tiny_args

    from vidpred.evaluation import parse_eval_args

    for value in ("1", "-0.5", "1.5"):
        with pytest.raises(ConfigError, match=rf"ema={float(value)}: expected 0 \(off\) or a decay per step in \(0, 1\)"):
            parse_args(tiny_args(tmp_path / "refused", f"--ema={value}"))
    assert not (tmp_path / "refused").exists()
    with pytest.raises(ConfigError, match=r"weights=best: expected one of average, raw"):
        parse_eval_args(["--ckpt=x.pt", "--weights=best"])


def test_a_run_whose_average_still_holds_its_first_weights_says_so(tmp_path, capsys):
    """After n steps the initial weights hold decay ** n of the average: from 5% on, the run says so as it ends."""
    from conftest import tiny_args

    train(parse_args(tiny_args(tmp_path / "slow", "--ema=0.99")))
    assert "the weight average (--ema=0.99) that evaluation uses still holds 94% or more of the weights it started " \
           "from after 6 steps (python evaluate.py --weights=raw scores the raw weights)" in capsys.readouterr().out
    train(parse_args(tiny_args(tmp_path / "stopped", "--ema=0.99", "--stop_at=3")))  # a run stopped early says it too
    assert "still holds 97% or more of the weights it started from after 3 steps" in capsys.readouterr().out
    train(parse_args(tiny_args(tmp_path / "fast", "--ema=0.5")))  # 0.5 ** 6 = 1.6%: nothing to tell
    told = capsys.readouterr().out
    assert "saved" in told and "still holds" not in told
