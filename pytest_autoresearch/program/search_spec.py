"""The ``search:`` grammar and the ranges it names (pure, no imports beyond the stdlib).

A spec is words in any order around at most one range::

    log 1e-5..1e-1     log scale              0..0.5     linear
    int 2..12          an int knob            auto       the default range
    off                never tuned

It is written in a ``# search:`` comment on a number's line or in program.md's
``search:`` key; ``constants.hint_for`` checks it against the literal it applies to.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "HINT_EXAMPLE",
    "SEARCH_EXAMPLE",
    "Declared",
    "Hint",
    "HintError",
    "Space",
    "Spec",
    "default_space",
    "parse_search",
    "parse_spec",
]

_RANGE = re.compile(r"(?P<low>[^\s.]\S*?|\.\d\S*?)\.\.(?P<high>\S+)\Z")
_WORDS: dict[str, tuple[str, object]] = {
    "log": ("scale", True),
    "linear": ("scale", False),
    "int": ("kind", int),
    "float": ("kind", float),
}

HINT_EXAMPLE = (
    "learning_rate = 1e-3  # search: log 1e-5..1e-1   "
    "(or: n_layer = 6  # search: int 2..12, # search: auto, # search: off)"
)


class HintError(ValueError):
    """A ``# search:`` comment cannot be understood; the message says where and how to fix it."""


@dataclass(frozen=True)
class Space:
    """Where the search may move one constant."""

    low: float
    high: float
    log: bool
    integer: bool

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies inside the range."""
        return self.low <= value <= self.high

    def as_dict(self) -> dict[str, float | bool]:
        return {"low": self.low, "high": self.high, "log": self.log, "integer": self.integer}

    @classmethod
    def from_dict(cls, data: dict) -> Space:
        return cls(
            float(data["low"]), float(data["high"]), bool(data["log"]), bool(data["integer"])
        )


@dataclass(frozen=True)
class Spec:
    """A parsed search spec (comment or program.md), before it meets its literal."""

    text: str
    mode: str  # "range" | "auto" | "off"
    low: float | None = None
    high: float | None = None
    log: bool = False
    kind: type | None = None  # int or float when the spec names one


@dataclass(frozen=True)
class Hint:
    """What a spec asked for one literal: a range, the default range, or ``frozen`` for ``off``."""

    space: Space | None  # None: the default range (``auto``), or nothing when frozen
    frozen: bool = False


def parse_spec(text: str) -> Spec:
    """Read a spec such as ``log 1e-5..1e-1``, ``int 2..12``, ``auto`` or ``off``.

    Raises ``HintError`` (without a location: the caller knows where the text came from).
    """
    spec = re.sub(r"\s*\.\.\s*", "..", " ".join(str(text).split()))
    if spec.lower() in ("off", "auto"):
        return Spec(spec, spec.lower())
    found: dict[str, object] = {}
    bounds = None
    for word in spec.split(" "):
        if ".." in word:
            if bounds is not None:
                raise HintError(f"'search: {spec}' has two ranges; give one LOW..HIGH")
            bounds = _RANGE.match(word)
            if bounds is None:
                raise HintError(f"cannot read the hint 'search: {spec}': a range is LOW..HIGH")
            continue
        slot = _WORDS.get(word.lower())
        if slot is None and word[:1] in "0123456789+-.":
            raise HintError(f"cannot read the hint 'search: {spec}': a range is LOW..HIGH")
        if slot is None:
            raise HintError(
                f"unknown word {word!r} in 'search: {spec}'; use log or linear, int or float, "
                "and one LOW..HIGH range"
            )
        if slot[0] in found and found[slot[0]] != slot[1]:
            raise HintError(f"'search: {spec}' contradicts itself ({word!r})")
        found[slot[0]] = slot[1]
    if bounds is None:
        raise HintError(
            f"cannot read the hint 'search: {spec}': it needs a LOW..HIGH range, auto or off"
        )
    try:
        low, high = float(bounds.group("low")), float(bounds.group("high"))
    except ValueError:
        raise HintError(f"the bounds in 'search: {spec}' are not numbers") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise HintError(
            f"'search: {spec}' needs finite bounds with LOW < HIGH "
            "(use '# search: off' to freeze a constant)"
        )
    log = bool(found.get("scale", False))
    if log and low <= 0:
        raise HintError(f"a log range needs LOW > 0, got 'search: {spec}'")
    kind = found.get("kind")
    return Spec(spec, "range", low, high, log, kind if isinstance(kind, type) else None)


def default_space(value: int | float) -> Space:
    """The range searched around a constant that has no ``# search:`` range.

    Positive floats: log-uniform over [v/10, v*10]; fractions in (0, 0.5] stay
    at most 1, and fractions above 0.5 (betas, ratios) search [2v-1, 1] linearly.
    Positive ints: [max(1, v//2), max(2v, v+2)], log from 8 up. Zero: [0, 0.1]
    or [0, 4]. Negatives: linear over [2v, v/2].
    """
    if isinstance(value, int):
        if value > 0:
            return Space(max(1, value // 2), max(2 * value, value + 2), value >= 8, True)
        if value == 0:
            return Space(0, 4, False, True)
        return Space(2 * value, -max(1, -value // 2), False, True)
    if value > 0:
        if value < 1 and value > 0.5:
            return Space(2 * value - 1, 1.0, False, False)
        high = min(value * 10, 1.0) if value < 1 else value * 10
        return Space(value / 10, high, True, False)
    if value == 0:
        return Space(0.0, 0.1, False, False)
    return Space(2 * value, value / 2, False, False)


@dataclass(frozen=True)
class Declared:
    """A range program.md's ``search:`` key gives a number of an editable file."""

    path: str  # relative posix path, as written under ``search:``
    name: str  # "learning_rate", "GPTConfig.n_layer", "config.lr"
    spec: Spec


SEARCH_EXAMPLE = 'search: {train.py: {learning_rate: "log 1e-5..1e-1", n_layer: "int 2..12"}}'
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[^\s.]+)*\Z")


def parse_search(value: Any, editable: Callable[[str], bool]) -> tuple[Declared, ...]:
    """Read program.md's ``search:`` value: ``{file: {name: spec}}``.

    ``editable(relpath)`` says whether the file is one the program lets change. Raises
    ``HintError`` whose message says what is wrong (the caller adds the place).
    """
    if value is None:
        return ()
    if not isinstance(value, dict) or not value:
        raise HintError(
            f"search must map each editable file to its numbers and ranges, got {value!r}"
        )
    found = []
    for path, names in value.items():
        path = str(path)
        if not editable(path):
            raise HintError(f"search names {path!r}, which is not an editable file")
        if not isinstance(names, dict) or not names:
            raise HintError(f"search: {path} must map names to ranges, got {names!r}")
        for name, text in names.items():
            name = str(name)
            if not _DOTTED.match(name):
                raise HintError(
                    f"search: {path}: {name!r} is not a name like learning_rate, "
                    "GPTConfig.n_layer or config.lr"
                )
            # YAML reads a bare off/on as a bool: take them at their word.
            text = {False: "off", True: "auto"}.get(text, text) if isinstance(text, bool) else text
            if not isinstance(text, str):
                raise HintError(
                    f"search: {path}: {name}: {text!r} is not a range like 'log 1e-5..1e-1'"
                )
            try:
                spec = parse_spec(text)
            except HintError as exc:
                raise HintError(f"search: {path}: {name}: {exc}") from None
            found.append(Declared(path, name, spec))
    return tuple(found)
