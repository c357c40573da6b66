"""Git plumbing for vcs/repo.py: errors, the safe environment, status parsing, small helpers.

Nothing here keeps state; ``ResearchRepo`` (vcs/repo.py) and the workspaces use it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Config every git command of the loop runs with: experiment code may have written hooks
# or an fsmonitor into the repository, and our commits, resets and checkouts must never
# run them (they would see the loop's full environment, API keys included).
SAFE_CONFIG = (
    ("core.hooksPath", os.devnull),
    ("core.fsmonitor", "false"),
    ("core.untrackedCache", "false"),
    ("diff.external", ""),
)


class VcsError(Exception):
    """Git is in a state the research loop cannot work in; the message says what to do."""


def git_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """A git command that fails inside ``method`` becomes a VcsError with git's own words."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except VcsError:
            raise
        except Exception as exc:
            if type(exc).__name__ != "GitCommandError":
                raise
            message = git_message(exc)
            lock = Path(self._repo.git_dir) / "index.lock"
            if "index.lock" in message or lock.exists():
                raise VcsError(lock_message(self.workdir, lock)) from None
            command = " ".join(str(a) for a in (getattr(exc, "command", None) or ["git"])[:3])
            raise VcsError(
                f"{command} failed in {self.workdir}: {message}; fix the repository and run "
                f"again (your work is on {self.branch})"
            ) from None

    return wrapper


def lock_message(workdir: Path, lock: Path) -> str:
    return (
        f"another git process is running in {workdir}, or one crashed; if none is running "
        f"delete {lock}"
    )


@dataclass(frozen=True)
class Entry:
    code: str  # the two-letter porcelain status, "??" for untracked
    path: str  # relative to the work tree

    @property
    def tracked(self) -> bool:
        return self.code != "??"

    @property
    def kind(self) -> str:
        if "D" in self.code:
            return "deleted"
        if self.code[0] == "A":
            return "added"
        if "T" in self.code:
            return "type changed"
        if "U" in self.code or self.code in ("AA", "DD"):
            return "unmerged"
        return "modified"


def parse_status(raw: str) -> list[Entry]:
    entries: list[Entry] = []
    fields = raw.split("\0")
    i = 0
    while i < len(fields):
        item = fields[i]
        i += 1
        if len(item) < 4:
            continue
        code, path = item[:2], item[3:]
        if code[0] in "RC":  # --no-renames makes these rare; the source path follows
            entries.append(Entry("D ", fields[i]))
            i += 1
        entries.append(Entry(code, path.rstrip("/")))
    return entries


def open_repo(root: Path) -> Any:
    try:
        import git
    except ImportError as exc:
        raise VcsError(
            f"--autoresearch needs GitPython and the git command ({exc}); "
            "pip install 'pytest-autoresearch[research]' and make sure git is on PATH"
        ) from None
    try:
        repo = git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise VcsError(
            f"{root} is not inside a git repository; the research loop keeps its experiments "
            "on a git branch. Run git init && git add -A && git commit -m 'initial' first"
        ) from None
    if repo.bare or repo.working_tree_dir is None:
        raise VcsError(f"{root} is in a bare git repository; run it in a checkout")
    return repo


def safe_git_env() -> dict[str, str]:
    """GIT_CONFIG_COUNT/KEY/VALUE entries (after any the user set) that switch off hooks etc."""
    try:
        n = int(os.environ.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        n = 0
    env: dict[str, str] = {}
    for i, (key, value) in enumerate(SAFE_CONFIG, start=n):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    env["GIT_CONFIG_COUNT"] = str(n + len(SAFE_CONFIG))
    return env


def flag_names(tags: dict[str, str]) -> dict[str, str]:
    out = {}
    for path, tag in tags.items():
        if tag == "S":
            out[path] = "skip-worktree"
        elif tag.islower():
            out[path] = "assume-unchanged"
    return out


def git_message(exc: Exception) -> str:
    text = (getattr(exc, "stderr", "") or str(exc)).strip()
    text = text.removeprefix("stderr:").strip().strip("'").strip()
    return " ".join(text.split()) or type(exc).__name__


def is_sha(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)


def is_symlink(path: Path) -> bool:
    return path.is_symlink()


def stat_key(path: Path) -> tuple[int, int, int]:
    try:
        st = path.lstat()
    except OSError:
        return (-1, -1, -1)
    return (st.st_mode, st.st_size, st.st_mtime_ns)


def chunks(items: list[str], size: int = 500) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def short_list(items: Iterable[str], limit: int = 8) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
