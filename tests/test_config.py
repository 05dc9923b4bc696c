import json

import pytest

from vidpred.config import Config, ConfigError, from_dict, parse_args, to_dict


def test_overrides_are_typed():
    cfg = parse_args(["--steps=7", "--lr", "0.5", "--model.widths=8,16", "--data.size=16", "--model.residual=true",
                      "--data.path=none", "--model.window=2"])
    assert cfg.steps == 7 and cfg.lr == 0.5 and cfg.model.widths == (8, 16) and cfg.model.residual is True
    assert cfg.data.path is None


def test_bare_flag_means_true():
    assert parse_args(["--resume"]).resume is True


@pytest.mark.parametrize("argv, words", [
    (["--stepz=3"], ["stepz", "steps"]),
    (["--data.knd=video"], ["data.knd", "knd"]),
    (["--model=3"], ["section"]),
    (["--steps=ten"], ["steps", "integer"]),
    (["--lr=fast"], ["lr", "number"]),
    (["--model.residual=maybe"], ["model.residual", "boolean"]),
    (["--data.kind=films"], ["data.kind", "sprites"]),
    (["--latent.dropout=1.5"], ["latent.dropout", "probability"]),
    (["--steps=0"], ["steps", "positive"]),
    (["--data.size=30"], ["data.size", "divisible"]),
    (["steps=3"], ["unexpected argument"]),
])
def test_bad_overrides_refuse_with_the_key(argv, words):
    with pytest.raises(ConfigError) as err:
        parse_args(argv)
    for word in words:
        assert word in str(err.value)


def test_context_plus_horizon_longer_than_clip_is_refused():
    with pytest.raises(ConfigError, match=r"context \+ horizon = 5 \+ 20 = 25 is longer than the clips \(data.frames=10\)"):
        parse_args(["--horizon=20"])


@pytest.mark.parametrize("suffix, text", [
    (".json", json.dumps({"steps": 11, "latent": {"l1": 0.5}})),
    (".toml", "steps = 11\n[latent]\nl1 = 0.5\n"),
])
def test_config_file_then_overrides(tmp_path, suffix, text):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    cfg = parse_args([f"--config={path}", "--latent.l1=0.25"])
    assert cfg.steps == 11 and cfg.latent.l1 == 0.25  # the command line wins over the file


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        parse_args([f"--config={tmp_path / 'missing.json'}"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"latent": {"l3": 1}}))
    with pytest.raises(ConfigError, match=r"bad.json: unknown config key 'latent.l3'"):
        parse_args([f"--config={bad}"])


def test_round_trip_through_plain_data():
    cfg = parse_args(["--model.widths=8,16,32", "--steps=5"])
    again = from_dict(json.loads(json.dumps(to_dict(cfg))))
    assert again == cfg and isinstance(again.model.widths, tuple)
    assert Config() == from_dict(to_dict(Config()))
