"""Find and rewrite the tunable numeric constants of a Python file.

A tunable constant is a module-level ``UPPER_CASE = <int or float literal>``
(also ``NAME: int = 3`` and negative literals), assigned once. Rewriting
replaces only the literal's bytes, so comments and alignment survive.
"""

from __future__ import annotations

import ast
import io
import math
import re
import tokenize
from dataclasses import dataclass
from decimal import Decimal

_UPPER = re.compile(r"_*[A-Z][A-Z0-9_]*\Z")
_HINT = re.compile(r"\bsearch:\s*(?P<spec>.*)\Z")
_RANGE = re.compile(r"(?P<low>\S+?)\s*\.\.\s*(?P<high>\S+)(?:\s+(?P<scale>\w+))?\Z")
_SIGNIFICANT = 4  # digits kept in a proposed float: enough to tune, few enough to read

HINT_EXAMPLE = (
    "LR = 0.04  # search: 0.001..0.1 log   (or: DEPTH = 4  # search: 2..12, # search: off)"
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
class Hint:
    """What a ``# search:`` comment asked for: a range, or ``frozen`` for ``off``."""

    space: Space | None
    frozen: bool = False


@dataclass(frozen=True)
class Constant:
    """One tunable literal and where its bytes are."""

    name: str
    path: str  # relative posix path of the file
    value: int | float
    text: str  # the literal as written, sign included ("-3", "3e-4", "1_000")
    lineno: int  # 1-based
    start: int  # byte offset of the literal in its line
    end: int
    hint: Hint | None = None

    @property
    def integer(self) -> bool:
        """Integers stay integers: the literal decides the kind."""
        return isinstance(self.value, int)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.lineno}"


def find_constants(source: bytes | str, path: str) -> list[Constant]:
    """Return the tunable constants of one file, in source order.

    Raises ``SyntaxError`` for a file that does not parse and ``HintError`` for
    a malformed ``# search:`` comment on a constant's line.
    """
    data = source.encode("utf-8") if isinstance(source, str) else source
    tree = ast.parse(data, filename=path)
    lines = data.splitlines(keepends=True)  # bytes: splits on \r, \n only, as ast counts lines
    comments = _comments(data)
    counts = _assignment_counts(tree)
    found = []
    for stmt in tree.body:
        target, value = _single_target(stmt)
        if target is None or not _UPPER.match(target) or counts.get(target, 0) != 1:
            continue
        number = _number(value)
        if number is None or value.lineno != value.end_lineno:
            continue
        line = lines[value.lineno - 1]
        text = line[value.col_offset : value.end_col_offset].decode("utf-8", "replace")
        if _is_non_decimal(text) or _literal_value(text) != number:
            # hex/octal/binary are bit patterns, not knobs; a mismatch is a span we misread
            continue
        comment = " ".join(comments.get(n, "") for n in range(stmt.lineno, stmt.end_lineno + 1))
        constant = Constant(
            target, path, number, text, value.lineno, value.col_offset, value.end_col_offset
        )
        hint = parse_hint(comment, constant)
        found.append(_with_hint(constant, hint))
    return found


def rewrite(source: bytes, changes: dict[Constant, int | float]) -> bytes:
    """Return ``source`` with each constant's literal replaced by its new value, nothing else."""
    lines = source.splitlines(keepends=True)
    # Right to left within a line, so earlier offsets stay valid.
    for constant in sorted(changes, key=lambda c: (c.lineno, c.start), reverse=True):
        line = lines[constant.lineno - 1]
        old = line[constant.start : constant.end].decode("utf-8")
        if old != constant.text:
            raise ValueError(
                f"{constant.where}: expected {constant.text!r} at the constant's position, "
                f"found {old!r}; the file changed since it was read"
            )
        new = format_value(changes[constant], constant.text).encode("utf-8")
        lines[constant.lineno - 1] = line[: constant.start] + new + line[constant.end :]
    return b"".join(lines)


def format_value(value: float, original: str) -> str:
    """Write ``value`` in the style of the ``original`` literal."""
    body = original.lstrip("+-").strip()
    if _literal_kind(body) is int:
        number = int(round(value))
        return f"{number:_}" if "_" in body else str(number)
    value = round_float(value)
    if "e" in body.lower():
        return _scientific(value, body)
    text = format(Decimal(repr(value)), "f")
    if "." not in text:
        text += ".0"
    if text.startswith("0.") and body.startswith("."):
        text = text[1:]  # keep ".5" style
    return text


def round_float(value: float) -> float:
    """The float that ``format_value`` writes for ``value`` (a few significant digits)."""
    return float(f"{value:.{_SIGNIFICANT - 1}e}")


