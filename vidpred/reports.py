"""Reports a user must see (a video file skipped, a tracker that could not start): printed to
stderr, above any progress bar, so that `python -W ignore` or `PYTHONWARNINGS=ignore` cannot hide
them, and issued as a `ReportWarning` for code that collects warnings (`pytest.warns`,
`warnings.catch_warnings`). The warning is not displayed by default, since the printed line already
says it; a filter of the user's (`-W default`, `-W error`, `warnings.simplefilter`) brings it back."""

from __future__ import annotations

import sys
import warnings

from tqdm import tqdm


class ReportWarning(UserWarning):
    """A report that was also printed to stderr."""


# Appended, so that any filter the user gives (-W, PYTHONWARNINGS, filterwarnings) comes first and wins.
warnings.filterwarnings("ignore", category=ReportWarning, append=True)


def report(message: str, *, stacklevel: int = 2) -> None:
    """Print `message` to stderr as `vidpred: MESSAGE` and issue it as a ReportWarning from the caller's caller."""
    tqdm.write(f"vidpred: {message}", file=sys.stderr)
    sys.stderr.flush()
    warnings.warn(message, ReportWarning, stacklevel=stacklevel + 1)
