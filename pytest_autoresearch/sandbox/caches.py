"""program.md's ``cache:`` paths, verified around every evaluation: they may grow, not change.

A cache is a trust decision: the user lets evaluations write a path outside the checkout and
keep what they wrote (downloaded data, compiled kernels), so one evaluation could plant
something a later one reads. The rule that keeps that honest without knowing the cache's
format: *append only*. Before and after every evaluation the guard takes a stat fingerprint
of every file under each cache (size, mtime, ctime, inode, mode; ``fingerprint.key_of``: a
rewrite that puts the old mtime back still changes ctime, a replace changes the inode). New
files are accepted and become part of the state; an existing file changed or deleted is a
tamper, reported with its path, and every later evaluation is refused until the cache is
restored (a poisoned cache would otherwise change every later measurement).

Where there are no namespaces (the plain launcher), this is all that protects the declared
data paths; with them, the rest of the filesystem is read-only anyway (boot.py).

API::

    CacheGuard(paths)
      .check(when) -> str        "" when the caches are as accepted so far, else why not
    guard_of(launcher) -> CacheGuard | None   the one guard of a launcher's ``caches``
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pytest_autoresearch.sandbox.fingerprint import Key, key_of

SHOWN = 3  # paths named in a reason


class CacheGuard:
    """The accepted state of the cache paths; ``check`` compares and grows it."""

    def __init__(self, paths: Iterable[Path | str]) -> None:
        self.paths = tuple(Path(p) for p in paths)
        self._state: dict[str, Key] | None = None
        self._broken = ""  # once a cache was changed, why: every later check says so
        self._lock = threading.Lock()  # worker threads share one launcher

    def check(self, when: str) -> str:
        """``""`` when no accepted file changed; else a one-line reason (a tamper)."""
        with self._lock:
            now = self._take()
            if self._state is None:
                self._state = now
                return ""
            if self._broken:
                return self._broken
            changed = sorted(p for p, key in self._state.items() if now.get(p) != key)
            if changed:
                more = f" and {len(changed) - SHOWN} more" if len(changed) > SHOWN else ""
                self._broken = (
                    f"cache tampering: {', '.join(changed[:SHOWN])}{more} changed {when} (a "
                    "declared cache may only grow); restore or delete the cache, then resume"
                )
                return self._broken
            self._state.update(now)  # new files: a cache fills up
            return ""

    def _take(self) -> dict[str, Key]:
        out: dict[str, Key] = {}
        for top in self.paths:
            for path in _files(top):
                try:
                    out[str(path)] = key_of(path.lstat())
                except OSError:
                    continue
        return out


def _files(top: Path) -> Iterable[Path]:
    if not top.is_dir() or top.is_symlink():
        if top.exists() or top.is_symlink():
            yield top
        return
    for folder, dirs, files in os.walk(top):
        for name in (*files, *(d for d in dirs if (Path(folder) / d).is_symlink())):
            yield Path(folder) / name


_GUARDS: dict[int, CacheGuard] = {}
_GUARDS_LOCK = threading.Lock()


def guard_of(launcher: Any) -> CacheGuard | None:
    """The guard of ``launcher``'s caches (looked through a wrapper's ``inner``), or None."""
    inner = launcher
    while inner is not None and not hasattr(inner, "caches"):
        inner = getattr(inner, "inner", None)
    caches = tuple(getattr(inner, "caches", ()) or ())
    if not caches:
        return None
    with _GUARDS_LOCK:
        guard = getattr(inner, "cache_guard", None)
        if guard is None:
            guard = CacheGuard(caches)
            try:
                inner.cache_guard = guard
            except AttributeError:
                guard = _GUARDS.setdefault(id(inner), guard)
        return guard
