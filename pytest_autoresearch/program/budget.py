"""The wall-clock budget of a research run (``--autoresearch-time-budget``), pure.

API::

    parse_duration("5h30m") -> 19800.0          # raises ValueError with an example
    time_left_allows(elapsed, durations, budget) -> bool

The loop asks ``time_left_allows`` before each experiment: a new one starts only when it
is expected to finish inside the budget, so a nightly job ends on its own, with its
summary and report, before the CI job's own limit kills it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

__all__ = ["parse_duration", "time_left_allows"]

_PART_RE = re.compile(r"(\d+(?:\.\d+)?)([hms])")
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``45m``, ``5h30m``, ``1h0m30s`` or a plain number of seconds."""
    raw = text.strip().lower().replace(" ", "")
    try:
        seconds = float(raw)
    except ValueError:
        parts = _PART_RE.findall(raw)
        units = [unit for _n, unit in parts]
        ordered = units == sorted(set(units), key="hms".index)
        if not parts or "".join(n + u for n, u in parts) != raw or not ordered:
            raise ValueError(
                f"expected a duration such as 90s, 45m, 5h30m or a number of seconds, got {text!r}"
            ) from None
        seconds = sum(float(n) * _SECONDS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"the time budget must be more than 0 seconds, got {text!r}")
    return seconds


def time_left_allows(elapsed: float, durations: Sequence[float], budget: float) -> bool:
    """Whether one more experiment is expected to finish within ``budget`` seconds.

    ``elapsed`` counts from the start of the run (baseline included); ``durations`` are the
    finished experiments' wall times. The estimate is the longest of the last five: a
    pessimistic but recent guess, since a run's experiments drift (bigger models, repairs).
    With no experiment finished yet, the first one may start while any time is left.
    """
    left = budget - elapsed
    if left <= 0:
        return False
    recent = [d for d in durations if isinstance(d, (int, float)) and math.isfinite(d)][-5:]
    if not recent:
        return True
    return max(recent) <= left


def duration_option(text: str) -> float:
    """argparse ``type=`` for --autoresearch-time-budget: seconds, or a clear error."""
    import argparse

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
