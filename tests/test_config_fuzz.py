"""Every config key, fuzzed: a bad value is a ConfigError naming the key, never a traceback.

Hypothesis draws a key of the dataclass tree (train.py's and evaluate.py's) and a value from the
kinds users get wrong (wrong type, empty, NaN, ±inf, negative, zero, huge, an unknown name), alone
and in pairs. What a parse accepts must also build: the model, its objective, the energy and the
data source of a training config come up without an exception.
"""

import dataclasses

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vidpred.build import build_energy, build_model, build_objective, build_source
from vidpred.config import Config, ConfigError, parse_args
from vidpred.data import DataError
from vidpred.evaluation import EvalConfig, parse_eval_args


def keys(node, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        out += keys(value, f"{prefix}{f.name}.") if dataclasses.is_dataclass(value) else [prefix + f.name]
    return out


TRAIN_KEYS = [k for k in keys(Config()) if k not in ("out", "name", "wandb_project", "device")]
EVAL_KEYS = [k for k in keys(EvalConfig()) if k not in ("out", "ckpt")]

BAD = st.one_of(
    st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "+inf", "-1", "0", "-0.5", "1e308", "1e400",
                     "99999999999999999999", "2.5", "true", "false", "none", "null", "abc", "tnwh", "3,",
                     ",", "1,,2", "8,-16", "0,0", "1e-320", "０", "½", "\x00", "auto", "video", "cuda:99"]),
    st.integers(min_value=-10**12, max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=6),
)


def parses_or_refuses(parse, argv: list[str]):
    """The parsed config, or None after a ConfigError whose message names one of the keys given."""
    try:
        return parse(argv)
    except ConfigError as e:
        named = [a.split("=", 1)[0].lstrip("-") for a in argv]
        assert any(k in str(e) for k in named), f"{argv}: the refusal {str(e)!r} names none of the keys"
        return None


def small_enough(cfg: Config) -> bool:
    """Configs whose parts are cheap to build in a test (a huge canvas is a legal, slow choice)."""
    return (cfg.data.size <= 64 and max(cfg.model.widths) <= 256 and len(cfg.model.widths) <= 4
            and cfg.latent.dim <= 512 and cfg.prior.components <= 64 and cfg.model.blocks <= 8
            and cfg.model.kernel <= 15 and cfg.data.frames <= 64 and cfg.data.objects <= 16
            and cfg.data.sprite_max <= 64 and cfg.model.content <= 1024)


def builds(cfg: Config) -> None:
    model = build_model(cfg)
    build_objective(cfg, model)
    build_energy(cfg, step=0)
    if cfg.data.path is None:  # the kinds that read files are refused without one, before this
        try:
            source = build_source(cfg.data, seed=cfg.seed, split="train", frames=cfg.data.frames, context=cfg.context)
        except DataError:
            return
        with torch.no_grad():
            clip = source.clip(0)
        assert torch.isfinite(torch.as_tensor(clip)).all()


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@FUZZ
@given(key=st.sampled_from(TRAIN_KEYS), value=BAD)
def test_one_bad_training_value_is_refused_naming_the_key_or_builds(key, value):
    cfg = parses_or_refuses(parse_args, [f"--{key}={value}"])
    if cfg is not None and small_enough(cfg):
        builds(cfg)


@FUZZ
@given(pair=st.lists(st.sampled_from(TRAIN_KEYS), min_size=2, max_size=2, unique=True), values=st.tuples(BAD, BAD))
def test_two_bad_training_values_are_refused_naming_a_key_or_build(pair, values):
    cfg = parses_or_refuses(parse_args, [f"--{k}={v}" for k, v in zip(pair, values)])
    if cfg is not None and small_enough(cfg):
        builds(cfg)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(key=st.sampled_from(EVAL_KEYS), value=BAD)
def test_one_bad_evaluation_value_is_refused_naming_the_key(key, value):
    parses_or_refuses(lambda argv: parse_eval_args(["--ckpt=x.pt", *argv]), [f"--{key}={value}"])


@pytest.mark.parametrize("argv, message", [
    (["--lr=nan"], "lr='nan': expected a finite number"),
    (["--model.widths="], "model.widths"),
    (["--latent.l1=inf"], "latent.l1='inf': expected a finite number"),
])
def test_the_values_a_user_tried_are_refused_by_name(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_args(argv)


def test_the_fuzzer_draws_every_key():
    assert "lr" in TRAIN_KEYS and "data.kind" in TRAIN_KEYS and "latent.l1" in TRAIN_KEYS
    assert len(TRAIN_KEYS) > 50 and "samples" in EVAL_KEYS
