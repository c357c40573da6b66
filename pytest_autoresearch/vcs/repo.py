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
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_autoresearch.sandbox.fingerprint import Fingerprint
from pytest_autoresearch.sandbox.treeguard import TreeGuard, Unrestorable
from pytest_autoresearch.vcs.gitutil import (
    Entry,
    VcsError,
    chunks,
    flag_names,
    git_errors,
    git_message,
    is_sha,
    is_symlink,
    lock_message,
    open_repo,
    parse_status,
    remove_file,
    safe_git_env,
    short_list,
    stat_key,
)

__all__ = ["BRANCH_PREFIX", "ResearchRepo", "StartInfo", "VcsError", "safe_git_env"]

BRANCH_PREFIX = "autoresearch/"
FALLBACK_NAME = "pytest-autoresearch"
FALLBACK_EMAIL = "autoresearch@localhost"


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


class ResearchRepo:
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

    # -- public API ---------------------------------------------------------------------

    @git_errors
    def start(self, *, in_flight: bool = True) -> StartInfo:
        """Check out the research branch (created from HEAD if new); refuse unsafe states.

        ``in_flight``: the journal says an experiment was cut short, so changes to editable
        files on the research branch are its leftovers and are discarded. When False, such
        changes are the user's own edits and stop the run instead of being thrown away.
        """
        git = self._repo.git
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
        ref = "refs/heads/" + self.branch
        branch_sha = self._rev(ref)
        restored: list[str] = []
        if head_ref == ref:
            # Already on the research branch: a run that was killed, or the user's choice.
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
            restored = sorted({*self.restore(), *(self._show(p) for p in recovered)})
            resumed = True
        else:
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
            try:
                if branch_sha:
                    git.checkout("-q", self.branch, "--")
                else:
                    git.checkout("-q", "-b", self.branch, "--")
            except Exception as exc:  # GitCommandError: say what git said
                raise VcsError(f"could not check out {self.branch}: {git_message(exc)}") from None
            resumed = bool(branch_sha)
            self.best = branch_sha or sha
            self._known_untracked = {e.path for e in entries if not e.tracked}
            self._write_origin()
        self._ident_env = self._identity()
        self._started = True
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
        return StartInfo(
            self.branch,
            self.best,
            self.original,
            resumed,
            restored,
            [self._show(p) for p in ignored],
        )

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
        bad: list[str] = []
        sha, head_ref = self._head()
        if head_ref != "refs/heads/" + self.branch:
            bad.append(f"HEAD (switched to {head_ref if head_ref != 'HEAD' else sha[:12]})")
        elif sha != self.best:
            bad.append(f"HEAD (moved from {self.best[:12]} to {sha[:12]}: a commit was made)")
        entries = self._status()
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
        if ref is not None and now is not None:
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
            for p, why in found.items():
                if p not in now.tracked and p not in ref.tracked:
                    self._flagged.add(p)  # restore() removes or puts it back
                shown = self._show(p) if not os.path.isabs(p) else p
                if shown not in seen:
                    bad.append(f"{shown} ({why})")
        return bad

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

        None when the change does not apply there (another kept change touched the same
        lines). Nothing in the checkout or the index changes: a scratch index is used.
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
                    git.apply("--cached", "--binary", patch_file, env=env)
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

    def _require_started(self) -> None:
        if not self._started:
            raise VcsError("the research branch is not checked out: call start() first")

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

    # -- HEAD, refs and the origin file -------------------------------------------------

    def _head(self) -> tuple[str, str]:
        """(sha, full ref name or "HEAD" when detached), read from files when git allows."""
        found = self._head_from_files()
        if found:
            return found
        try:
            out = self._repo.git.rev_parse("HEAD", "--symbolic-full-name", "HEAD")
        except Exception:
            raise VcsError("HEAD does not point to a commit") from None
        lines = out.splitlines()
        if len(lines) < 2:
            raise VcsError("HEAD does not point to a commit")
        return lines[0], lines[1]

    def _head_from_files(self) -> tuple[str, str] | None:
        """HEAD from .git/HEAD and loose or packed refs; None leaves it to git (reftable...)."""
        try:
            head = (Path(self._repo.git_dir) / "HEAD").read_text(encoding="utf-8").strip()
            if not head.startswith("ref: "):
                return (head, "HEAD") if is_sha(head) else None
            ref = head[5:]
            common = Path(self._repo.common_dir)
            loose = common / ref
            if loose.is_file():
                sha = loose.read_text(encoding="utf-8").strip()
                return (sha, ref) if is_sha(sha) else None
            for line in (common / "packed-refs").read_text(encoding="utf-8").splitlines():
                sha, _, name = line.partition(" ")
                if name == ref and is_sha(sha):
                    return sha, ref
        except OSError:
            return None
        return None

    def _rev(self, ref: str) -> str:
        try:
            return self._repo.git.rev_parse("--verify", "-q", ref + "^{commit}")
        except Exception:
            return ""

    def _check_ref_name(self) -> None:
        try:
            self._repo.git.check_ref_format("--branch", self.branch)
        except Exception:
            raise VcsError(
                f"the tag {self.tag!r} does not make a valid git branch name ({self.branch}); "
                "use letters, digits, '.', '-' and '_' (for example --autoresearch-tag nov23)"
            ) from None

    def _check_lock(self) -> None:
        lock = Path(self._repo.git_dir) / "index.lock"
        if lock.exists():
            raise VcsError(lock_message(self.workdir, lock))

    def _index_tags(self) -> dict[str, str]:
        """Every index entry with its ``git ls-files -v`` tag (S: skip-worktree, h: assumed)."""
        raw = self._repo.git.ls_files("-v", "-z", stdout_as_string=False)
        out: dict[str, str] = {}
        for item in os.fsdecode(raw).split("\0"):
            if len(item) > 2:
                out[item[2:]] = item[0]
        return out

    def _check_index_flags(self) -> None:
        flagged = flag_names(self._index_tags())
        if flagged:
            shown = short_list(f"{self._show(p)} ({f})" for p, f in sorted(flagged.items()))
            raise VcsError(
                f"git is told to look away from changes to {shown}, so the loop could not see "
                "an experiment change them; clear the flags first: git update-index "
                "--no-skip-worktree --no-assume-unchanged -- <path> (sparse checkouts are not "
                "supported)"
            )

    def _clear_index_flags(self) -> None:
        flagged = flag_names(self._index_tags())
        for flag in set(flagged.values()):  # one mode per call: git keeps only the last given
            paths = sorted(p for p, f in flagged.items() if f == flag)
            for chunk in chunks(paths):
                self._repo.git.update_index(f"--no-{flag}", "--", *chunk)

    def _check_submodules(self, entries: list[Entry]) -> None:
        dirty = [e.path for e in entries if e.tracked and (self.workdir / e.path / ".git").exists()]
        if dirty:
            raise VcsError(
                f"the submodule {short_list(self._show(p) for p in dirty)} has uncommitted "
                "changes or new files; commit or discard them inside it (git -C "
                f"{self._show(dirty[0])} status) and run again"
            )

    def _check_record_dir_untracked(self) -> None:
        if self._record_prefix.startswith("../"):
            return
        tracked = self._repo.git.ls_files("--", ":(literal)" + self._record_prefix.rstrip("/"))
        if tracked.strip():
            raise VcsError(
                f"{self._show(self._record_prefix.rstrip('/'))} is tracked by git, but the "
                "research journal must stay untracked (experiments reset tracked files); run "
                f"git rm -r --cached {self._record_prefix} and add it to .gitignore"
            )

    def _origin_file(self) -> Path:
        name = self.tag.replace("/", "%2F") + ".origin"
        return Path(self._repo.git_dir) / "autoresearch" / name

    def _write_origin(self) -> None:
        path = self._origin_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        kind = "branch" if self._original_is_branch else "detached"
        path.write_text(f"{kind} {self.original}\n", encoding="utf-8")

    def _read_origin(self) -> tuple[str, bool] | None:
        try:
            kind, _, value = self._origin_file().read_text(encoding="utf-8").strip().partition(" ")
        except OSError:
            return None
        return (value, kind == "branch") if value else None
