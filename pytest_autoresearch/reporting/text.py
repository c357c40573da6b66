"""Numbers and text as the terminal and report.md show them (pure, the stdlib only).

API::

    finite(x) -> bool                 a real, finite number (not a bool)
    decimals(noise, value=None) -> int          enough to show the noise's first digit
    format_duration(seconds) -> str   "312s", "25m00s", "2h05m"
    signed(x, dec) -> str             "+0.0042", never "-0.0000"
    one_line(text, limit) -> str      whitespace folded, cut with "…"
    pct(x) -> str, plural(n, word) -> str, md(text) -> str (a table cell), cell(value, dec)
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "cell",
    "decimals",
    "finite",
    "format_duration",
    "md",
    "one_line",
    "pct",
    "plural",
    "signed",
]


def finite(x: Any) -> bool:
    """Whether ``x`` is a real, finite number (a bool is not one)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def decimals(noise: float | None, value: float | None = None) -> int:
    """Enough decimals to show the noise's first digit (the rest would be noise itself)."""
    if finite(noise) and noise > 0:
        exp = math.floor(math.log10(noise))
        lead = noise / 10**exp  # a leading 1 or 2 gets a second digit: ±0.0012, not ±0.001
        return max(0, min(10, -exp + (1 if lead < 2.95 else 0)))
    if finite(value) and value != 0:
        return max(0, min(10, 4 - math.floor(math.log10(abs(value)))))
    return 4


def format_duration(seconds: float) -> str:
    """Short human duration: 42s, 312s, 25m00s, 2h05m."""
    s = max(0, round(seconds))
    if s < 600:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def signed(x: float, dec: int) -> str:
    """``x`` with its sign and ``dec`` decimals."""
    return f"{(round(x, dec) or 0.0):+.{dec}f}"  # no "-0.000"


def one_line(text: str, limit: int) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pct(x: float | None) -> str:
    """A share as a whole percentage; "-" when unknown."""
    return f"{100 * x:.0f}%" if finite(x) else "-"


def plural(n: int, word: str) -> str:
    """``n`` and ``word``, with an "s" unless n is 1."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def md(text: Any) -> str:
    """``text`` for a Markdown table cell: one line, pipes escaped."""
    return one_line(str(text), 120).replace("|", "\\|")


def cell(value: Any, dec: int) -> str:
    """A number for a Markdown table cell; "-" when there is none."""
    return f"{value:.{dec}f}" if finite(value) else "-"
