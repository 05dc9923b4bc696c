import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vidpred.config import Config, ConfigError, float_keys, from_dict, parse_args, to_dict, tomllib, validate


def test_overrides_are_typed():
    cfg = parse_args(["--steps=7", "--lr", "0.5", "--model.widths=8,16", "--data.size=16", "--model.decoder=pixels",
                      "--model.residual=true", "--data.path=none", "--model.window=2"])
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
    (["--device=1e308"], ["device", "cuda:N"]),  # found by bench/faults.py: torch's own RuntimeError before
    (["--device=cuda:x"], ["device", "cuda:N"]),
    (["--data.frames=99999999999999999999"], ["data.frames", "2^31"]),  # was numpy's "Maximum allowed dimension"
    (["--seed=-2147483648"], ["seed", "2^31"]),
    (["--model.content=-1"], ["model.content=-1", "positive size"]),
    (["--model.skips=last"], ["model.skips", "recent, context, both"]),
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


def test_the_default_decoder_is_the_sharp_trust_glide_and_another_decoder_takes_its_own_sharp_and_mask(tmp_path):
    """The default model glides with a sharp trust mask (Config() and `python train.py` alike); a decoder named
    without model.sharp or model.glide_mask takes its own values of them (the others: soft, no trust), on the
    command line or in a config file, and a value given wins (or is refused where it means nothing)."""
    def model(*argv):
        m = parse_args(list(argv)).model
        return m.decoder, m.sharp, m.glide_mask

    assert model() == ("glide", True, "trust") == (Config().model.decoder, Config().model.sharp, Config().model.glide_mask)
    assert model("--model.decoder=pixels") == ("pixels", False, "features")
    assert model("--model.decoder=kernels") == ("kernels", False, "features")
    assert model("--model.decoder=kernels", "--model.sharp=true") == ("kernels", True, "features")
    assert model("--model.generate=false") == ("glide", True, "features")  # trust needs the generated branch
    assert model("--model.glide_mask=features", "--model.sharp=false") == ("glide", False, "features")
    path = tmp_path / "splat.toml"
    path.write_text('[model]\ndecoder = "splat"\n')
    assert model(f"--config={path}") == ("splat", False, "features")
    assert model(f"--config={path}", "--model.decoder=glide") == ("glide", True, "trust")  # the command line's decoder
    path.write_text('[model]\ndecoder = "kernels"\nsharp = true\n')
    assert model(f"--config={path}") == ("kernels", True, "features")  # the file's own value
    with pytest.raises(ConfigError, match="model.sharp=true needs model.decoder=kernels, splat or glide"):
        parse_args(["--model.decoder=pixels", "--model.sharp=true"])


def test_a_saved_config_without_the_decoder_keys_loads_as_it_was_trained():
    """Checkpoints written before model.decoder, model.sharp or model.glide_mask existed were trained with the
    pixels decoder, soft, under the features mask: they load so, not with today's defaults."""
    from vidpred.config import saved_config

    tree = to_dict(parse_args(["--model.decoder=pixels"]))
    for key in ("decoder", "sharp", "glide_mask"):
        del tree["model"][key]
    m = saved_config(tree).model
    assert (m.decoder, m.sharp, m.glide_mask) == ("pixels", False, "features")
    tree["model"]["decoder"] = "kernels"  # saved after decoder, before sharp
    assert saved_config(tree).model.decoder == "kernels" and saved_config(tree).model.sharp is False


def test_round_trip_through_plain_data():
    cfg = parse_args(["--model.widths=8,16,32", "--steps=5"])
    again = from_dict(json.loads(json.dumps(to_dict(cfg))))
    assert again == cfg and isinstance(again.model.widths, tuple)
    assert Config() == from_dict(to_dict(Config()))


