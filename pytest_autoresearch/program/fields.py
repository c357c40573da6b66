"""program.md's keys, one validator each: the value as the Program holds it, or a ProgramError.

Every validator gets ``fail(key, problem, fix) -> ProgramError`` from the parser, which
knows the key's line; the error names the problem and how to fix it. Pure: the standard
library only (``search:`` is handed to ``search_spec``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_autoresearch.program.globs import expand, glob_to_regex, normalise
from pytest_autoresearch.program.model import PROTECTED_PARTS, Constraint, ProgramError

Fail = Callable[[Any, str, str], ProgramError]

_OPS = ("<=", ">=", "==", "<", ">")
_CONSTRAINT_RE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_.\-]*)\s*(?P<op><=|>=|==|<|>)\s*(?P<bound>\S+)\s*$"
)


# -- the keys ---------------------------------------------------------------------------


def editable_globs(value: Any, root: Path, program_rel: str | None, fail: Fail) -> tuple[str, ...]:
    """``editable:``: globs that each match a file, through no symlink leading elsewhere."""
    editable = globs(value, "editable", fail)
    # A glob covering program.md is not an error: it stays protected (protected_overlaps).
    for g in editable:
        if not expand([g], root, exclude=program_rel):
            raise fail(
                "editable",
                f"the editable glob {g!r} matches no file under {root}",
                "check the spelling; globs are relative to the rootdir and '**' spans directories",
            )
    _check_symlinks(editable, root, program_rel, fail)
    return editable


def guard_paths(value: Any, root: Path, fail: Fail, key: str = "guards") -> tuple[str, ...]:
    """``guards:`` (or ``smoke:``): existing test paths or node ids, no options."""
    what = {"guards": "guard", "smoke": "smoke test"}.get(key, key)
    guards = strings(value, key, fail)
    for g in guards:
        if g.startswith("-"):
            raise fail(
                key,
                f"{what} {g!r} is an option, not a test",
                "list test paths or node ids only (e.g. tests/test_model.py::test_shapes)",
            )
        target = g.split("::", 1)[0]
        if not (root / target).exists():
            raise fail(
                key,
                f"the {what} path {target!r} does not exist under {root}",
                "give a test file or directory relative to the rootdir",
            )
    return guards


def holdout_name(value: Any, objective: str, fail: Fail) -> str | None:
    """``holdout:``: a metric name other than the objective, or None when not given."""
    holdout = name(value, "holdout", fail) if value is not None else None
    if holdout is not None and holdout == objective:
        raise fail(
            "holdout",
            "the holdout is the objective itself",
            "name a different metric, one never used to decide (e.g. test_bpb)",
        )
    return holdout


def baseline_runs(value: Any, fail: Fail) -> int:
    """``baseline_runs:``: a whole number >= 2."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise fail(
            "baseline_runs",
            f"baseline_runs must be a whole number >= 2, got {value!r}",
            "use 3 or more: the noise is estimated from the spread of these runs",
        )
    return value


def context_globs(value: Any, root: Path, fail: Fail) -> tuple[str, ...]:
    """``context:``: globs that each match a file."""
    context = globs(value, "context", fail)
    for g in context:
        if not expand([g], root):
            raise fail(
                "context",
                f"the context glob {g!r} matches no file under {root}",
                "check the spelling, or remove it",
            )
    return context


def constraint(text: str, fail: Fail) -> Constraint:
    """One ``constraints:`` entry, 'metric OP number'."""
    m = _CONSTRAINT_RE.match(text)
    bound: float | None = None
    if m:
        try:
            bound = float(m.group("bound"))
        except ValueError:
            bound = None
    if m is None or bound is None or not math.isfinite(bound):
        raise fail(
            "constraints",
            f"cannot read the constraint {text!r}",
            f"write 'metric OP number' with OP one of {', '.join(_OPS)}, e.g. 'peak_vram_gb <= 60'",
        )
    return Constraint(metric=m.group("metric"), op=m.group("op"), bound=bound, text=text.strip())


def search(value: Any, editable: tuple[str, ...], root: Path, program_rel: Any, fail: Fail) -> Any:
    """``search:``: ranges for named numbers in the editable files (search_spec's grammar)."""
    from pytest_autoresearch.program.search_spec import SEARCH_EXAMPLE, HintError, parse_search

    try:
        return parse_search(value, lambda rel: rel in expand(editable, root, exclude=program_rel))
    except HintError as exc:
        raise fail("search", str(exc), f"write e.g. {SEARCH_EXAMPLE}") from None


def flag(data: dict[Any, Any], key: str, fail: Fail) -> bool:
    """An on/off key (``sandbox:``, ``network:``); on when not given."""
    value = data.get(key, True)
    if isinstance(value, bool):
        return value
    raise fail(key, f"{key} must be on or off, got {value!r}", f"write {key}: on (or {key}: off)")


def count(data: dict[Any, Any], key: str, fail: Fail, *, least: int, default: int | None) -> Any:
    """A whole-number key (``workers:``, ``gpus_per_worker:``) of at least ``least``."""
    value = data.get(key, default)
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= least):
        return value
    example = {"workers": 4, "gpus_per_worker": 2, "notebook_tokens": 12000}.get(key, least)
    raise fail(
        key,
        f"{key} must be a whole number >= {least}, got {value!r}",
        f"write e.g. {key}: {example}",
    )


