"""No experiment measured twice: a proposal that repeats a past or in-flight one (pure).

Two proposals are the same experiment when they change the same best commit (the parent)
in the same way. "The same way" is judged on the *normalised* diff:

- per file, the removed and the added lines only (context lines and hunk positions are
  left out, so the same edit found at another offset is the same edit);
- each line with its whitespace collapsed and a trailing Python ``#`` comment cut, and
  blank and comment-only lines dropped: rewording a comment or re-indenting a blank line
  does not make a new experiment.

A **near-duplicate** has, after that, the same lines except for numbers, and every number
within ``NEAR_REL`` (0.1 %) of the one it stands for (``LR = 0.0400`` against
``LR = 0.04001``): the same code for any measurement this loop can resolve.

The same change on a *different* parent is not a duplicate: re-trying a near-miss on top
of a newer best is a new experiment (docs/hybrid.md).

API::

    normalise(diff_text) -> Normalised         hashable; equal for the same change
    same_change(a, b) -> str | None            "duplicate", "near-duplicate" or None
    Seen.add(parent, diff, info); Seen.find(parent, diff) -> (kind, info) | None
"""

from __future__ import annotations

import io
import re
import tokenize
from dataclasses import dataclass, field
from typing import Any

from pytest_autoresearch.proposers.patch import parse

__all__ = ["NEAR_REL", "Normalised", "Seen", "normalise", "same_change"]

NEAR_REL = 1e-3  # numbers this close (relative) count as the same number
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][-+]?\d+)?(?![\w.])")

# One file's change: (path, removed lines, added lines), every line normalised.
Normalised = tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]


def normalise(diff_text: str) -> Normalised:
    """The change a diff makes, without positions, context, whitespace or comments."""
    out = []
    for fd in parse(diff_text or ""):
        python = fd.path.endswith((".py", ".pyi"))
        removed, added = [], []
        for hunk in fd.hunks:
            for line in hunk.lines:
                tag = line[:1]
                if tag not in ("-", "+"):
                    continue
                text = _line(line[1:], python)
                if text:
                    (removed if tag == "-" else added).append(text)
        if removed or added:
            out.append((fd.path, tuple(removed), tuple(added)))
    return tuple(sorted(out))


def same_change(a: Normalised, b: Normalised) -> str | None:
    """ "duplicate" when equal, "near-duplicate" when equal but for numbers within NEAR_REL."""
    if not a or not b:
        return None
    if a == b:
        return "duplicate"
    if len(a) != len(b):
        return None
    for (pa, ra, aa), (pb, rb, ab) in zip(a, b, strict=True):
        if pa != pb or len(ra) != len(rb) or len(aa) != len(ab):
            return None
        for x, y in zip(ra + aa, rb + ab, strict=True):
            if not _near(x, y):
                return None
    return "near-duplicate"


@dataclass
class Seen:
    """Changes measured or in flight, by parent commit: what a new proposal is checked against."""

    by_parent: dict[str, list[tuple[Normalised, Any]]] = field(default_factory=dict)

    def add(self, parent: str, diff: str, info: Any) -> None:
        key = normalise(diff)
        if parent and key:
            self.by_parent.setdefault(parent, []).append((key, info))

    def find(
        self, parent: str, diff: str, also: list[tuple[str, str, Any]] = ()
    ) -> tuple[str, Any] | None:
        """The earlier change ``diff`` on ``parent`` repeats, exact matches first.

        ``also``: (parent, diff, info) of changes in flight, checked the same way.
        """
        key = normalise(diff)
        if not key:
            return None
        candidates = list(self.by_parent.get(parent, []))
        candidates += [(normalise(d), info) for p, d, info in also if p == parent]
        near = None
        for other, info in reversed(candidates):  # the newest first
            kind = same_change(key, other)
            if kind == "duplicate":
                return kind, info
            if kind and near is None:
                near = (kind, info)
        return near


def _line(text: str, python: bool) -> str:
    if python:
        text = _without_comment(text)
    return " ".join(text.split())


def _without_comment(text: str) -> str:
    """The line less a trailing ``#`` comment (a '#' inside a string stays)."""
    if "#" not in text:
        return text
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text.strip() + "\n").readline):
            if tok.type == tokenize.COMMENT:
                return text.strip()[: tok.start[1]]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass  # a line cut out of a bracket or a string: compared as it is
    return text


def _near(x: str, y: str) -> bool:
    if x == y:
        return True
    if _NUMBER.sub("\0", x) != _NUMBER.sub("\0", y):
        return False
    for a, b in zip(_NUMBER.findall(x), _NUMBER.findall(y), strict=True):
        try:
            u, v = float(a.replace("_", "")), float(b.replace("_", ""))
        except ValueError:
            return False
        if u != v and abs(u - v) > NEAR_REL * max(abs(u), abs(v)):
            return False
    return True
