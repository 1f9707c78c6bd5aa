"""Progress bars: tqdm on stderr, only on a TTY, never when the caller says quiet."""

from __future__ import annotations

import sys


def bar(total: int, desc: str = "", enabled: bool = True, unit: str = "it"):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                dynamic_ncols=True, disable=None if enabled else True)  # None: only on a TTY
