"""Git for the research loop: research branch, scope check, commit, snapshot, restore.

How the loop uses it (every path it returns is relative to ``root``, posix style)::

    repo = ResearchRepo(root, tag, program.is_editable, record_dir=...)
    info = repo.start()       # refuses a dirty tree, a leftover index.lock, index flags, a
                              # dirty submodule; checks out autoresearch/<tag>; backs up
                              # the small untracked files and git's hooks/config
    per baseline run: fp = repo.fingerprint(); ...evaluate...; repo.learn_baseline_outputs(fp)
    for each experiment:
        proposer edits files
        bad = repo.out_of_scope()                     # after="proposal"
        if bad: repo.snapshot(msg); repo.restore(); record "rejected"; continue
        fp = repo.fingerprint(); ...evaluate...
        bad = repo.out_of_scope(after="evaluation", since=fp)   # what the evaluation wrote
        diff, (added, removed) = repo.diff_text(), repo.lines_changed()
        keep: repo.commit(msg) / advance_to(sha)   else: repo.snapshot(msg); repo.restore()
    repo.finish()             # in ``finally``: back on the user's branch, clean tree

What git does not track (ignored files, nested repositories, ``.git`` itself, index
flags) is watched by a ``treeguard.TreeGuard``: ``restore()`` puts back git's hooks and
config before any other git command, removes outputs and planted files, and restores
changed untracked files from its backups (or raises VcsError naming what it cannot).
Every git command runs with hooks, fsmonitor and external diff switched off
(``gitutil.safe_git_env``), and a failing one raises VcsError with git's message.

Resuming after kill -9: ``start()`` finds HEAD still on the research branch with a
half-done experiment and calls ``restore()`` itself (the discarded paths are in
``StartInfo.restored``), after ``TreeGuard.recover`` put back git's hooks and config and
moved planted code files aside; tracked changes outside the editable files stop it
instead, since those may be the user's.

Rules: the user's branch is never committed to or reset; only editable changes are
committed; paths under ``.git``/``.autoresearch``, submodules and nested repositories and
gitignored files are never editable, whatever the globs say. ``__pycache__`` and the
record directory are never looked at.

Where it lives: this module starts, restores and finishes the research branch and keeps
or discards candidates; ``branch`` reads HEAD and refs and makes start()'s checks,
``scope`` reads git status through the scope rules (``out_of_scope``), ``candidate``
turns the candidate into trees, diffs and snapshot commits, ``gitutil`` holds the plumbing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_autoresearch.sandbox.fingerprint import Fingerprint
from pytest_autoresearch.sandbox.treeguard import TreeGuard, Unrestorable, remove_file
from pytest_autoresearch.vcs.branch import ResearchBranch
from pytest_autoresearch.vcs.candidate import CandidateCommits
from pytest_autoresearch.vcs.gitutil import (
    Entry,
    VcsError,
    chunks,
    git_errors,
    git_message,
    open_repo,
    safe_git_env,
    short_list,
)
from pytest_autoresearch.vcs.scope import ScopeRules

__all__ = ["BRANCH_PREFIX", "ResearchRepo", "StartInfo", "VcsError", "safe_git_env"]

BRANCH_PREFIX = "autoresearch/"


@dataclass
class StartInfo:
    """What ``ResearchRepo.start`` found and did."""

    branch: str  # autoresearch/<tag>
    best: str  # the research branch tip the loop continues from
    original: str  # the user's branch name, or a commit sha when HEAD was detached
    resumed: bool  # the research branch existed already
    restored: list[str] = field(default_factory=list)  # leftovers of a killed experiment
    # Gitignored files the editable globs match: never editable (a commit would drop them).
    ignored_editable: list[str] = field(default_factory=list)


class ResearchRepo(CandidateCommits, ScopeRules, ResearchBranch):
    """The research branch in the user's checkout, and the scope rules around it."""

    def __init__(
        self,
        root: Path | str,
        tag: str,
        is_editable: Callable[[str], bool] | None = None,
        *,
        record_dir: Path | str | None = None,
    ) -> None:
        """Open the git repository holding ``root`` (the rootdir); changes nothing yet."""
        self.root = Path(root).resolve()
        self.tag = tag
        self.branch = BRANCH_PREFIX + tag
        self.is_editable = is_editable
        self._record_dir = Path(record_dir) if record_dir else self.root / ".autoresearch"
        self._repo = open_repo(self.root)
        self.workdir = Path(self._repo.working_tree_dir).resolve()
        rel = os.path.relpath(self.root, self.workdir)
        self.prefix = "" if rel == "." else Path(rel).as_posix()  # rootdir inside the work tree
        record = os.path.relpath(self._record_dir.resolve(), self.workdir)
        self._record_prefix = Path(record).as_posix() + "/"
        self.best = ""
        self.original = ""
        self._original_is_branch = False
        self._started = False
        self._known_untracked: set[str] = set()  # repo paths outside scope we must leave alone
        self._flagged: set[str] = set()  # repo paths a proposal created outside scope
        self._ident_env: dict[str, str] = {}
        self._tree_cache: tuple[Any, str] | None = None
        self._diff_cache: tuple[str, str, tuple[int, int]] | None = None
        self._repo.git.update_environment(**safe_git_env())
        git_dirs = [Path(self._repo.git_dir), Path(self._repo.common_dir)]
        self.guard = TreeGuard(
            self.workdir,
            git_dirs,
            self._record_dir,
            list_index=self._index_tags,
            own_refs=["refs/heads/" + self.branch],
        )
        self._excluded: set[str] = set()  # repo paths never editable whatever the globs say
        self._nested: set[str] = set()  # submodules and nested repositories (directories)
        self._clean: Fingerprint | None = None  # the tree right after the last restore/keep

    # -- start --------------------------------------------------------------------------

    @git_errors
    def start(self, *, in_flight: bool = True) -> StartInfo:
        """Check out the research branch (created from HEAD if new); refuse unsafe states.

        ``in_flight``: the journal says an experiment was cut short, so changes to editable
        files on the research branch are its leftovers and are discarded. When False, such
        changes are the user's own edits and stop the run instead of being thrown away.
        """
        sha, head_ref, entries = self._checked_head()
        ref = "refs/heads/" + self.branch
        branch_sha = self._rev(ref)
        restored: list[str] = []
        if head_ref == ref:
            # Already on the research branch: a run that was killed, or the user's choice.
            restored = self._resume(sha, entries, in_flight)
            resumed = True
        else:
            self._branch_off(sha, head_ref, branch_sha, entries)
            resumed = bool(branch_sha)
        self._ident_env = self._identity()
        self._started = True
        ignored = self._watch_untracked()
        return StartInfo(
            self.branch,
            self.best,
            self.original,
            resumed,
            restored,
            [self._show(p) for p in ignored],
        )

    def _checked_head(self) -> tuple[str, str, list[Entry]]:
        """(HEAD's sha, its ref, git status) once the checks start() makes have passed."""
        self._check_ref_name()
        self._check_lock()
        try:
            sha, head_ref = self._head()
        except VcsError:
            raise VcsError(
                f"the git repository at {self.workdir} has no commits yet; commit your code "
                "first (git add -A && git commit -m 'initial'), then run --autoresearch again"
            ) from None
        entries = self._status()
        self._check_record_dir_untracked()
        self._check_index_flags()
        self._check_submodules(entries)
        return sha, head_ref, entries

    def _resume(self, sha: str, entries: list[Entry], in_flight: bool) -> list[str]:
        """Stay on the research branch; discard a killed experiment's leftovers (returned)."""
        self.original, self._original_is_branch = self._read_origin() or (self.branch, True)
        outside = [e.path for e in entries if e.tracked and not self._editable(e.path)]
        if outside:
            raise VcsError(
                f"{self.branch} is checked out with changes outside the editable files: "
                f"{short_list(self._show(p) for p in outside)}. They are not from the research "
                "loop; commit or discard them (git stash) and run again"
            )
        mine = [e.path for e in entries if e.tracked and self._editable(e.path)]
        if mine and not in_flight:
            raise VcsError(
                f"{self.branch} is checked out with uncommitted changes to "
                f"{short_list(self._show(p) for p in mine)}, and no experiment was under way "
                "when the last run stopped, so they are yours: commit them on "
                f"{self.branch} (they become the starting point) or stash them, then run again"
            )
        self.best = sha
        recovered = self.guard.recover() if in_flight else []  # before git runs again
        self._known_untracked = {
            e.path
            for e in entries
            if not e.tracked and not self._editable(e.path) and e.path not in recovered
        }
        self._started = True
        return sorted({*self.restore(), *(self._show(p) for p in recovered)})

    def _branch_off(self, sha: str, head_ref: str, branch_sha: str, entries: list[Entry]) -> None:
        """Leave the user's branch (clean, or refused) for the research branch."""
        dirty = [e.path for e in entries if e.tracked]
        if dirty:
            raise VcsError(
                "the working tree has uncommitted changes: "
                f"{short_list(self._show(p) for p in dirty)}. The research loop commits on its "
                "own branch and must start from a clean tree; commit or stash them first "
                "(untracked files are fine)"
            )
        mine = [e.path for e in entries if not e.tracked and self._editable(e.path)]
        if mine:
            raise VcsError(
                "untracked files inside the editable files: "
                f"{short_list(self._show(p) for p in mine)}. The research loop commits new "
                "editable files and deletes them when it discards an experiment; commit "
                "them, move them elsewhere, or add them to .gitignore first"
            )
        if head_ref.startswith("refs/heads/"):
            self.original, self._original_is_branch = head_ref[len("refs/heads/") :], True
        else:
            self.original, self._original_is_branch = sha, False
        git = self._repo.git
        try:
            if branch_sha:
                git.checkout("-q", self.branch, "--")
            else:
                git.checkout("-q", "-b", self.branch, "--")
        except Exception as exc:  # GitCommandError: say what git said
            raise VcsError(f"could not check out {self.branch}: {git_message(exc)}") from None
        self.best = branch_sha or sha
        self._known_untracked = {e.path for e in entries if not e.tracked}
        self._write_origin()

    def _watch_untracked(self) -> list[str]:
        """Back up what git does not track; returns the gitignored files the globs match."""
        try:
            base = self.guard.begin()
        except OSError as exc:
            raise VcsError(
                f"could not back up the untracked files under {self.workdir}: {exc}"
            ) from None
        self._nested = self.guard.nested_roots(base)
        ignored = sorted(p for p in base.files if p not in base.tracked and self._editable(p))
        self._excluded.update(ignored)
        self._clean = base
        return ignored

    # -- the baseline -------------------------------------------------------------------

    def head(self) -> str:
        """The sha of the best commit (the research branch tip)."""
        return self.best

    @git_errors
    def fingerprint(self) -> Fingerprint:
        """Stat of every file the experiment could touch (cheap: lstat, one git ls-files)."""
        return self.guard.take()

    @git_errors
    def learn_baseline_outputs(self, before: Fingerprint) -> None:
        """After a baseline run: remember what the unchanged code writes; refuse what it must not.

        ``before`` is the fingerprint taken right before that run.
        """
        now = self.guard.take()
        try:
            self.guard.learn_baseline(
                before, now, editable=self._editable, describe=self._describe_editable
            )
        except Unrestorable as exc:
            raise VcsError(str(exc)) from None

    # -- keep, discard, finish ----------------------------------------------------------

    @git_errors
    def commit(self, message: str) -> str:
        """Commit the editable changes on the research branch; returns the new best sha."""
        bad = self.out_of_scope(after="evaluation")
        if bad:
            raise VcsError(f"refusing to commit changes outside scope: {short_list(bad)}")
        git = self._repo.git
        paths = [p for p in self._candidate_paths(self._status()) if self._editable(p)]
        for chunk in chunks(paths):
            git.add("-A", "--", *[":(literal)" + p for p in chunk])
        tree = git.write_tree()
        sha = self._commit_tree(tree, message)
        git.update_ref("-m", "autoresearch: keep", "refs/heads/" + self.branch, sha, self.best)
        self.best = sha
        self._clean_tree()  # outputs of the evaluation are not left behind
        return sha

    @git_errors
    def advance_to(self, sha: str) -> None:
        """Move the research branch from the best commit to ``sha`` (a snapshot on top of it).

        The keep path of the write-ahead journal: the snapshot is taken and journaled first,
        then the branch moves with a compare-and-swap on the ref, so a kill at any point
        leaves either the old tip or ``sha``, and a resumed run can finish the move.
        """
        self._require_started()
        git = self._repo.git
        if self._rev(sha + "^") != self.best:
            raise VcsError(f"{sha[:12]} is not a commit on top of {self.best[:12]}")
        ref = "refs/heads/" + self.branch
        git.update_ref("-m", "autoresearch: keep", ref, sha, self.best)
        self.best = sha
        git.reset("-q", "--hard", sha)
        self._tree_cache = self._diff_cache = None
        self._clean_tree()  # outputs of the evaluation are not left behind

    @git_errors
    def restore(self) -> list[str]:
        """Put the tree back to the best commit; returns the paths that were discarded."""
        if not self._started:
            return []  # nothing of ours to undo (start() failed or finish() ran)
        git = self._repo.git
        try:
            fixed = self.guard.restore_git_files()  # before git could run a planted hook
        except Unrestorable as exc:
            raise VcsError(str(exc)) from None
        self._clear_index_flags()
        entries = self._status()
        sha, head_ref = self._head()
        ref = "refs/heads/" + self.branch
        remove = [
            e.path
            for e in entries
            if not e.tracked
            and e.path not in self._known_untracked
            and (self._editable(e.path) or e.path in self._flagged)
        ]
        tracked = [e.path for e in entries if e.tracked]
        if head_ref != ref:
            git.symbolic_ref("HEAD", ref)
        if tracked or head_ref != ref or sha != self.best:
            git.reset("-q", "--hard", self.best)
        for path in remove:
            remove_file(self.workdir, path)
        self._flagged.clear()
        self._tree_cache = self._diff_cache = None
        cleaned = self._clean_tree()
        return sorted({self._show(p) for p in [*tracked, *remove, *fixed, *cleaned]})

    def _clean_tree(self) -> list[str]:
        """Remove outputs and planted files; put back changed untracked files (backups)."""
        if self.guard.base is None:
            return []
        try:
            cleaned = self.guard.clean_tree(self.guard.take())
        except Unrestorable as exc:
            raise VcsError(str(exc)) from None
        self._known_untracked.difference_update(cleaned)
        self._clean = self.guard.take()
        self.guard.rebase(self._clean)
        return cleaned

    @git_errors
    def finish(self) -> None:
        """Discard any unfinished candidate and return to the user's branch or commit."""
        if not self._started:
            return
        self.restore()
        git = self._repo.git
        try:
            if self._original_is_branch:
                if self.original != self.branch:
                    git.checkout("-q", self.original, "--")
            else:
                git.checkout("-q", "--detach", self.original, "--")
        except Exception as exc:
            raise VcsError(
                f"could not return to {self.original}: {git_message(exc)}; your work is on "
                f"{self.branch}, check out {self.original} by hand"
            ) from None
        self._origin_file().unlink(missing_ok=True)
        self.guard.forget_backups()  # copies of the user's files: not kept past a clean end
        self._started = False