def lean(value: Any, fail: Fail) -> bool | tuple[str, ...]:
    """``lean:``: true/false, or the pytest plugins to keep loaded as well."""
    if isinstance(value, bool):
        return value
    if isinstance(value, list) and all(
        isinstance(x, str) and re.match(r"^[A-Za-z0-9_.:\-]+$", x.strip()) for x in value
    ):
        return tuple(x.strip() for x in value) or True  # [] is lean with nothing kept
    raise fail(
        "lean",
        f"lean must be true, false or a list of pytest plugin names, got {value!r}",
        "write lean: true, or e.g. lean: [pytest_timeout] to keep a plugin loaded",
    )


def shared(value: Any, root: Path, fail: Fail) -> tuple[str, ...]:
    """``shared:``: existing plain paths inside the rootdir, outside git's and ours."""
    out = []
    for raw in strings(value, "shared", fail) if value is not None else ():
        rel = normalise(raw.rstrip("/"))
        if rel is None or any(ch in rel for ch in "*?["):
            raise fail(
                "shared",
                f"the shared path {raw!r} is not a plain path inside the rootdir",
                "name a file or folder relative to the rootdir, without '..' or wildcards, "
                "e.g. data/",
            )
        if PROTECTED_PARTS.intersection(rel.casefold().split("/")):
            raise fail(
                "shared",
                f"the shared path {raw!r} is inside git's or the loop's own files",
                "share only your own untracked files, e.g. a dataset folder",
            )
        if not (root / rel).exists():
            raise fail(
                "shared",
                f"the shared path {raw!r} does not exist under {root}",
                "create it first (e.g. download the data), or remove it from shared",
            )
        out.append(rel)
    return tuple(dict.fromkeys(out))


def caches(value: Any, root: Path, fail: Fail) -> tuple[str, ...]:
    """``cache:``: folders or files outside the checkout that evaluations may write.

    A trust decision (docs/isolation.md): everything else outside the checkout is read-only
    to an evaluation and its HOME is fresh each time; a cache is kept between evaluations,
    verified append-only around each one. Absolute, ``~/...`` or relative to the rootdir.
    """
    out = []
    home = Path.home().resolve()
    real_root = root.resolve()
    for raw in strings(value, "cache", fail) if value is not None else ():
        path = (root / Path(raw).expanduser()).resolve()
        if path in (Path(path.anchor), home) or path == real_root or path in real_root.parents:
            raise fail(
                "cache",
                f"the cache {raw!r} is {path}, which covers the home folder, the checkout or "
                "the whole disk",
                "name the cache folder itself, e.g. ~/.cache/huggingface",
            )
        if real_root in path.parents:
            raise fail(
                "cache",
                f"the cache {raw!r} is inside the checkout, which evaluations write anyway "
                "(and the tree fingerprint checks)",
                "remove it from cache; for workers' checkouts use shared: instead",
            )
        if PROTECTED_PARTS.intersection(p.casefold() for p in path.parts):
            raise fail(
                "cache",
                f"the cache {raw!r} is inside git's or the loop's own files",
                "name a folder of your own, e.g. ~/.cache/my-dataset",
            )
        out.append(str(path))  # a folder not there yet is created at start (for_research)
    return tuple(dict.fromkeys(out))


# -- value shapes -----------------------------------------------------------------------


def strings(value: Any, key: str, fail: Fail) -> tuple[str, ...]:
    """A string or a list of non-empty strings, stripped."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(
        isinstance(x, str) and x.strip() for x in items
    ):
        raise fail(
            key,
            f"{key} must be a list of non-empty strings, got {value!r}",
            f'write e.g. {key}: ["..."]',
        )
    return tuple(x.strip() for x in items)


def globs(value: Any, key: str, fail: Fail) -> tuple[str, ...]:
    """Relative posix globs that stay under the rootdir."""
    found = strings(value, key, fail)
    for g in found:
        if g.startswith("/") or re.match(r"^[A-Za-z]:", g) or g.startswith("~"):
            raise fail(
                key,
                f"the {key} glob {g!r} is absolute",
                "write it relative to the rootdir, e.g. src/model.py",
            )
        if "\\" in g:
            raise fail(key, f"the {key} glob {g!r} uses '\\'", "separate directories with '/'")
        if ".." in g.split("/"):
            raise fail(
                key,
                f"the {key} glob {g!r} leaves the rootdir with '..'",
                "only files under the rootdir can be named",
            )
    return found


def name(value: Any, key: str, fail: Fail) -> str:
    """A metric name (``objective:``, ``holdout:``)."""
    if not isinstance(value, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_.\-]*$", value.strip()):
        raise fail(
            key,
            f"{key} must be a metric name, got {value!r}",
            f"write the name of a @metric test's metric, e.g. {key}: val_loss",
        )
    return value.strip()


def number(value: Any, key: str, fail: Fail, *, positive: bool) -> float | None:
    """A finite number, > 0 when ``positive`` else >= 0; None when not given."""
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        need = "a number of seconds > 0" if positive else "a number >= 0"
        raise fail(
            key,
            f"{key} must be {need}, got {value!r}",
            f"e.g. {key}: {'420' if positive else '0.001'}",
        )
    return float(value)


def _check_symlinks(
    editable: tuple[str, ...], root: Path, program_rel: str | None, fail: Fail
) -> None:
    real_root = root.resolve()
    matcher = [glob_to_regex(g) for g in editable]
    for rel in expand(editable, root, exclude=program_rel):
        real = (root / rel).resolve()
        try:
            target = real.relative_to(real_root).as_posix()
        except ValueError:
            raise fail(
                "editable",
                f"{rel} is a symlink (or inside one) that leads outside the rootdir, to {real}",
                "replace the link with the real file, or drop it from the editable globs",
            ) from None
        if target == program_rel or not any(m.match(target) for m in matcher):
            raise fail(
                "editable",
                f"{rel} is a symlink to {target}, which the editable globs do not allow",
                "name the real file in editable, or remove the link",
            )
