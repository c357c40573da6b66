"""The short list: discarded changes worth another try on top of the current best (pure).

Keeps are a chain: only a change that beats the best is kept. A discarded change is not
forgotten when it may still pay:

- a **near-miss**: it lost to the best by less than the noise (or won by less than the
  floor), so a later best may well carry it over the line;
- an **untuned idea**: a change of structure (more than numbers changed) that brought in
  or touched a tunable number (a module-level UPPER_CASE constant, a ``# search:`` line),
  measured but discarded before its numbers were tuned: a good idea with a poor constant.

Each stays on the list until an experiment built on it (``builds_on``) was kept, or it was
re-tried ``TRIES`` times, or ``SPREAD`` re-tries gained nothing on it (``paying``), or
``limit`` newer entries pushed it off (``LIMIT`` in the notebook; the hybrid keeps a longer
list, so that every untuned idea gets its turn). The LLM sees the list with
its diffs in the notebook (proposers/prompt.py); the hybrid proposer tunes its entries'
numbers on top of the best (proposers/hybrid.py).

API::

    shortlist(history, noise) -> list[Entry]     newest first
    knobs_in(diff_text) -> list[str]             tunable names on the diff's added lines
    structural(diff_text) -> bool                more than numbers changed
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_autoresearch.proposers.base import PastExperiment

__all__ = [
    "LIMIT", "PAYING", "SPREAD", "TRIES", "Entry", "knobs_in", "paying", "shape", "shortlist",
    "structural",
]  # fmt: skip

LIMIT = 5  # entries on the list, newest first
TRIES = 4  # re-tries of one entry (a tuning burst) before it leaves the list
SPREAD = 2  # re-tries before they must show progress for the entry to stay
PAYING = 3.0  # sigma the re-tries must gain on the entry's first value after SPREAD

_KNOB = re.compile(
    r"^\s*(?P<name>[A-Za-z_][\w.]*)\s*(?::\s*[\w.\[\], ]+)?\s*=\s*"
    r"(?P<value>[-+]?(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][-+]?\d+)?)\s*(?P<rest>#.*)?$"
)
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][-+]?\d+)?(?![\w.])")


@dataclass(frozen=True)
class Entry:
    exp: PastExperiment
    why: str  # "near-miss" | "untuned"
    knobs: tuple[str, ...]  # the tunable names its change brought in or touched
    tries: int  # experiments built on it so far


def shortlist(history: Sequence[PastExperiment], noise: float, limit: int = LIMIT) -> list[Entry]:
    """The discarded changes still worth a try on top of the best, newest first."""
    built: dict[int, list[PastExperiment]] = {}
    for e in history:
        if e.builds_on is not None:
            built.setdefault(e.builds_on, []).append(e)
    by_index = {e.index: e for e in history}
    # Shapes whose numbers were tuned already (on any entry): the same idea with another
    # guessed number is not untuned.
    tuned: dict[tuple, set[int]] = {}
    for i in built:
        if i in by_index:
            tuned.setdefault(shape(by_index[i].diff), set()).add(i)
    out: list[Entry] = []
    for e in reversed(history):
        if len(out) >= limit:
            break
        if e.status != "discard" or not e.diff or e.objective is None or e.builds_on is not None:
            continue
        tries = built.get(e.index, [])
        if any(t.status == "keep" for t in tries) or len(tries) >= TRIES:
            continue
        if not paying(e, tries, noise):
            continue
        knobs = tuple(knobs_in(e.diff))
        near = e.delta is not None and e.delta > -abs(noise or 0.0)
        if near:
            out.append(Entry(e, "near-miss", knobs, len(tries)))
        elif (
            knobs
            and e.made_by != "optuna"
            and structural(e.diff)
            and not (tuned.get(shape(e.diff), set()) - {e.index})
        ):
            out.append(Entry(e, "untuned", knobs, len(tries)))
    return out


def paying(exp: PastExperiment, tries: Sequence[PastExperiment], noise: float) -> bool:
    """Re-tries of ``exp`` go on for their first SPREAD, then only while one of them beat
    ``exp``'s own first measurement by more than PAYING sigma: a knob that does not matter,
    or an idea that does not work, stops costing experiments."""
    if len(tries) < SPREAD:
        return True
    deltas = [t.delta for t in tries if t.delta is not None]
    start = exp.delta
    return start is not None and bool(deltas) and max(deltas) > start + PAYING * abs(noise or 0.0)


def knobs_in(diff_text: str) -> list[str]:
    """Names assigned a number on the diff's added lines that a tuner may move: module-level
    UPPER_CASE names, and any name whose line carries a ``# search:`` comment."""
    names: list[str] = []
    for line in diff_text.splitlines():
        if not line.startswith("+") or line.startswith("+++"):
            continue
        body = line[1:]
        if body[:1].isspace() and "search:" not in body:
            continue  # indented: inside a function or class, tuned only when marked
        m = _KNOB.match(body)
        if not m:
            continue
        name, rest = m.group("name"), m.group("rest") or ""
        upper = re.fullmatch(r"_*[A-Z][A-Z0-9_]*", name) is not None and not body[:1].isspace()
        if (upper or "search:" in rest) and "search: off" not in rest and name not in names:
            names.append(name)
    return names


def structural(diff_text: str) -> bool:
    """More than numbers changed: the added lines with numbers masked differ from the
    removed ones (comments and blank lines aside)."""
    removed, added = _masked(diff_text)
    return sorted(added) != sorted(removed)


def shape(diff_text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The change with its numbers masked (and comments, blank lines, order left out): the
    same idea with other numbers has the same shape."""
    removed, added = _masked(diff_text)
    return tuple(sorted(removed)), tuple(sorted(added))


def _masked(diff_text: str) -> tuple[list[str], list[str]]:
    removed: list[str] = []
    added: list[str] = []
    for line in diff_text.splitlines():
        if line.startswith(("+++", "---")) or line[:1] not in ("+", "-"):
            continue
        code = line[1:].split("#", 1)[0].strip()
        if not code:
            continue
        masked = " ".join(_NUMBER.sub("N", code).split())
        (added if line[0] == "+" else removed).append(masked)
    return removed, added