# --- Python 3.10 (pyproject allows it; tomllib is 3.11+) ------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def test_toml_config_files_are_read_through_tomli_where_there_is_no_tomllib(tmp_path):
    """Python 3.10 has no tomllib: config.py must fall back to tomli (same API), and pyproject must
    install it there. Run in a fresh interpreter where `import tomllib` fails as it does on 3.10,
    and `tomli` is the real parser under its old name."""
    (tmp_path / "run.toml").write_text("steps = 7\n[model]\nwidths = [8, 16]\n")
    script = ("import sys, tomllib\n"
              "sys.modules['tomli'] = tomllib\n"
              "sys.modules['tomllib'] = None  # import tomllib now raises ModuleNotFoundError, as on 3.10\n"
              "from vidpred.config import parse_args\n"
              "cfg = parse_args(['--config=' + sys.argv[1], '--data.size=16'])\n"
              "print(cfg.steps, cfg.model.widths, sys.modules['vidpred.config'].tomllib.__name__)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run.toml")], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["7", "(8,", "16)", "tomllib"]  # the module that was registered as tomli
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(r.replace(" ", "").startswith("tomli>=") and "python_version<'3.11'" in r.replace(" ", "")
               for r in requires), requires


def _python_3_10() -> str | None:
    """A working Python 3.10 interpreter, if this machine has one (a pyenv shim may name one that fails)."""
    pyenv = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10")))
    for candidate in [shutil.which("python3.10"), *pyenv]:
        if candidate and subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 10)"],
                                        capture_output=True).returncode == 0:
            return candidate
    return None


PYTHON_3_10 = _python_3_10()


@pytest.mark.skipif(PYTHON_3_10 is None, reason="no python3.10 interpreter on this machine")
def test_every_source_file_compiles_under_python_3_10(tmp_path):
    """Syntax newer than 3.10 (e.g. `except*`, PEP 695 generics) would make the package unusable there."""
    sources = [str(p) for p in [*ROOT.glob("vidpred/**/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("bench/*.py"),
                                ROOT / "train.py", ROOT / "evaluate.py"]]
    check = "import sys\nfor p in sys.argv[1:]:\n    compile(open(p).read(), p, 'exec')\n"
    done = subprocess.run([PYTHON_3_10, "-c", check, *sources], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# --- NaN, inf and empty values: refusals naming the key, never tracebacks --------------------------

FLOAT_KEYS = float_keys(Config())


def test_the_float_keys_are_found():
    assert {"lr", "grad_clip", "max_minutes", "latent.l1", "latent.dropout", "data.val_share"} <= set(FLOAT_KEYS)


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "+inf"])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_a_float_key_given_nan_or_inf_is_refused_by_name(key, value):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}='{re.escape(value)}': expected a finite number$"):
        parse_args([f"--{key}={value}"])


def test_nan_in_a_toml_config_file_or_in_a_config_built_in_python_is_refused(tmp_path):
    (tmp_path / "c.toml").write_text("lr = nan\n")
    with pytest.raises(ConfigError, match=r"c.toml: lr=nan: expected a finite number"):
        parse_args([f"--config={tmp_path / 'c.toml'}"])
    cfg = Config()
    cfg.latent.l1 = float("inf")
    with pytest.raises(ConfigError, match=r"^latent.l1=inf: expected a finite number$"):
        validate(cfg)


@pytest.mark.parametrize("value, shown", [("", r"\(empty\)"), (",", r"\(empty\)"), ("()", r"\(empty\)"),
                                          ("8,0", "8,0"), ("-8", "-8")])
def test_model_widths_empty_or_not_positive_is_refused_by_name(value, shown):
    with pytest.raises(ConfigError, match=rf"^model.widths={shown}: expected one or more positive channel counts"):
        parse_args([f"--model.widths={value}"])


@pytest.mark.parametrize("arg, message", [("--lr=nan", "train.py: lr='nan': expected a finite number\n"),
                                          ("--device=true", "train.py: device='true': expected auto, cpu, cuda"),
                                          ("--model.widths=", "train.py: model.widths=(empty): expected one or more "
                                                              "positive channel counts")])
def test_train_py_refuses_them_with_one_line_and_status_2(tmp_path, arg, message):
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), arg, f"--out={tmp_path / 'run'}"], cwd=tmp_path,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and done.stderr.startswith(message), done.stderr
    assert not (tmp_path / "run").exists()
