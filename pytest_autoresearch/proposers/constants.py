"""Find and rewrite the tunable numbers of a Python file.

What is tuned:

- a module-level ``UPPER_CASE = <int or float literal>`` (also ``NAME: int = 3`` and
  negative literals), assigned once: tuned as found, no comment needed;
- any other number whose line carries a ``# search:`` comment (or that program.md's
  ``search:`` key declares): a module-level ``learning_rate = 1e-3``, a field default of a
  module-level class (``GPTConfig.n_layer``, also ``field(default=6)``), or a value in a
  module-level dict literal (``config.lr`` for ``config = {"lr": 1e-3}`` or ``dict(lr=1e-3)``).

The ``# search:`` grammar (words in any order, around at most one range)::

    # search: log 1e-5..1e-1      log scale       # search: 0..0.5        linear
    # search: int 2..12           an int knob     # search: auto          the default range
    # search: off                 never tuned

Rewriting replaces only the literal's bytes, so comments and alignment survive.
"""

from __future__ import annotations

import ast
import io
import math
import re
import tokenize
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal

from pytest_autoresearch.program.search_spec import (
    HINT_EXAMPLE,
    Hint,
    HintError,
    Space,
    Spec,
    default_space,
    parse_spec,
)

__all__ = [
    "HINT_EXAMPLE",
    "Constant",
    "Hint",
    "HintError",
    "Space",
    "Spec",
    "default_space",
    "find_constants",
    "format_value",
    "hint_for",
    "parse_hint",
    "parse_spec",
    "rewrite",
    "round_float",
    "suggest_spec",
    "untuned",
]

_UPPER = re.compile(r"_*[A-Z][A-Z0-9_]*\Z")
# A hint is "search:" then something shaped like a spec: a number first, a LOW..HIGH range,
# or just auto/off. "# search: binary search over sizes" is prose and stays a comment.
_HINT = re.compile(r"\bsearch:\s*(?P<spec>(?=[-+.\d]|.*\.\.|(?:auto|off)\s*\Z).*)\Z", re.IGNORECASE)
_SIGNIFICANT = 4  # digits kept in a proposed float: enough to tune, few enough to read

WHERE_TUNABLE = (
    "a '# search:' comment works on the line of a module-level 'name = <number>', of a field "
    "default in a module-level class, or of a value in a module-level dict literal, "
    "each assigned once"
)


@dataclass(frozen=True)
class Constant:
    """One tunable literal and where its bytes are."""

    name: str  # "LR", "learning_rate", "GPTConfig.n_layer", "config.lr"
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


@dataclass(frozen=True)
class _Site:
    """A number the search could address, tunable or not (``problem`` says why not)."""

    constant: Constant
    lines: range  # where a '# search:' comment for it may sit
    auto: bool  # tuned with no comment (module-level UPPER_CASE)
    problem: str | None = None


def hint_for(spec: Spec, constant: Constant) -> Hint:
    """Check ``spec`` against the literal it applies to; ``HintError`` says where and why."""
    where = f"{constant.where} ({constant.name})"
    if spec.mode == "off":
        return Hint(None, frozen=True)
    if spec.mode == "auto":
        return Hint(None)  # the default range, fixed by the proposer when first seen
    assert spec.low is not None and spec.high is not None
    low, high = spec.low, spec.high
    if spec.kind is float and constant.integer:
        raise HintError(
            f"{where}: 'search: {spec.text}' asks for a float but {constant.text} is an int "
            f"literal; write {constant.name.split('.')[-1]} = {float(constant.value)}"
        )
    if spec.kind is int and not constant.integer:
        raise HintError(
            f"{where}: 'search: {spec.text}' asks for an int but {constant.text} is a float "
            f"literal; write it as {int(constant.value)} (the literal decides the kind)"
        )
    if constant.integer:
        if low != int(low) or high != int(high):
            raise HintError(
                f"{where}: {constant.name} is an int, so 'search: {spec.text}' needs integer "
                f"bounds (write {constant.name} = {float(constant.value)} to tune it as a float)"
            )
        low, high = int(low), int(high)
    if not low <= constant.value <= high:
        raise HintError(
            f"{where}: the value {constant.text} lies outside 'search: {spec.text}'; "
            "widen the range or change the value"
        )
    return Hint(Space(low, high, spec.log, constant.integer))


