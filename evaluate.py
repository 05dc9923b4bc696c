"""Evaluate a checkpoint: `python evaluate.py --ckpt=PATH [--samples=K --context=C --horizon=T --clips=N
--seed=S --prior=bank|fitted|learned --out=DIR --data.kind=... --data.path=...]`.

The default protocol is SRVP's 5 -> 20 frames with K = 100 samples per clip, on 256 test clips. Writes
DIR/metrics.json (the protocol; best of K per metric and SVG's variant, mean of K, deterministic,
floors, each with 95% intervals and per-frame curves; diversity; coverage), DIR/per_frame.png,
DIR/samples.png and DIR/samples.mp4 (or .gif); DIR defaults to the run folder's eval/.
"""

import sys

from vidpred.config import ConfigError, describe


def main(argv: list[str]) -> int:
    from vidpred.checkpoint import CheckpointError
    from vidpred.evaluation import EvalConfig, evaluate, parse_eval_args

    if "--help" in argv or "-h" in argv:
        print(__doc__ + "\nKeys and defaults (plus --data.KEY=VALUE over the checkpoint's data section):\n  "
              + "\n  ".join(describe(EvalConfig())))
        return 0

    try:
        ecfg, data_overrides = parse_eval_args(argv)
        evaluate(ecfg, data_overrides)
    except (ConfigError, CheckpointError) as e:
        print(f"evaluate.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
