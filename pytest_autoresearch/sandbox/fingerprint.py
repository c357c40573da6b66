"""What the experiment can touch, cheaply: a stat fingerprint of the work tree and git dirs.

``take(workdir, git_dir, common_dir, skip=...)`` walks the work tree with ``lstat`` only
(no file is read or hashed) and keys every file by (size, mtime_ns, ctime_ns, inode,
mode): a rewrite that puts the old mtime back still changes ctime, and a replace by
rename changes the inode. Bytecode (``__pycache__``, ``.pyc``) and the record directory
are left out: the first changes on every import, the second is ours.

The git dirs are fingerprinted apart (``Fingerprint.git``), limited to what can run code
or change what git reports: ``config``, ``hooks/``, ``info/``, ``HEAD``, ``refs/`` and
``packed-refs`` of the repository, of every submodule under ``.git/modules`` and of every
nested ``.git`` directory in the work tree. ``.git/index`` is left out on purpose (any
``git status``, ours or the worker's, rewrites its stat cache); its meaningful part, the
entries and their skip-worktree / assume-unchanged flags, comes from ``git ls-files -v``
and is passed in as ``index``.

Nothing here imports git or pytest.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

Key = tuple[int, int, int, int, int]  # size, mtime_ns, ctime_ns, inode, mode

# Parts of a git dir that can run code (hooks, config: filters, fsmonitor, include.path)
# or change what git reports (info/exclude, refs).
GIT_DIR_PARTS = (
    "config",
    "HEAD",
    "packed-refs",
    "hooks",
    "info",
    "refs",
    "commondir",
    "index.lock",
)
# Files whose mere presence changes what pytest or Python runs.
CODE_SUFFIXES = (".py", ".pth", ".so", ".pyd", ".pyx", ".dylib", ".dll")
CODE_NAMES = frozenset(
    {
        "conftest.py",
        "pytest.ini",
        ".pytest.ini",
        "tox.ini",
        "setup.cfg",
        "pyproject.toml",
        "sitecustomize.py",
        "usercustomize.py",
        ".gitignore",
        ".gitattributes",
        ".gitmodules",
    }
)


@dataclass(frozen=True)
class Fingerprint:
    """The stat state of every file the experiment could change (paths posix, from workdir)."""

    files: Mapping[str, Key]
    git: Mapping[str, Key]  # "<git dir>/<part>", relative to workdir when inside it
    index: Mapping[str, str] = field(default_factory=dict)  # tracked path -> ls-files -v tag

    @property
    def tracked(self) -> frozenset[str]:
        return frozenset(self.index)

    def flags(self) -> dict[str, str]:
        """Index entries git is told to look away from: path -> flag name."""
        out: dict[str, str] = {}
        for path, tag in self.index.items():
            if tag == "S":
                out[path] = "skip-worktree"
            elif tag.islower():
                out[path] = "assume-unchanged"
        return out


@dataclass(frozen=True)
class Change:
    path: str
    kind: str  # "new" | "changed" | "deleted"


def diff(before: Mapping[str, Key], after: Mapping[str, Key]) -> list[Change]:
    """Files that appeared, changed or disappeared, sorted by path."""
    out = [Change(p, "new") for p in after.keys() - before.keys()]
    out += [Change(p, "deleted") for p in before.keys() - after.keys()]
    out += [Change(p, "changed") for p in before.keys() & after.keys() if before[p] != after[p]]
    return sorted(out, key=lambda c: c.path)


def flag_changes(before: Fingerprint, after: Fingerprint) -> list[str]:
    """Paths whose skip-worktree / assume-unchanged flag differs."""
    a, b = before.flags(), after.flags()
    return sorted(p for p in a.keys() | b.keys() if a.get(p) != b.get(p))


def is_code(path: str) -> bool:
    """Whether a new file at ``path`` could change what Python, pytest or git runs."""
    name = path.rsplit("/", 1)[-1].casefold()
    return name in CODE_NAMES or name.endswith(CODE_SUFFIXES)


def key_of(st: os.stat_result) -> Key:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode)


def take(
    workdir: Path,
    git_dirs: Iterable[Path],
    *,
    skip: Iterable[Path] = (),
    index: Mapping[str, str] | None = None,
) -> Fingerprint:
    """Fingerprint ``workdir`` and the given git dirs (the repository's and its common dir)."""
    workdir = Path(workdir)
    skipped = {os.path.normcase(os.path.abspath(p)) for p in skip}
    files: dict[str, Key] = {}
    git: dict[str, Key] = {}
    nested: list[Path] = []
    _walk_tree(workdir, workdir, skipped, files, nested, top=True)
    for d in [*git_dirs, *nested]:
        _walk_git_dir(Path(d), workdir, git)
    return Fingerprint(files=files, git=git, index=dict(index or {}))


def _walk_tree(
    directory: Path,
    workdir: Path,
    skipped: set[str],
    files: dict[str, Key],
    nested: list[Path],
    *,
    top: bool = False,
) -> None:
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return  # unreadable or gone: nothing we could restore either
    for entry in entries:
        name = entry.name
        if os.path.normcase(entry.path) in skipped:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        rel = Path(entry.path).relative_to(workdir).as_posix()
        if stat.S_ISDIR(st.st_mode):
            if name == "__pycache__":
                continue
            if name.casefold() == ".git":
                if not top:
                    nested.append(Path(entry.path))  # a nested repository's own git dir
                continue
            _walk_tree(Path(entry.path), workdir, skipped, files, nested)
        elif name.endswith((".pyc", ".pyo")):
            continue
        elif top and name == ".git":
            continue  # a worktree's or submodule's gitdir pointer: fingerprinted as a git dir
        else:
            files[rel] = key_of(st)


def _walk_git_dir(git_dir: Path, workdir: Path, out: dict[str, Key]) -> None:
    for part in GIT_DIR_PARTS:
        _add_all(git_dir / part, workdir, out)
    modules = git_dir / "modules"
    if modules.is_dir():
        for dirpath, dirnames, filenames in os.walk(modules):
            if "HEAD" in filenames and "config" in filenames:
                _walk_git_dir(Path(dirpath), workdir, out)  # a submodule's git dir
                dirnames[:] = [d for d in dirnames if d == "modules"]
            else:
                dirnames[:] = [d for d in dirnames if d not in ("objects", "logs")]


def _add_all(path: Path, workdir: Path, out: dict[str, Key]) -> None:
    try:
        st = path.lstat()
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode):
        for dirpath, dirnames, filenames in os.walk(path):
            for name in filenames + [d for d in dirnames if os.path.islink(Path(dirpath, d))]:
                full = Path(dirpath) / name
                try:
                    out[_name(full, workdir)] = key_of(full.lstat())
                except OSError:
                    continue
    else:
        out[_name(path, workdir)] = key_of(st)


def _name(path: Path, workdir: Path) -> str:
    try:
        return path.relative_to(workdir).as_posix()
    except ValueError:
        return path.as_posix()  # a git dir outside the work tree (worktrees, GIT_DIR)
