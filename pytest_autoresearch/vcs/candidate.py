"""The candidate as git objects: its tree, diff and snapshot commits, made without moving
the branch or touching the index (a temporary index file holds each tree).

A mixin of ``repo.ResearchRepo``: it reads the attributes declared below, which
``ResearchRepo.__init__`` and ``start()`` set. Snapshots are commits whose parent is the
best commit; with K workers the checkout is only where proposals are made, and a
measured snapshot is kept (``recommit``), re-based (``rebased``) or loaded back for a
repair (``load``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_autoresearch.sandbox.treeguard import remove_file
from pytest_autoresearch.vcs.gitutil import (
    Entry,
    VcsError,
    chunks,
    git_errors,
    stat_key,
)

__all__ = ["FALLBACK_EMAIL", "FALLBACK_NAME", "CandidateCommits"]

FALLBACK_NAME = "pytest-autoresearch"
FALLBACK_EMAIL = "autoresearch@localhost"


class CandidateCommits:
    """Trees, diffs and commits of the candidate in the working tree, or of snapshots."""

    _repo: Any  # git.Repo
    workdir: Path
    best: str
    _ident_env: dict[str, str]
    _tree_cache: tuple[Any, str] | None
    _diff_cache: tuple[str, str, tuple[int, int]] | None

    if TYPE_CHECKING:  # the other parts of ResearchRepo

        def _require_started(self) -> None: ...  # branch.ResearchBranch
        def _head(self) -> tuple[str, str]: ...  # branch.ResearchBranch
        def _rev(self, ref: str) -> str: ...  # branch.ResearchBranch
        def _status(self) -> list[Entry]: ...  # scope.ScopeRules
        def _show(self, path: str) -> str: ...  # scope.ScopeRules
        def _candidate_paths(self, entries: list[Entry]) -> list[str]: ...  # scope.ScopeRules

    @git_errors
    def changed_files(self) -> list[str]:
        """Files the candidate changed, added or deleted relative to the best commit."""
        return sorted(self._show(p) for p in self._candidate_paths(self._status()))

    @git_errors
    def diff_text(self) -> str:
        """Unified diff from the best commit to the candidate, new files included."""
        return self._diff()[0]

    @git_errors
    def lines_changed(self) -> tuple[int, int]:
        """(lines added, lines removed) by the candidate, for the simplicity criterion."""
        return self._diff()[1]

    @git_errors
    def snapshot(self, message: str) -> str:
        """A commit of the candidate whose parent is the best commit; moves no branch."""
        self._require_started()
        tree = self._candidate_tree()
        return self._commit_tree(tree, message)

    # -- candidates as commits (K workers: the checkout is only where proposals are made) --

    @git_errors
    def recommit(self, sha: str, message: str) -> str:
        """A commit with exactly ``sha``'s tree on top of the best commit (``sha``'s parent).

        A measured snapshot is kept under a message that can only be written after the
        measurement; the tree, what was measured, is the same object.
        """
        self._require_started()
        if self._rev(sha + "^") != self.best:
            raise VcsError(f"{sha[:12]} is not a commit on top of {self.best[:12]}")
        return self._commit_tree(self._repo.git.rev_parse(sha + "^{tree}"), message)

    @git_errors
    def rebased(self, sha: str, message: str) -> str | None:
        """``sha``'s change (against its parent) applied on the best commit, as a new snapshot.

        Applied as a three-way merge (``git apply --3way``): a change to a line two lines
        below one the best changed applies, as it would in ``git merge``, although the
        diff's context lines no longer match (a block of hyperparameters is usually edited
        a line at a time). None when the change does not apply there (another kept change
        touched the same or an adjacent line). Nothing in the checkout or the index
        changes: a scratch index is used.
        """
        self._require_started()
        git = self._repo.git
        patch = git.diff(
            "--binary", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames",
            sha + "^", sha, stdout_as_string=False,
        )  # fmt: skip
        fd, index = tempfile.mkstemp(prefix="autoresearch-index-")
        os.close(fd)
        pfd, patch_file = tempfile.mkstemp(prefix="autoresearch-patch-")
        with os.fdopen(pfd, "wb") as fh:
            fh.write(patch if patch.endswith(b"\n") or not patch else patch + b"\n")
        try:
            env = {"GIT_INDEX_FILE": index}
            git.read_tree(self.best, env=env)
            if patch:
                try:
                    git.apply("--cached", "--3way", "--binary", patch_file, env=env)
                except Exception:
                    return None
            tree = git.write_tree(env=env)
        finally:
            os.unlink(index)
            os.unlink(patch_file)
        return self._commit_tree(tree, message)

    @git_errors
    def diff_of(self, sha: str) -> str:
        """The unified diff of commit ``sha`` against its parent (as ``diff_text`` shows it)."""
        patch = self._repo.git.diff(
            "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames", sha + "^", sha,
            stdout_as_string=False,
        )  # fmt: skip
        text = patch.decode("utf-8", errors="replace")
        return text if not text or text.endswith("\n") else text + "\n"

    @git_errors
    def load(self, sha: str) -> None:
        """Put snapshot ``sha``'s version of the files it changes into the working tree.

        For a repair with K workers: the checkout sits at the best commit between
        proposals, and the proposer must see the candidate it fixes. The branch and the
        index stay on the best commit, so the scope check and the diff see a candidate
        exactly as if the proposer had made it here; ``restore()`` undoes it.
        """
        self._require_started()
        if self._rev(sha + "^") != self.best:
            raise VcsError(f"{sha[:12]} is not a commit on top of {self.best[:12]}")
        git = self._repo.git
        raw = git.diff("--name-status", "--no-renames", "-z", self.best, sha)
        fields = [f for f in raw.split("\0") if f]
        changes = list(zip(fields[::2], fields[1::2], strict=True))
        write = [path for status, path in changes if status != "D"]
        for status, path in changes:
            if status == "D":
                remove_file(self.workdir, path)
        if write:
            fd, index = tempfile.mkstemp(prefix="autoresearch-index-")
            os.close(fd)
            try:
                env = {"GIT_INDEX_FILE": index}
                git.read_tree(sha, env=env)
                for chunk in chunks(write):
                    git.checkout_index("-f", "--", *chunk, env=env)
            finally:
                os.unlink(index)
        self._tree_cache = self._diff_cache = None

    # -- trees, diffs, commits ----------------------------------------------------------

    def _candidate_tree(self) -> str:
        """The tree of best + the working-tree state of every candidate path (temp index)."""
        paths = self._candidate_paths(self._status())
        key = (self.best, tuple(paths), tuple(stat_key(self.workdir / p) for p in paths))
        if self._tree_cache and self._tree_cache[0] == key:
            return self._tree_cache[1]
        git = self._repo.git
        if not paths:
            tree = git.rev_parse(self.best + "^{tree}")
            self._tree_cache = (key, tree)
            return tree
        fd, index = tempfile.mkstemp(prefix="autoresearch-index-")
        os.close(fd)
        try:
            env = {"GIT_INDEX_FILE": index}
            if not self._copy_index(index):
                git.read_tree(self.best, env=env)
            for chunk in chunks(paths):
                git.add("-A", "-f", "--", *[":(literal)" + p for p in chunk], env=env)
            tree = git.write_tree(env=env)
        finally:
            os.unlink(index)
        self._tree_cache = (key, tree)
        return tree

    def _copy_index(self, dest: str) -> bool:
        """Start the temp index from the real one (it holds best, with stat data): no git call."""
        if os.environ.get("GIT_INDEX_FILE") or self._head()[0] != self.best:
            return False
        try:
            shutil.copyfile(Path(self._repo.git_dir) / "index", dest)
        except OSError:
            return False
        return True

    def _diff(self) -> tuple[str, tuple[int, int]]:
        tree = self._candidate_tree()
        if self._diff_cache and self._diff_cache[0] == tree:
            return self._diff_cache[1], self._diff_cache[2]
        raw = self._repo.git.diff(
            "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames", "--numstat",
            "--patch", self.best, tree, stdout_as_string=False,
        )  # fmt: skip
        numstat, _, patch = raw.decode("utf-8", errors="replace").partition("\n\n")
        if patch and not patch.endswith("\n"):
            patch += "\n"
        added = removed = 0
        for line in numstat.splitlines():
            a, r, _ = line.split("\t", 2)
            added += int(a) if a.isdigit() else 0  # "-" for binary files
            removed += int(r) if r.isdigit() else 0
        self._diff_cache = (tree, patch, (added, removed))
        return patch, (added, removed)

    def _commit_tree(self, tree: str, message: str) -> str:
        return self._repo.git.commit_tree(tree, "-p", self.best, "-m", message, env=self._ident_env)

    def _identity(self) -> dict[str, str]:
        """Author/committer from git config or the environment, else a fixed fallback."""
        env: dict[str, str] = {}
        for key, var, fallback in (
            ("user.name", "NAME", FALLBACK_NAME),
            ("user.email", "EMAIL", FALLBACK_EMAIL),
        ):
            if os.environ.get(f"GIT_AUTHOR_{var}") and os.environ.get(f"GIT_COMMITTER_{var}"):
                continue
            try:
                value = self._repo.git.config("--get", key)
            except Exception:  # exit 1: unset
                value = ""
            if not value.strip():
                env.setdefault(f"GIT_AUTHOR_{var}", fallback)
                env.setdefault(f"GIT_COMMITTER_{var}", fallback)
        return env