def parse_hint(comment: str, constant: Constant) -> Hint | None:
    """The hint a comment gives ``constant`` (None when it has no ``search:``)."""
    match = _HINT.search(comment.strip())
    if match is None:
        return None
    try:
        return hint_for(parse_spec(match.group("spec")), constant)
    except HintError as exc:
        text = str(exc)
        if text.startswith(constant.where):
            raise
        example = f"{constant.text}  # search: {suggest_spec(constant.value, constant.text)}"
        raise HintError(
            f"{constant.where} ({constant.name}): {text}. Write e.g. "
            f"{constant.name.split('.')[-1]} = {example}"
        ) from None


def suggest_spec(value: int | float, text: str) -> str:
    """A spec for the default range around a literal, written in the literal's style."""
    space = default_space(value)
    low, high = format_value(space.low, text), format_value(space.high, text)
    words = ("int " if isinstance(value, int) else "") + ("log " if space.log else "")
    return f"{words}{low}..{high}"


def find_constants(
    source: bytes | str, path: str, declared: Mapping[str, Spec] | None = None
) -> list[Constant]:
    """Return the tunable constants of one file, in source order.

    ``declared`` maps names to specs from program.md; they apply as if written in a
    comment on the name's line (and win over one). Raises ``SyntaxError`` for a file
    that does not parse and ``HintError`` for a spec that cannot apply: malformed, on
    a line with no tunable number, or declared for a name the file does not have.
    """
    data = source.encode("utf-8") if isinstance(source, str) else source
    sites = _sites(data, path)
    hinted = {n: c for n, c in _comments(data).items() if _HINT.search(c)}
    claims: dict[int, list[_Site]] = {}
    for site in sites:
        for line in site.lines:
            claims.setdefault(line, []).append(site)
    for line, comment in hinted.items():
        _check_claim(line, comment, claims.get(line, []), path)
    declared = dict(declared or {})
    found = []
    for site in sites:
        constant = site.constant
        spec = declared.pop(constant.name, None)
        if site.problem is not None:
            if spec is not None:
                raise HintError(f"{constant.where} ({constant.name}): {site.problem}")
            continue
        if spec is not None:
            hint: Hint | None = hint_for(spec, constant)
        else:
            comment = " ".join(hinted[n] for n in site.lines if n in hinted)
            hint = parse_hint(comment, constant) if comment else None
        if hint is not None or site.auto:
            found.append(replace(constant, hint=hint))
    if declared:
        name = next(iter(declared))
        known = [s.constant.name for s in sites if s.problem is None]
        raise HintError(
            f"{path} has no tunable number called {name!r} ({WHERE_TUNABLE}); "
            + (f"it has: {', '.join(known[:12])}" if known else "it has no such number at all")
        )
    return found


def untuned(source: bytes | str, path: str) -> list[Constant]:
    """Numbers that a ``# search:`` comment would make tunable, in source order."""
    data = source.encode("utf-8") if isinstance(source, str) else source
    hinted = {n for n, c in _comments(data).items() if _HINT.search(c)}
    return [
        s.constant
        for s in _sites(data, path)
        if s.problem is None and not s.auto and not hinted.intersection(s.lines)
    ]


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


# -- where the numbers are ---------------------------------------------------------------


def _check_claim(line: int, comment: str, claimants: list[_Site], path: str) -> None:
    """A '# search:' comment must sit on exactly one number it can tune; say why not."""
    if not claimants:
        raise HintError(
            f"{path}:{line}: this '# search:' comment is not on a number the search can tune; "
            f"{WHERE_TUNABLE}"
        )
    if len(claimants) > 1:
        names = ", ".join(s.constant.name for s in claimants)
        raise HintError(
            f"{path}:{line}: one '# search:' comment for several numbers ({names}); put each "
            "on its own line with its own comment"
        )
    site = claimants[0]
    if site.problem is not None:
        raise HintError(f"{site.constant.where} ({site.constant.name}): {site.problem}")


