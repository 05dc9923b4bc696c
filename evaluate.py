"""Evaluate a checkpoint: `python evaluate.py --ckpt=PATH [--key=value ...]`, the same as `vidpred evaluate` (see --help)."""

import sys

from vidpred.cli import evaluate_main


def main(argv: list[str]) -> int:
    return evaluate_main(argv, program="evaluate.py")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
