"""Write the fixed Stochastic Moving MNIST test set: `python data/prepare.py --mnist=FOLDER [--key=value ...]`.

The same as `vidpred prepare` (vidpred/prepare.py), runnable from a checkout without installing.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidpred.prepare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
