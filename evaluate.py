"""Evaluate a checkpoint: `python evaluate.py --ckpt=PATH [--samples=K --context=C --horizon=T --clips=N
--seed=S --prior=bank|fitted|learned --out=DIR --data.kind=... --data.path=...]`.

Writes DIR/metrics.json (best of K, mean of K, deterministic; per-frame curves; diversity; coverage)
and DIR/samples.png; DIR defaults to the run folder's eval/.
"""

import sys

from vidpred.config import ConfigError


def main(argv: list[str]) -> int:
    if "--help" in argv or "-h" in argv:
        print(__doc__)
        return 0
    from vidpred.checkpoint import CheckpointError
    from vidpred.evaluation import evaluate, parse_eval_args

    try:
        ecfg, data_overrides = parse_eval_args(argv)
        evaluate(ecfg, data_overrides)
    except (ConfigError, CheckpointError) as e:
        print(f"evaluate.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
