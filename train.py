"""Train a vidpred model: `python train.py [--config=FILE] [--key=value ...]`, the same as `vidpred train` (see --help)."""

import sys

from vidpred.cli import train_main


def main(argv: list[str]) -> int:
    return train_main(argv, program="train.py")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
