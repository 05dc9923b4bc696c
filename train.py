"""Train a vidpred model: `python train.py [--config=FILE] [--key=value ...]` (see --help)."""

import sys

from vidpred.config import Config, ConfigError, describe, parse_args


def main(argv: list[str]) -> int:
    if "--help" in argv or "-h" in argv:
        print(__doc__ + "\nKeys and defaults:\n  " + "\n  ".join(describe(Config())))
        return 0
    try:
        cfg = parse_args(argv)
    except ConfigError as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 2
    from vidpred.training import train  # imported after parsing so a bad flag fails fast

    try:
        train(cfg)
    except ConfigError as e:  # data that cannot be read as configured (vidpred.data.DataError)
        print(f"train.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
