"""Everything an experiment can touch besides the files git tracks: detect it, undo it.

``ResearchRepo`` (vcs.py) owns the research branch and what git tracks; a ``TreeGuard``
owns the rest of the checkout for it: ignored and untracked files, files inside nested
repositories and submodules, and git's own files (hooks, config, refs). At ``start()`` it
takes a fingerprint of the clean tree (``base``) and backs up the small files git cannot
give back. Then:

* ``changes(ref, now, after=...)`` says what changed since ``ref`` that git status cannot
  show or that an evaluation must not do ("path" -> "why");
* ``learn_baseline(before, now)`` learns which files the unchanged code writes each run
  (outputs) and refuses tests that write code, into git or inside the editable files;
* ``restore_git_files()`` runs before any git command of a restore, so a planted hook or
  config entry is gone before git could read it; ``clean_tree(now)`` removes what appeared
  since the start and puts changed pre-existing files back from the backups.

What cannot be put back is reported (``Unrestorable``), never skipped silently.
Nothing here runs git: the caller passes the index state in.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from pytest_autoresearch.sandbox import fingerprint as fp
from pytest_autoresearch.sandbox.fingerprint import Fingerprint

FILE_LIMIT = 4 << 20  # bytes: bigger files are not backed up (data sets, checkpoints)
TOTAL_LIMIT = 128 << 20  # bytes for all backups together
# Directories never backed up file by file: environments are reinstalled, not restored.
NO_BACKUP_MARKERS = ("pyvenv.cfg",)
NO_BACKUP_NAMES = frozenset({"node_modules", "site-packages", ".tox", ".nox"})
# Git-dir files the loop itself moves (with the research branch's ref): vcs.py owns them.
OWN_GIT_PARTS = ("HEAD", "packed-refs", "index")


STATE_FILE = "tree-state.json"  # in the record dir: what begin() saw, the backups, outputs


class Unrestorable(Exception):
    """Files changed that no backup can restore; the message names them and the fix."""


class TreeGuard:
    """Fingerprints, backups and clean-up for one checkout (see the module docstring)."""

    def __init__(
        self,
        workdir: Path,
        git_dirs: Iterable[Path],
        record_dir: Path,
        *,
        list_index: Callable[[], dict[str, str]],
        own_refs: Iterable[str] = (),
    ) -> None:
        self.workdir = Path(workdir)
        self.git_dirs = list(dict.fromkeys(Path(d).resolve() for d in git_dirs))
        self.record_dir = Path(record_dir).resolve()
        self.backup_dir = self.record_dir / "tree-backup"
        self._list_index = list_index
        self._top_refs = tuple(_name(d / "refs", self.workdir) + "/" for d in self.git_dirs)
        self._own_git = frozenset(
            _name(d / part, self.workdir)
            for d in self.git_dirs
            for part in (*OWN_GIT_PARTS, *own_refs)
        )
        self.base: Fingerprint | None = None
        self.outputs: set[str] = set()  # files the unchanged code writes on every run
        # Files seen changing while experiment code ran (or a proposal was made): only
        # these are cleaned up. Anything else that changes (the loop's own log redirected
        # into the tree, the user's editor) is not the experiment's doing and is left alone.
        self.dirty: set[str] = set()
        self._saved: dict[str, str] = {}  # path -> backup file name
        self._fresh: set[str] = set()  # put back since the last rebase

    # -- fingerprints -------------------------------------------------------------------

    def take(self, *, index: bool = True) -> Fingerprint:
        """A fingerprint of the checkout now (with the index entries when ``index``)."""
        return fp.take(
            self.workdir,
            self.git_dirs,
            skip=[self.record_dir],
            index=self._list_index() if index else None,
        )

    def begin(self) -> Fingerprint:
        """Fingerprint the clean tree and back up what git cannot give back."""
        self.base = self.take()
        shutil.rmtree(self.backup_dir, ignore_errors=True)
        self._saved = {}
        tracked = self.base.tracked
        git_files = [
            p for p in self.base.git if not self._is_own_git(p) and not self._is_top_ref(p)
        ]
        others = [p for p in self.base.files if p not in tracked and self._backup_allowed(p)]
        budget = TOTAL_LIMIT
        for path in git_files + sorted(others, key=lambda p: self.base.files[p][0]):
            size = (self.base.git.get(path) or self.base.files[path])[0]
            if size > FILE_LIMIT or size > budget:
                continue
            if self._save(path):
                budget -= size
        self.outputs |= set(self._load_state().get("outputs", ()))  # a resumed run's baseline
        self._write_state()
        return self.base

    def forget_backups(self) -> None:
        """After a clean end: drop the copies (the outputs stay known for a resume)."""
        shutil.rmtree(self.backup_dir, ignore_errors=True)
        self._saved = {}
        self._write_state()

    def recover(self) -> list[str]:
        """After a kill -9 mid-experiment, before ``begin``: undo what the killed run can't.

        Git's hooks, config and info go back to the copies the killed run took at its start
        (new hooks are removed); new untracked code files that appeared since then (a planted
        conftest.py) are moved to ``<record>/quarantine/``, never deleted, since a file the
        user added in between looks the same. Changed data files are not put back here.
        """
        old = self._load_state()
        if not old:
            return []
        self._saved = dict(old.get("saved", {}))
        now = self.take()
        done: list[str] = []
        old_git = set(old.get("git", ()))
        for path in now.git:
            if self._is_own_git(path) or self._is_top_ref(path):
                continue
            if path not in old_git:
                remove_path(self._abs(path))
                done.append(path)
            elif (
                path in self._saved
                and not _same(self._abs(path), self._backup(path))
                and self._put_back(path)
            ):
                done.append(path)
        for path in old_git - now.git.keys():
            if path in self._saved and self._put_back(path):
                done.append(path)
        old_files = set(old.get("files", ()))
        for path in sorted(now.files.keys() - old_files - now.tracked):
            if fp.is_code(path):
                target = self.record_dir / "quarantine" / path
                target.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(OSError):
                    os.replace(self._abs(path), target)
                    done.append(path)
        self._fresh.clear()
        return done

    def _load_state(self) -> dict:
        try:
            return json.loads((self.record_dir / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _write_state(self) -> None:
        if self.base is None:
            return
        state = {
            "files": sorted(self.base.files),
            "git": sorted(self.base.git),
            "saved": self._saved,
            "outputs": sorted(self.outputs),
        }
        with contextlib.suppress(OSError):
            self.record_dir.mkdir(parents=True, exist_ok=True)
            (self.record_dir / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")

    def _backup(self, path: str) -> Path:
        return self.backup_dir / self._saved[path]

    def nested_roots(self, f: Fingerprint) -> set[str]:
        """Work-tree directories that hold another repository (nested .git or submodule)."""
        roots = {p.rsplit("/", 1)[0] for p in f.files if p.endswith("/.git")}
        for path in f.git:
            head, sep, _ = path.partition("/.git/")
            if sep and not path.startswith(".git/") and not os.path.isabs(path):
                roots.add(head)
        return roots

    # -- what changed -------------------------------------------------------------------

    def changes(
        self,
        ref: Fingerprint,
        now: Fingerprint,
        *,
        after: str,
        editable: Callable[[str], bool],
        visible: set[str],
        watched: Callable[[str], bool] = lambda p: False,
    ) -> dict[str, str]:
        """What changed since ``ref`` that the rules forbid: path -> why.

        After an evaluation everything counts, except outputs: new non-code files outside
        the editable set, and files the baseline showed the code rewrites. After a proposal
        (the proposer runs in the loop's own process, whose log may live in the tree) only
        what git status cannot show (``visible``) and that could change a measurement is
        reported: files ``watched`` says matter (ignored files the globs match, nested
        repositories), new code files, git's own files and index flags.
        """
        bad: dict[str, str] = {}
        tracked = ref.tracked | now.tracked
        for c in fp.diff(ref.files, now.files):
            p = c.path
            if after == "evaluation":
                self.dirty.add(p)
                if p in self.outputs:
                    continue
                if c.kind == "new":
                    if editable(p):
                        bad[p] = "new file inside the editable set, written by the evaluation"
                    elif fp.is_code(p):
                        bad[p] = "new code file, written by the evaluation"
                    continue
                bad[p] = f"{c.kind} by the evaluation"
            elif (
                p not in tracked
                and not _covered(p, visible)
                and (watched(p) or (c.kind == "new" and fp.is_code(p)))
            ):
                self.dirty.add(p)
                bad[p] = f"{c.kind}, and git does not see it (ignored or nested)"
        for c in fp.diff(ref.git, now.git):
            if not self._is_own_git(c.path):  # HEAD and the research branch: vcs.py checks
                bad[c.path] = f"git's own file, {c.kind} by the {after}"
        for p in fp.flag_changes(ref, now):
            flag = now.flags().get(p) or ref.flags().get(p)
            bad[p] = f"{flag} flag changed in git's index by the {after}"
        return bad

    def learn_baseline(
        self,
        before: Fingerprint,
        now: Fingerprint,
        *,
        editable: Callable[[str], bool],
        describe: Callable[[str], str],
    ) -> None:
        """Remember the files one baseline run wrote; refuse writes the loop cannot allow."""
        problems: list[str] = []
        tracked = before.tracked | now.tracked
        for c in fp.diff(before.files, now.files):
            p = c.path
            self.dirty.add(p)  # cleaned up at the end whatever happens next
            if editable(p):
                problems.append(
                    f"the metric tests write {p}, inside {describe(p)}; write outputs "
                    "elsewhere or narrow the glob"
                )
            elif p in tracked:
                problems.append(
                    f"the metric tests change {p}, a file git tracks (the loop resets tracked "
                    "files after every experiment); write outputs to an untracked, ignored path"
                )
            elif c.kind == "new" and fp.is_code(p):
                problems.append(
                    f"the metric tests write the code file {p}, which would change what later "
                    "runs execute; write it to a temporary directory (tmp_path) instead"
                )
            else:
                self.outputs.add(p)
        for c in fp.diff(before.git, now.git):
            problems.append(
                f"the metric tests change git's own file {c.path}; tests must not write into .git"
            )
        for p in fp.flag_changes(before, now):
            problems.append(f"the metric tests change git's index flags for {p}")
        self._write_state()  # a resumed run measures no baseline: it needs these
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise Unrestorable(problems[0] + more)

    # -- putting it back ----------------------------------------------------------------

    def restore_git_files(self) -> list[str]:
        """Put hooks, config and info back as they were at the start, before git runs again."""
        if self.base is None:
            return []
        now = self.take(index=False)
        fixed, lost = [], []
        for c in fp.diff(self.base.git, now.git):
            if self._is_own_git(c.path) or self._is_top_ref(c.path):
                continue  # reported when experiment code moves them; never rewritten here
            if c.kind == "new":
                remove_path(self._abs(c.path))
                fixed.append(c.path)
            elif self._put_back(c.path):
                fixed.append(c.path)
            else:
                lost.append(c.path)
        if lost:
            raise Unrestorable(
                f"git's own files changed and have no backup: {_list(lost)}; compare them with "
                "a fresh clone of the repository and restore them by hand"
            )
        return fixed

    def clean_tree(self, now: Fingerprint) -> list[str]:
        """Remove files that appeared since the start; restore changed untracked ones."""
        if self.base is None:
            return []
        done, lost = [], []
        tracked = self.base.tracked | now.tracked
        base = {p: k for p, k in self.base.files.items() if p in self.dirty}
        for c in fp.diff(base, {p: k for p, k in now.files.items() if p in self.dirty}):
            p = c.path
            if p in tracked:
                continue  # git's business: reset --hard and the status check
            if c.kind == "new":
                remove_path(self._abs(p), stop=self.workdir)
                done.append(p)
            elif self._put_back(p):
                done.append(p)
            elif p not in self.outputs:
                lost.append(p)
        if lost:
            raise Unrestorable(
                f"the experiment changed {_list(lost)}, which git does not track and which "
                "had no backup (too big, or inside an environment); restore them yourself "
                "(re-download, regenerate or reinstall), then run again. The research branch "
                "is intact"
            )
        return done

    def rebase(self, now: Fingerprint) -> None:
        """Accept ``now`` as the clean state (after restoring: new inodes, same content)."""
        if self.base is None:
            return
        files = dict(self.base.files)
        for p in list(files):
            if p in now.files:
                files[p] = now.files[p]
        for p in now.files.keys() - files.keys():
            if p in now.tracked:
                files[p] = now.files[p]  # committed by a keep
        # Git's files: only what was just put back (same bytes, new inode) or what the
        # loop itself moves; anything else stays as it was, to be restored next time.
        git = {p: now.git.get(p, k) if p in self._fresh else k for p, k in self.base.git.items()}
        git |= {p: k for p, k in now.git.items() if self._is_own_git(p)}
        self._fresh.clear()
        self.base = Fingerprint(files=files, git=git, index=dict(now.index))

    # -- helpers ------------------------------------------------------------------------

    def _is_own_git(self, path: str) -> bool:
        return path in self._own_git

    def _is_top_ref(self, path: str) -> bool:
        """The repository's own branches and tags: the user's (and pushes) may move them."""
        return path.startswith(self._top_refs)

    def _backup_allowed(self, path: str) -> bool:
        parts = path.split("/")
        if any(p in NO_BACKUP_NAMES for p in parts[:-1]):
            return False
        d = self.workdir
        for part in parts[:-1]:
            d = d / part
            if any((d / m).exists() for m in NO_BACKUP_MARKERS):
                return False
        return True

    def _abs(self, path: str) -> Path:
        return Path(path) if os.path.isabs(path) else self.workdir / path

    def _save(self, path: str) -> bool:
        name = f"{len(self._saved):06d}"
        try:
            self.backup_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self._abs(path), self.backup_dir / name, follow_symlinks=False)
        except OSError:
            return False
        self._saved[path] = name
        return True

    def _put_back(self, path: str) -> bool:
        name = self._saved.get(path)
        if name is None:
            return False
        target = self._abs(path)
        try:
            remove_path(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.backup_dir / name, target, follow_symlinks=False)
        except OSError:
            return False
        self._fresh.add(path)
        return True


def _same(a: Path, b: Path) -> bool:
    try:
        return a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def _covered(path: str, visible: set[str]) -> bool:
    """Whether git status reported ``path`` itself or a directory holding it."""
    if path in visible:
        return True
    parts = path.split("/")
    return any("/".join(parts[:i]) in visible for i in range(1, len(parts)))


def _name(path: Path, workdir: Path) -> str:
    try:
        return path.relative_to(workdir).as_posix()
    except ValueError:
        return path.as_posix()


def _list(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def remove_path(target: Path, stop: Path | None = None) -> None:
    """Remove a file (or a directory, not through a symlink); with ``stop``, also the
    directories it leaves empty, up to but never including ``stop``."""
    try:
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    except FileNotFoundError:
        pass
    if stop is None:
        return
    parent = target.parent
    while parent != stop and stop in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


def remove_file(workdir: Path, path: str) -> None:
    """Remove one untracked file and the directories it leaves empty (never the work tree)."""
    remove_path(workdir / path, stop=workdir)
