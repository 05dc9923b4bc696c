"""`vidpred`: one command with a subcommand per job, installed by `pip install .`.

    vidpred train    [--config=FILE] [--key=value ...]   train a model (also: python train.py)
    vidpred evaluate --ckpt=PATH [--key=value ...]       the evaluation protocol (also: python evaluate.py)
    vidpred sample   --ckpt=PATH --input=FILE ...        futures of a user's clip, scores, fill-in (also: vidpred-sample)
    vidpred prepare  --mnist=FOLDER [--key=value ...]    write the fixed SM-MNIST test set (also: python data/prepare.py)
    vidpred export   --ckpt=PATH --out=FOLDER            a folder to share: safetensors weights, config, prior, metrics, model card

`vidpred SUBCOMMAND --help` lists every key with its default, its meaning and its allowed values;
`vidpred train --print_config` (and evaluate's) prints the resolved configuration as JSON and exits.
Exit codes: 0 done, 2 a refused option or input (the message names it), 1 a run that failed
(a non-finite loss), 128 + N a run stopped by signal N (it saved a checkpoint: go on with --resume).
"""

from __future__ import annotations

import json
import os
import sys

from .config import Config, ConfigError, describe, parse_args, to_dict

COMMANDS = ("train", "evaluate", "sample", "prepare", "export")


def _fail(program: str, error: Exception, code: int) -> int:
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        print(f"{program}: {error}", file=sys.stderr)
    return code


def _wants_help(argv: list[str]) -> bool:
    return "--help" in argv or "-h" in argv


def _print_config(argv: list[str]) -> tuple[bool, list[str]]:
    """Whether `--print_config` (or `--print_config=true`) was given, and argv without it."""
    rest = [a for a in argv if a.split("=", 1)[0] != "--print_config"]
    asked = [a for a in argv if a.split("=", 1)[0] == "--print_config"]
    return bool(asked) and asked[-1] not in ("--print_config=false", "--print_config=0"), rest


TRAIN_HELP = """Train a vidpred model: `vidpred train [--config=FILE] [--key=value ...]` (or `python train.py`).

Data-parallel: `torchrun --nproc_per_node=N train.py [...]` (the global --batch_size is split over
the N processes). Ctrl-C or SIGTERM saves a checkpoint and exits with 128 + the signal number;
`--resume` goes on from it. `--print_config` prints the resolved configuration (JSON, loadable with
--config) and exits without training.
"""


def train_main(argv: list[str], program: str = "vidpred train") -> int:
    if _wants_help(argv):
        print(TRAIN_HELP + "\nKeys (default, meaning, allowed values):\n" + "\n".join(describe(Config())))
        return 0
    show, argv = _print_config(argv)
    try:
        cfg = parse_args(argv)
    except ConfigError as e:
        return _fail(program, e, 2)
    if show:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    from .checkpoint import CheckpointError  # imported after parsing so a bad flag fails fast
    from .training import Interrupted, train

    try:
        train(cfg)
    except (ConfigError, CheckpointError) as e:
        return _fail(program, e, 2)
    except Interrupted as e:
        return _fail(program, e, 128 + e.signum)
    except FloatingPointError as e:
        return _fail(program, e, 1)
    except OSError as e:  # disk full, a read-only or vanished folder: the path, why, and the last good checkpoint
        return _fail(program, _write_failure(e, cfg), 1)
    return 0


def _write_failure(error: OSError, cfg) -> Exception:
    from .checkpoint import last_good
    from .files import WriteError

    if isinstance(error, WriteError) and error.then:
        return error
    return WriteError(error.filename or cfg.out_dir, error, then=last_good(cfg.out_dir / "checkpoints" / "last.pt"))


def evaluate_main(argv: list[str], program: str = "vidpred evaluate") -> int:
    from .checkpoint import CheckpointError
    from .evaluation import EvalConfig, evaluate, parse_eval_args

    if _wants_help(argv):
        from . import evaluation

        print(evaluation.__doc__.split("\n\n")[0] + "\n\n`vidpred evaluate --ckpt=PATH [--key=value ...]` "
              "(or `python evaluate.py`); `--print_config` prints the resolved options and exits.\n"
              "\nKeys (default, meaning, allowed values), plus --data.KEY=VALUE over the checkpoint's data section:\n"
              + "\n".join(describe(EvalConfig())))
        return 0
    show, argv = _print_config(argv)
    try:
        ecfg, data_overrides = parse_eval_args(argv)
        if show:
            print(json.dumps({**to_dict(ecfg), "data_overrides": data_overrides}, indent=2))
            return 0
        evaluate(ecfg, data_overrides)
    except (ConfigError, CheckpointError) as e:
        return _fail(program, e, 2)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        return train_main(rest)
    if command == "evaluate":
        return evaluate_main(rest)
    if command == "sample":
        from .sample_cli import main as sample_main
        return sample_main(rest)
    if command == "prepare":
        from .prepare import main as prepare_main
        return prepare_main(rest)
    if command == "export":
        from .export import main as export_main
        return export_main(rest)
    print(f"vidpred: unknown command {command!r}: expected one of {', '.join(COMMANDS)} (vidpred --help)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