def default_space(value: int | float) -> Space:
    """The range searched around a constant that has no ``# search:`` hint.

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


def parse_hint(comment: str, constant: Constant) -> Hint | None:
    """Read a ``# search: LOW..HIGH [log|linear]`` or ``# search: off`` comment."""
    match = _HINT.search(comment.strip())
    if match is None:
        return None
    spec = match.group("spec").strip()
    if spec.lower() == "off":
        return Hint(None, frozen=True)
    where = f"{constant.where} ({constant.name})"
    parts = _RANGE.match(spec)
    if parts is None:
        raise HintError(
            f"{where}: cannot read the hint 'search: {spec}'. Write e.g. {HINT_EXAMPLE}"
        )
    scale = (parts.group("scale") or "linear").lower()
    if scale not in ("log", "linear"):
        raise HintError(f"{where}: unknown scale {scale!r} in 'search: {spec}'; use log or linear")
    try:
        low, high = float(parts.group("low")), float(parts.group("high"))
    except ValueError:
        raise HintError(
            f"{where}: the bounds in 'search: {spec}' are not numbers. Write e.g. {HINT_EXAMPLE}"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise HintError(
            f"{where}: 'search: {spec}' needs finite bounds with LOW < HIGH "
            "(use '# search: off' to freeze a constant)"
        )
    if scale == "log" and low <= 0:
        raise HintError(f"{where}: a log range needs LOW > 0, got 'search: {spec}'")
    if constant.integer:
        if low != int(low) or high != int(high):
            raise HintError(
                f"{where}: {constant.name} is an int, so 'search: {spec}' needs integer bounds "
                f"(write {constant.name} = {float(constant.value)} to tune it as a float)"
            )
        low, high = int(low), int(high)
    if not low <= constant.value <= high:
        raise HintError(
            f"{where}: the value {constant.text} lies outside 'search: {spec}'; "
            "widen the range or change the value"
        )
    return Hint(Space(low, high, scale == "log", constant.integer))


def _with_hint(constant: Constant, hint: Hint | None) -> Constant:
    if hint is None:
        return constant
    return Constant(
        constant.name,
        constant.path,
        constant.value,
        constant.text,
        constant.lineno,
        constant.start,
        constant.end,
        hint,
    )


def _single_target(stmt: ast.stmt) -> tuple[str | None, ast.expr | None]:
    """The one plain name a statement assigns a value to, if it is that simple."""
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        target = stmt.targets[0]
        if isinstance(target, ast.Name):
            return target.id, stmt.value
    if (
        isinstance(stmt, ast.AnnAssign)
        and stmt.value is not None
        and isinstance(stmt.target, ast.Name)
    ):
        return stmt.target.id, stmt.value
    return None, None


def _assignment_counts(tree: ast.Module) -> dict[str, int]:
    """How often each name is bound at module level: one rewritten binding of several is moot."""
    counts: dict[str, int] = {}
    for stmt in tree.body:
        targets: list[ast.expr] = []
        if isinstance(stmt, ast.Assign):
            targets = list(stmt.targets)
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            targets = [stmt.target]
        for target in targets:
            for node in ast.walk(target):
                if isinstance(node, ast.Name):
                    counts[node.id] = counts.get(node.id, 0) + 1
    return counts


def _number(node: ast.expr | None) -> int | float | None:
    """The value of an int/float literal, optionally negated; None for anything else."""
    negate = False
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        negate, node = True, node.operand
    if not isinstance(node, ast.Constant) or isinstance(node.value, bool):
        return None
    if not isinstance(node.value, (int, float)) or not math.isfinite(node.value):
        return None
    return -node.value if negate else node.value


def _is_non_decimal(text: str) -> bool:
    body = text.lstrip("-").strip().lower()
    return body.startswith(("0x", "0o", "0b"))


def _literal_kind(body: str) -> type:
    return float if any(ch in body.lower() for ch in ".e") else int


def _literal_value(text: str) -> int | float | None:
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _scientific(value: float, original: str) -> str:
    """Scientific notation shaped like ``original``: ``3e-4`` -> ``2.5e-4``, ``3.0E-04`` stays E."""
    mantissa, exponent = f"{value:.{_SIGNIFICANT - 1}e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    original_mantissa, original_exponent = re.split("[eE]", original, maxsplit=1)
    if "." in original_mantissa and "." not in mantissa:
        mantissa += ".0"
    marker = "E" if "E" in original else "e"
    power = int(exponent)
    digits = original_exponent.lstrip("+-")
    width = len(digits) if digits.startswith("0") else 1  # keep zero padding like 1e-04
    sign = "-" if power < 0 else ("+" if original_exponent.startswith("+") else "")
    return f"{mantissa}{marker}{sign}{abs(power):0{width}d}"


def _comments(data: bytes) -> dict[int, str]:
    """Comment text by line number (tokenize, so a '#' inside a string is not a comment)."""
    found: dict[int, str] = {}
    try:
        for token in tokenize.tokenize(io.BytesIO(data).readline):
            if token.type == tokenize.COMMENT:
                found[token.start[0]] = token.string.lstrip("#").strip()
    except (tokenize.TokenError, SyntaxError):
        pass  # ast parsed it, so this is an edge tokenize disagrees on; go without hints
    return found
