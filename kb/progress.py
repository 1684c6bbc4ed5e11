"""Progress bars of long commands (kgverify batch, kb build/add) on stderr."""

from __future__ import annotations

import sys

# Seconds between redraws when stderr is not a terminal: a log file or a pipe keeps every redraw (tqdm's default
# 0.1 s wrote ~36,000 carriage-return lines an hour into a batch job's log).
LOG_INTERVAL_S = 30.0


def progress_bar(**kwargs):
    """A tqdm bar on stderr: redrawn as tqdm does on a terminal, at most every LOG_INTERVAL_S seconds elsewhere."""
    from tqdm import tqdm

    stream = kwargs.setdefault("file", sys.stderr)
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):  # (a closed or file-like stream without isatty)
        terminal = False
    if not terminal:
        kwargs["mininterval"] = max(kwargs.get("mininterval", 0.1), LOG_INTERVAL_S)
        kwargs.setdefault("maxinterval", LOG_INTERVAL_S * 2)
    return tqdm(**kwargs)
