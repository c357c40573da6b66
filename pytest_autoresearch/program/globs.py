"""Path globs as program.md writes them: ``*`` and ``?`` within a directory, ``**`` across.

API::

    glob_to_regex("src/**/*.py") -> re.Pattern      cached; matches relative posix paths
    normalise("./src/a.py") -> "src/a.py"           None for absolute or escaping paths
    expand(globs, root, exclude=None) -> list[str]  existing files they match, sorted

Pure: the standard library only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["expand", "glob_to_regex", "normalise"]

# Never walked into: version control, the loop's records, bytecode.
_SKIP_DIRS = {".git", ".hg", ".svn", ".autoresearch", "__pycache__"}
_GLOB_CACHE: dict[str, re.Pattern[str]] = {}


def glob_to_regex(glob: str) -> re.Pattern[str]:
    """Translate a path glob: ``*`` and ``?`` stay within a directory, ``**`` spans them."""
    cached = _GLOB_CACHE.get(glob)
    if cached is not None:
        return cached
    out, i, n = [], 0, len(glob)
    while i < n:
        c = glob[i]
        if glob.startswith("**/", i):
            out.append(r"(?:[^/]+/)*")  # zero or more whole directories
            i += 3
        elif glob.startswith("**", i):
            out.append(r".*")
            i += 2
        elif c == "*":
            out.append(r"[^/]*")
            i += 1
        elif c == "?":
            out.append(r"[^/]")
            i += 1
        elif c == "[":
            j = glob.find("]", i + 2 if glob.startswith("[!", i) else i + 1)
            if j == -1:
                out.append(re.escape(c))
                i += 1
                continue
            body = glob[i + 1 : j]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    pattern = re.compile("".join(out) + r"\Z")
    _GLOB_CACHE[glob] = pattern
    return pattern


def normalise(relpath: str) -> str | None:
    """A clean relative posix path, or None for anything that escapes or is absolute."""
    rel = relpath.replace("\\", "/")
    while rel.startswith("./"):
        rel = rel[2:]
    if not rel or rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
        return None
    parts = rel.split("/")
    if any(p in ("..", "") for p in parts):
        return None
    return "/".join(p for p in parts if p != ".")


def _literal_prefix(glob: str) -> str:
    """The leading directories of a glob that contain no wildcard (where to start walking)."""
    parts = glob.split("/")[:-1]
    keep = []
    for p in parts:
        if any(ch in p for ch in "*?["):
            break
        keep.append(p)
    return "/".join(keep)


def expand(globs: Iterable[str], root: Path, exclude: str | None = None) -> list[str]:
    """The files under ``root`` that ``globs`` match, as sorted relative posix paths."""
    found: set[str] = set()
    for g in globs:
        pattern = glob_to_regex(g)
        start = root / _literal_prefix(g) if _literal_prefix(g) else root
        if not start.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
            base = Path(dirpath)
            for name in filenames:
                rel = (base / name).relative_to(root).as_posix()
                if rel != exclude and pattern.match(rel):
                    found.add(rel)
    return sorted(found)
