"""An outside agent's uncommitted change, carried from the working tree onto the research branch.

``pytest --autoresearch-try`` judges what an agent left in the checkout. The research
branch must be started (and, on a tag's first try, the baseline measured) on a clean
tree, and nothing of the agent's code may be imported by the judging process while it
collects the tests; so the change is taken out of the tree first and put back later, as
the experiment's proposal::

    change = capture(root, exclude=[".autoresearch/t1/"])   # read only
    save(carry_file, change, description)                   # durable (fsync) before...
    clear(root, change)                                     # ...the tree is cleaned
    apply(root, change.patch)                                # the proposal step

The patch is a binary git diff from HEAD to the working tree of every changed, deleted or
new (untracked, not ignored) file, made with a temporary index: the user's index is not
used to build it. A kill -9 at any point leaves the change either in the tree or in the
saved file, so it is never lost. Every git command runs with hooks switched off.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_autoresearch.vcs.gitutil import VcsError, parse_status, safe_git_env

__all__ = ["Change", "apply", "capture", "clear", "load", "save", "workdir_of"]

# Never part of a change: bytecode caches appear whenever tests run.
_NEVER = ("__pycache__/", ".pyc")


@dataclass(frozen=True)
class Change:
    """What the working tree holds beyond HEAD (paths relative to the work tree)."""

    head: str  # HEAD's sha when the change was taken
    head_ref: str  # "refs/heads/<name>", or "HEAD" when detached
    paths: tuple[str, ...]
    patch: str  # `git apply`-able, binary-safe

    def __bool__(self) -> bool:
        return bool(self.paths)


def _git(workdir: Path, *args: str, env: dict[str, str] | None = None, stdin: str = "") -> str:
    full = {**os.environ, **safe_git_env(), **(env or {})}
    try:
        out = subprocess.run(
            ["git", *args], cwd=workdir, env=full, input=stdin,
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        raise VcsError(f"git {args[0]} failed: {(exc.stderr or exc.stdout).strip()}") from None
    except OSError as exc:
        raise VcsError(f"git could not be run ({exc}); make sure git is on PATH") from None
    return out.stdout


def workdir_of(root: Path) -> Path:
    """The git work tree holding ``root``; VcsError outside a repository."""
    return Path(_git(root, "rev-parse", "--show-toplevel").strip())


def capture(root: Path, exclude: tuple[str, ...] = ()) -> Change:
    """The change in the work tree holding ``root``; ``exclude``: path prefixes to leave out."""
    workdir = workdir_of(root)
    try:
        head = _git(workdir, "rev-parse", "--verify", "-q", "HEAD^{commit}").strip()
    except VcsError:
        raise VcsError(
            f"the git repository at {workdir} has no commits yet; commit your code first "
            "(git add -A && git commit -m 'initial'), then try again"
        ) from None
    head_ref = _git(workdir, "rev-parse", "--symbolic-full-name", "HEAD").strip() or "HEAD"
    raw = _git(workdir, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames")
    paths = sorted(
        {
            e.path
            for e in parse_status(raw)
            if not any(e.path.startswith(p) for p in exclude)
            and not any(part in e.path or e.path.endswith(part) for part in _NEVER)
        }
    )
    if not paths:
        return Change(head, head_ref, (), "")
    return Change(head, head_ref, tuple(paths), _patch(workdir, head, paths))


def _patch(workdir: Path, head: str, paths: list[str]) -> str:
    """HEAD -> working tree for ``paths``, through a temporary index (the real one untouched)."""
    fd, index = tempfile.mkstemp(prefix="autoresearch-carry-index-")
    os.close(fd)
    try:
        env = {"GIT_INDEX_FILE": index}
        _git(workdir, "read-tree", head, env=env)
        literal = [":(literal)" + p for p in paths]
        _git(workdir, "add", "-A", "-f", "--", *literal, env=env)
        return _git(
            workdir, "diff", "--cached", "--binary", "--full-index", "--no-color",
            "--no-ext-diff", "--no-textconv", "--no-renames", head, "--", *literal, env=env,
        )  # fmt: skip
    finally:
        os.unlink(index)


def clear(root: Path, change: Change) -> None:
    """Put ``change.paths`` back as HEAD has them (new files removed); the index too."""
    if not change:
        return
    workdir = workdir_of(root)
    literal = [":(literal)" + p for p in change.paths]
    in_head = set(_git(workdir, "ls-tree", "-r", "-z", "--name-only", "HEAD", "--", *literal)
                  .split("\0")) - {""}  # fmt: skip
    _git(workdir, "reset", "-q", "HEAD", "--", *literal)  # unstage whatever the agent staged
    if in_head:
        _git(workdir, "checkout", "-q", "HEAD", "--", *[":(literal)" + p for p in sorted(in_head)])
    for path in change.paths:
        if path not in in_head:
            target = workdir / path
            if target.is_file() or target.is_symlink():
                target.unlink()


def apply(root: Path, patch: str) -> None:
    """Apply a saved change to the work tree (not the index); VcsError says why it did not."""
    if not patch:
        return
    _git(workdir_of(root), "apply", "--binary", "--whitespace=nowarn", "-", stdin=patch)


def save(path: Path, change: Change, description: str, **more: Any) -> dict[str, Any]:
    """Write the carry file atomically and durably (temp file, fsync, rename); its content."""
    data = {
        "description": description,
        "head": change.head,
        "head_ref": change.head_ref,
        "paths": list(change.paths),
        "patch": change.patch,
        "index": None,  # the experiment it became, once proposed
        **more,
    }
    write(path, data)
    return data


def write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: Path) -> dict[str, Any] | None:
    """The carry file, or None when there is none (or only a torn temp file)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
