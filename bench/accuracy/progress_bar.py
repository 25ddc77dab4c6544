"""A progress bar for passes over images: tqdm on stderr, shown once a pass has run 2 s, none when stderr is not a
terminal (sweep cells, CI logs) or when asked to be quiet."""

from __future__ import annotations

import sys


def image_bar(total: int, what: str, quiet: bool = False):
    """A tqdm bar counting images; ``bar.update(n)`` after each batch; use it as a context manager."""
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit="img", delay=2.0, disable=quiet or not sys.stderr.isatty(),
                file=sys.stderr, dynamic_ncols=True, leave=False)