def _sites(data: bytes, path: str) -> list[_Site]:
    tree = ast.parse(data, filename=path)
    lines = data.splitlines(keepends=True)  # bytes: splits on \r, \n only, as ast counts lines
    counts, changed = _bindings(tree.body)
    found: list[_Site] = []

    def add(name: str, node: ast.expr, span: range, auto: bool, problem: str | None) -> None:
        site = _literal(name, node, path, lines, span, auto, problem)
        if site is not None:
            found.append(site)

    for stmt in tree.body:
        if isinstance(stmt, ast.ClassDef):
            twice = counts.get(stmt.name, 0) != 1 or stmt.name in changed
            fields, _ = _bindings(stmt.body)
            for inner in stmt.body:
                field, value = _single_target(inner)
                value = _field_default(value)
                if field is None or value is None:
                    continue
                problem = _twice(stmt.name, twice) or _twice(
                    f"{stmt.name}.{field}", fields.get(field, 0) != 1
                )
                add(f"{stmt.name}.{field}", value, _span(inner), False, problem)
            continue
        target, value = _single_target(stmt)
        if target is None or value is None:
            continue
        problem = _twice(target, counts.get(target, 0) != 1)
        if _number(value) is not None:
            add(target, value, _span(stmt), bool(_UPPER.match(target)), problem)
            continue
        problem = problem or (
            f"{target} is changed later at module level" if target in changed else None
        )
        for name, node in _dict_entries(target, value):
            add(name, node, _span(node), False, problem)
    return found


def _literal(
    name: str,
    node: ast.expr,
    path: str,
    lines: list[bytes],
    span: range,
    auto: bool,
    problem: str | None,
) -> _Site | None:
    number = _number(node)
    if number is None or node.lineno != node.end_lineno:
        return None
    text = lines[node.lineno - 1][node.col_offset : node.end_col_offset].decode("utf-8", "replace")
    if _is_non_decimal(text):
        # hex/octal/binary are bit patterns, not knobs
        problem = problem or f"{text} is a hex/octal/binary literal, a bit pattern, not a knob"
    elif _literal_value(text) != number:
        return None  # a span we misread: never rewrite it
    constant = Constant(name, path, number, text, node.lineno, node.col_offset, node.end_col_offset)
    return _Site(constant, span, auto and problem is None, problem)


def _twice(name: str, twice: bool) -> str | None:
    return f"{name} is bound more than once, so rewriting one binding is moot" if twice else None


def _span(node: ast.AST) -> range:
    return range(node.lineno, (node.end_lineno or node.lineno) + 1)


def _dict_entries(prefix: str, node: ast.expr) -> list[tuple[str, ast.expr]]:
    """(dotted name, value) of each entry of a dict literal or ``dict(...)``, nested ones too."""
    pairs: list[tuple[str, ast.expr]] = []
    if isinstance(node, ast.Dict):
        keys = [k.value if isinstance(k, ast.Constant) else None for k in node.keys]
        pairs = [(k, v) for k, v in zip(keys, node.values, strict=True) if isinstance(k, str)]
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "dict"
        and not node.args
    ):
        pairs = [(kw.arg, kw.value) for kw in node.keywords if kw.arg is not None]
    names = [k for k, _ in pairs]
    out: list[tuple[str, ast.expr]] = []
    for key, value in pairs:
        if names.count(key) != 1:
            continue  # a repeated key: only the last one counts, leave both alone
        if _number(value) is not None:
            out.append((f"{prefix}.{key}", value))
        else:
            out.extend(_dict_entries(f"{prefix}.{key}", value))
    return out


def _field_default(value: ast.expr | None) -> ast.expr | None:
    """A class field's number: ``x = 3`` or ``x: int = field(default=3)``."""
    if (
        isinstance(value, ast.Call)
        and isinstance(value.func, (ast.Name, ast.Attribute))
        and (value.func.id if isinstance(value.func, ast.Name) else value.func.attr) == "field"
    ):
        return next((kw.value for kw in value.keywords if kw.arg == "default"), None)
    return value if _number(value) is not None else None


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


def _bindings(body: list[ast.stmt]) -> tuple[dict[str, int], set[str]]:
    """How often each name is bound in ``body``, and names whose items are set later.

    One rewritten binding of several is moot, and so is a dict entry overwritten by
    ``config["lr"] = ...`` further down.
    """
    counts: dict[str, int] = {}
    changed: set[str] = set()
    for stmt in body:
        targets: list[ast.expr] = []
        if isinstance(stmt, ast.Assign):
            targets = list(stmt.targets)
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            targets = [stmt.target]
        elif isinstance(stmt, (ast.ClassDef, ast.FunctionDef)):
            counts[stmt.name] = counts.get(stmt.name, 0) + 1
        for target in targets:
            if isinstance(target, (ast.Subscript, ast.Attribute)):
                root = target
                while isinstance(root, (ast.Subscript, ast.Attribute)):
                    root = root.value
                if isinstance(root, ast.Name):
                    changed.add(root.id)
                continue
            for node in ast.walk(target):
                if isinstance(node, ast.Name):
                    counts[node.id] = counts.get(node.id, 0) + 1
    return counts, changed


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
