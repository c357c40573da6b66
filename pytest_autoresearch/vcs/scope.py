"""What a candidate may change: git status read through the scope rules, and out_of_scope.

A mixin of ``repo.ResearchRepo``: it reads the attributes declared below, which
``ResearchRepo.__init__`` and ``start()`` set. Paths are repository paths (relative to
the work tree, posix); ``_show`` turns one into a path relative to the rootdir.
Editable means: inside the rootdir, matched by the globs, and none of ``.git``,
``.autoresearch``, a submodule or nested repository, or a gitignored file.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_autoresearch.sandbox.fingerprint import Fingerprint
from pytest_autoresearch.sandbox.treeguard import TreeGuard
from pytest_autoresearch.vcs.gitutil import Entry, git_errors, is_symlink, parse_status

__all__ = ["ScopeRules"]


class ScopeRules:
    """The scope check of a candidate, and the path rules behind it."""

    _repo: Any  # git.Repo
    workdir: Path
    prefix: str  # the rootdir inside the work tree ("" when they are the same)
    branch: str
    best: str
    is_editable: Callable[[str], bool] | None
    guard: TreeGuard
    _record_prefix: str
    _known_untracked: set[str]
    _flagged: set[str]
    _excluded: set[str]
    _nested: set[str]
    _clean: Fingerprint | None

    if TYPE_CHECKING:  # the other parts of ResearchRepo

        def _require_started(self) -> None: ...  # branch.ResearchBranch
        def _head(self) -> tuple[str, str]: ...  # branch.ResearchBranch

    @git_errors
    def out_of_scope(
        self,
        is_editable: Callable[[str], bool] | None = None,
        *,
        after: str = "proposal",
        since: Fingerprint | None = None,
    ) -> list[str]:
        """Changes the rules forbid, one "path (why)" each; empty when the candidate is in scope.

        ``after="proposal"``: new untracked files outside the editable files are violations,
        and so is any change git cannot see (ignored files, nested repositories, git's own
        files, index flags) since ``since`` (default: the tree after the last restore).
        ``after="evaluation"`` with ``since`` taken right before the evaluation: anything the
        evaluation changed that can change a measurement or what is committed; new non-code
        files outside the editable set are outputs (removed when the experiment ends).
        Without ``since``, new untracked files are taken as outputs and left alone.
        """
        if after not in ("proposal", "evaluation"):
            raise ValueError(f"after must be 'proposal' or 'evaluation', not {after!r}")
        if is_editable is not None:
            self.is_editable = is_editable
        self._require_started()
        ref = since if since is not None else (self._clean if after == "proposal" else None)
        now = self.guard.take() if ref is not None else None  # before any git status
        bad = self._head_moved()
        entries = self._status()
        bad += self._status_violations(entries, after)
        if ref is not None and now is not None:
            bad += self._unseen_violations(ref, now, entries, after, bad)
        return bad

    def _head_moved(self) -> list[str]:
        """HEAD switched away from the research branch, or moved by a commit."""
        sha, head_ref = self._head()
        if head_ref != "refs/heads/" + self.branch:
            return [f"HEAD (switched to {head_ref if head_ref != 'HEAD' else sha[:12]})"]
        if sha != self.best:
            return [f"HEAD (moved from {self.best[:12]} to {sha[:12]}: a commit was made)"]
        return []

    def _status_violations(self, entries: list[Entry], after: str) -> list[str]:
        """What git status shows out of scope: changes outside the editable files, symlinks."""
        bad: list[str] = []
        for e in entries:
            path = self._show(e.path)
            editable = self._editable(e.path)
            if e.tracked:
                if not editable:
                    bad.append(f"{path} ({e.kind})")
                elif is_symlink(self.workdir / e.path):
                    bad.append(f"{path} (symlink)")
            elif editable:
                if is_symlink(self.workdir / e.path):
                    bad.append(f"{path} (symlink)")
            elif e.path in self._known_untracked:
                continue
            elif after == "proposal" or e.path in self._flagged:
                self._flagged.add(e.path)
                bad.append(f"{path} (new file)")
            else:
                self._known_untracked.add(e.path)
        return bad

    def _unseen_violations(
        self, ref: Fingerprint, now: Fingerprint, entries: list[Entry], after: str, bad: list[str]
    ) -> list[str]:
        """Changes git cannot see, from ``ref`` to ``now``, that ``bad`` does not name yet."""
        visible = {e.path for e in entries} - self._nested  # a gitlink hides its files
        seen = {b.split(" (", 1)[0] for b in bad}
        found = self.guard.changes(
            ref,
            now,
            after=after,
            editable=self._editable,
            visible=visible,
            watched=self._watched,
        )
        out: list[str] = []
        for p, why in found.items():
            if p not in now.tracked and p not in ref.tracked:
                self._flagged.add(p)  # restore() removes or puts it back
            shown = self._show(p) if not os.path.isabs(p) else p
            if shown not in seen:
                out.append(f"{shown} ({why})")
        return out

    # -- status and paths ---------------------------------------------------------------

    def _status(self) -> list[Entry]:
        raw = self._repo.git.status(
            "--porcelain=v1",
            "-z",
            "--untracked-files=all",
            "--no-renames",
            stdout_as_string=False,
            strip_newline_in_stdout=False,
        )
        entries = parse_status(os.fsdecode(raw))
        return [e for e in entries if not self._ignored(e)]

    def _ignored(self, e: Entry) -> bool:
        # Our own journal, and bytecode the evaluation leaves behind.
        if (e.path + "/").startswith(self._record_prefix):
            return True
        if e.tracked:
            return False
        return "__pycache__/" in "/" + e.path or e.path.endswith((".pyc", ".pyo"))

    def _editable(self, path: str) -> bool:
        rel = self._rel(path)
        if rel is None or self.is_editable is None or path in self._excluded:
            return False
        folded = path.casefold().split("/")
        if ".git" in folded or ".autoresearch" in folded:
            return False  # protected whatever the globs say
        parts = path.split("/")
        if self._nested and any(
            "/".join(parts[:i]) in self._nested for i in range(1, len(parts) + 1)
        ):
            return False  # a submodule or nested repository: its own git owns it
        return self.is_editable(rel)

    def _watched(self, path: str) -> bool:
        """Untracked files a proposal must not touch: what the globs match, nested repos."""
        if path in self._excluded or self._editable(path):
            return True
        parts = path.split("/")
        return any("/".join(parts[:i]) in self._nested for i in range(1, len(parts)))

    def _describe_editable(self, path: str) -> str:
        """Which editable glob covers ``path`` (and its line), when the Program can say."""
        owner = getattr(self.is_editable, "__self__", None)
        glob_for = getattr(owner, "glob_for", None)
        rel = self._rel(path)
        found = glob_for(rel) if callable(glob_for) and rel is not None else None
        return found or "the editable files"

    def _rel(self, path: str) -> str | None:
        if not self.prefix:
            return path
        if path.startswith(self.prefix + "/"):
            return path[len(self.prefix) + 1 :]
        return None  # outside the rootdir: never editable

    def _show(self, path: str) -> str:
        return posixpath.relpath(path, self.prefix) if self.prefix else path

    def _candidate_paths(self, entries: list[Entry]) -> list[str]:
        return [e.path for e in entries if e.tracked or (e.path not in self._known_untracked)]
