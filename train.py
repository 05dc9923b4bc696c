"""Train a vidpred model: `python train.py [--config=FILE] [--key=value ...]` (see --help).

Data-parallel: `torchrun --nproc_per_node=N train.py [...]` (the global --batch_size is split over
the N processes). Ctrl-C or SIGTERM saves a checkpoint and exits with 128 + the signal number;
`--resume` goes on from it.
"""

import os
import sys

from vidpred.config import Config, ConfigError, describe, parse_args


def main(argv: list[str]) -> int:
    if "--help" in argv or "-h" in argv:
        print(__doc__ + "\nKeys and defaults:\n  " + "\n  ".join(describe(Config())))
        return 0
    try:
        cfg = parse_args(argv)
    except ConfigError as e:
        return fail(e, 2)
    from vidpred.checkpoint import CheckpointError  # imported after parsing so a bad flag fails fast
    from vidpred.training import Interrupted, train

    try:
        train(cfg)
    except (ConfigError, CheckpointError) as e:
        return fail(e, 2)
    except Interrupted as e:
        return fail(e, 128 + e.signum)
    except FloatingPointError as e:
        return fail(e, 1)
    return 0


def fail(error: Exception, code: int) -> int:
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        print(f"train.py: {error}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
