"""A place where one worker measures candidates: a git worktree of the user's repository.

The research branch and the user's checkout belong to ``vcs.ResearchRepo`` (the
controller); a ``Workspace`` is the worker's side of the line. It is a detached
worktree (``git worktree add --detach``) under a folder the caller gives (outside the work
tree and the record directory: docs/parallel.md), so candidates never run in the user's checkout and
several run side by side. A candidate arrives as a parent commit plus a unified diff
(``git apply``), or as a snapshot commit; after the evaluation ``changes()`` says what
the run itself changed, and ``restore()`` puts the candidate back exactly.

API::

    ApplyError                               the candidate does not apply (its parent moved)
    WorkspaceError                           git refused; the message says what to do
    Workspace.create(repo, folder, name, sha, *, shared=(), links=None) -> Workspace
    Workspace.clone(bundle, folder, name, *, links=None)  a checkout from a git bundle (Ray)
    ws.root                                  the rootdir inside it (same prefix as the repo's)
    ws.apply(parent, diff="", snapshot=None) check out parent (or snapshot), apply diff
    ws.applies(parent, diff) -> bool         would ``diff`` apply on ``parent``? (no change)
    ws.changes() -> list[str]                paths that differ from the applied candidate
    ws.changes_by_kind() -> {path: kind}     the same, each "new", "modified" or "deleted"
    ws.diff() -> str                         the tree against ``parent`` (the candidate's diff)
    ws.out_of_scope(is_editable) -> list     changed paths outside the editable files
    ws.restore()                             back to exactly the applied candidate
    ws.remove()                              delete the worktree and its registration
    prune_stale(repo, folder) -> list[Path]  worktrees of drivers that are gone (kill -9)
    make_bundle(repo, sha) -> bytes          a git bundle holding ``sha`` and its history
    Links(source, paths, folders, ...)      the user's untracked files a workspace links to
    MissingLinkError                         a file to link is not on this machine (.missing)
    ls_files(root, *args) -> list[str]       ``git ls-files -z`` (the ignored files...)

What git does not hold is not in a worktree, yet the metric may need it (a dataset under a
gitignored ``data/``): ``executors.worktree.plan_links`` lists the user's ignored files
(and program.md's ``shared:`` paths) once, and every workspace links them from the user's checkout
(docs/parallel.md, "Untracked files in the workers"). Links, never copies: one rule for a
10-byte config and a 100 GB dataset, nothing to keep in step, and read-only to evaluations
for free, since the launcher mounts the user's checkout read-only (a copy would be writable,
and a run could change what the next candidate reads).

Worktree folders are named ``<name>-<pid>``: a later run removes those whose process is
gone, as ``evaluate.cleanup_stale`` does for evaluation folders. Git runs with hooks and
fsmonitor off (``vcs.safe_git_env``): experiment code may have planted them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pytest_autoresearch.sandbox.evaluate import pid_alive

__all__ = [
    "ApplyError",
    "Links",
    "MissingLinkError",
    "Workspace",
    "WorkspaceError",
    "ls_files",
    "make_bundle",
    "prune_stale",
]

_NAME = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<pid>\d+)$")


class WorkspaceError(Exception):
    """Git refused to set up or reset a workspace; the message says what to do."""


class ApplyError(WorkspaceError):
    """The candidate's diff does not apply on the parent it was given (it went stale)."""


class MissingLinkError(WorkspaceError):
    """Files to link are not on this machine (a Ray node without the driver's checkout)."""

    def __init__(self, message: str, missing: Sequence[str]) -> None:
        super().__init__(message)
        self.missing = list(missing)


def _git_env() -> dict[str, str]:
    from pytest_autoresearch.vcs.repo import safe_git_env

    env = dict(os.environ)
    # A GIT_DIR/GIT_INDEX_FILE inherited from a hook would point every command elsewhere.
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY"):
        env.pop(var, None)
    env.update(safe_git_env())
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def _git(
    cwd: Path,
    *args: str,
    input: bytes | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    full_env = _git_env()
    full_env.update(env or {})
    try:
        cmd = ["git", *args]
        proc = subprocess.run(cmd, cwd=cwd, input=input, capture_output=True, env=full_env)
    except OSError as exc:
        raise WorkspaceError(f"cannot run git ({exc}); install git and put it on PATH") from None
    if check and proc.returncode != 0:
        message = " ".join(proc.stderr.decode("utf-8", "replace").split())
        raise WorkspaceError(
            f"git {' '.join(args[:2])} failed in {cwd}: {message or f'exit {proc.returncode}'}"
        )
    return proc


def _out(cwd: Path, *args: str) -> str:
    return _git(cwd, *args).stdout.decode("utf-8", "replace").strip()


class Workspace:
    """One worker's checkout: a detached worktree (or a standalone clone) it owns alone."""

    def __init__(
        self, path: Path, *, prefix: str = "", links: Links | None = None, owner: Path | None = None
    ) -> None:
        self.path = Path(path)
        self.prefix = prefix  # the rootdir relative to the work tree ("" when the same)
        self.links = links or Links("")  # untracked paths linked in from the user's checkout
        self.owner = owner  # the repository that registered the worktree; None for a clone
        self.parent = ""  # the commit the current candidate sits on
        self.candidate = ""  # the tree of the applied candidate (what restore() goes back to)

    # -- creating and removing ------------------------------------------------------------

    @classmethod
    def create(
        cls,
        repo: Path | str,
        folder: Path | str,
        name: str,
        sha: str = "HEAD",
        *,
        shared: Sequence[str] = (),
        links: Links | None = None,
    ) -> Workspace:
        """Add a detached worktree of ``repo`` at ``sha`` under ``folder``, named after us.

        ``repo`` is the rootdir (or any folder inside the repository); the workspace's
        ``root`` is the same place inside the worktree. ``links``: the user's untracked
        files to link in (``executors.worktree.plan_links``, made once for all workers);
        None: only ``shared``, untracked paths relative to the rootdir. Linked, never
        copied or cleaned.
        """
        if not _NAME.match(f"{name}-0"):
            raise ValueError(f"a workspace name is letters, digits, '.' and '_', not {name!r}")
        repo = Path(repo).resolve()
        top = Path(_out(repo, "rev-parse", "--show-toplevel")).resolve()
        rel = os.path.relpath(repo, top)
        prefix = "" if rel == "." else Path(rel).as_posix()
        folder = Path(folder).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}-{os.getpid()}"
        if path.exists():  # our own leftover (a workspace created twice in one process)
            _remove_worktree(top, path)
        sha = _out(top, "rev-parse", "--verify", "-q", sha + "^{commit}")
        _git(top, "worktree", "add", "--detach", "-q", str(path), sha)
        if links is None:
            shared = tuple(p.strip("/") for p in shared)
            links = Links(str(repo), shared, shared=shared, required=shared)
        ws = cls(path, prefix=prefix, links=links, owner=top)
        try:
            ws.parent, ws.candidate = sha, _out(path, "rev-parse", "HEAD^{tree}")
            ws._link()
        except BaseException:
            ws.remove()  # a half-made workspace is nobody's: do not leave it behind
            raise
        return ws

    @classmethod
    def clone(
        cls,
        bundle: bytes,
        folder: Path | str,
        name: str,
        *,
        prefix: str = "",
        links: Links | None = None,
    ) -> Workspace:
        """A standalone repository under ``folder`` holding ``bundle``'s commits (a Ray worker).

        Later candidates whose parent it lacks bring their own bundle: ``fetch(bundle)``.
        ``links``: the driver's untracked files (planned on the driver), linked from
        the same path on this node; MissingLinkError when a required one is not there.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"{name}-{os.getpid()}-", dir=folder))
        ws = cls(path, prefix=prefix, links=links)
        try:
            _git(path, "init", "-q")
            ws.fetch(bundle)
            ws._link()
        except BaseException:
            ws.remove()
            raise
        return ws

    def fetch(self, bundle: bytes) -> None:
        """Take in a bundle's commits (from ``make_bundle``) without touching the tree."""
        fd, name = tempfile.mkstemp(suffix=".bundle", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(bundle)
            _git(self.path, "fetch", "-q", name, "+refs/*:refs/shipped/*")
        finally:
            os.unlink(name)

    def has(self, sha: str) -> bool:
        """Does this workspace's repository hold commit ``sha``?"""
        return _git(self.path, "cat-file", "-e", sha + "^{commit}", check=False).returncode == 0

    def remove(self) -> None:
        """Delete the worktree (or clone) and git's record of it; safe to call twice."""
        if self.owner is not None:
            _remove_worktree(self.owner, self.path)
        else:
            shutil.rmtree(self.path, ignore_errors=True)

    # -- candidates -----------------------------------------------------------------------

    @property
    def root(self) -> Path:
        """Where pytest runs: the rootdir's place inside this workspace."""
        return self.path / self.prefix if self.prefix else self.path

    def apply(self, parent: str, diff: str = "", snapshot: str | None = None) -> None:
        """Make the tree ``parent`` + ``diff`` (or exactly commit ``snapshot``).

        Raises ApplyError when the diff does not apply on ``parent`` (the tree is then
        ``parent`` itself), WorkspaceError when a commit is unknown here.
        """
        target = snapshot or parent
        self._reset(target)
        self.parent = parent
        if diff and not snapshot:
            patch = _bytes(diff)
            proc = _git(self.path, "apply", "--index", "--binary", "-", input=patch, check=False)
            if proc.returncode != 0:
                why = proc.stderr.decode("utf-8", "replace").strip().splitlines()
                self._reset(parent)
                raise ApplyError(
                    f"the candidate's diff does not apply on {parent[:12]}: "
                    + (why[0] if why else "git apply failed")
                )
        self.candidate = _out(self.path, "write-tree")

    def applies(self, parent: str, diff: str) -> bool:
        """Would ``diff`` apply cleanly on ``parent``? Checked in a scratch index; no change."""
        fd, index = tempfile.mkstemp(prefix="autoresearch-index-", dir=self.path.parent)
        os.close(fd)
        try:
            scratch = {"GIT_INDEX_FILE": index}
            _git(self.path, "read-tree", parent, env=scratch)
            proc = _git(
                self.path, "apply", "--cached", "--check", "--binary", "-",
                input=_bytes(diff), check=False, env=scratch,
            )  # fmt: skip
            return proc.returncode == 0
        finally:
            os.unlink(index)

    def changes(self) -> list[str]:
        """Paths (relative to ``root``) that differ from the applied candidate, new files too.

        After an evaluation these are what the run itself wrote; the controller decides which
        of them matter (DESIGN.md: scope is enforced by code, on the controller's side).
        """
        return sorted(self.changes_by_kind())

    def changes_by_kind(self) -> dict[str, str]:
        """``changes()`` with what happened to each path: "new", "modified" or "deleted"."""
        _git(self.path, "add", "-A", "--", *self._pathspec())
        raw = _git(
            self.path, "diff", "--cached", "--name-status", "-z", "--no-renames", self.candidate
        ).stdout
        _git(self.path, "read-tree", self.candidate)  # the index back to the candidate
        fields = os.fsdecode(raw).split("\0")
        kinds = {"A": "new", "D": "deleted"}
        found = {}
        for status, path in zip(fields[0::2], fields[1::2], strict=False):
            if path and self._shown(path):
                found[self._show(path)] = kinds.get(status[:1], "modified")
        return dict(sorted(found.items()))

    def diff(self) -> str:
        """The tree now against ``parent``: what would ship as the candidate's diff."""
        _git(self.path, "add", "-A", "--", *self._pathspec())
        raw = _git(
            self.path, "diff", "--cached", "--binary", "--no-color", "--no-ext-diff",
            "--no-renames", self.parent,
        ).stdout  # fmt: skip
        _git(self.path, "read-tree", self.candidate)
        return raw.decode("utf-8", "surrogateescape")

    def out_of_scope(self, is_editable: Callable[[str], bool]) -> list[str]:
        """Changed paths (since the candidate was applied) outside the editable files."""
        return [p for p in self.changes() if not is_editable(p)]

    def restore(self) -> None:
        """Back to exactly the applied candidate: outputs and planted files removed."""
        _git(self.path, "read-tree", "-u", "--reset", self.candidate)
        self._clean()

    # -- internals ------------------------------------------------------------------------

    def _reset(self, sha: str) -> None:
        _git(self.path, "checkout", "-q", "--force", "--detach", sha)
        self._clean()

    def _clean(self) -> None:
        # -x: last run's build outputs and caches must not feed the next candidate's run.
        # Each link is kept, and what a run wrote beside it in a mirrored folder is not.
        excludes = [f"--exclude=/{_pattern(self._repo_path(p))}" for p in self.links.paths]
        _git(self.path, "clean", "-q", "-ffdx", *excludes)
        if self.links.paths:
            self._link(again=True)  # a run may have deleted a link (rmtree of outputs/)

    def _pathspec(self) -> list[str]:
        # A link to a folder is a file to git, so a folder-only ignore rule ("data/") does not
        # hide it: the links git does not ignore are left out by name (naming an ignored
        # path makes ``git add`` fail).
        tops = [self._repo_path(s) for s in self.links.tops()]
        if not tops:
            return ["."]
        listed = "\0".join(tops).encode("utf-8", "surrogateescape") + b"\0"
        proc = _git(self.path, "check-ignore", "-z", "--stdin", input=listed, check=False)
        ignored = set(os.fsdecode(proc.stdout).split("\0"))
        return ["."] + [f":(exclude,literal){t}" for t in tops if t not in ignored]

    def _repo_path(self, rel: str) -> str:
        rel = rel.strip("/")
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _shown(self, path: str) -> bool:
        if "__pycache__/" in "/" + path or path.endswith((".pyc", ".pyo")):
            return False  # bytecode the evaluation leaves behind is no change
        return not self.prefix or path.startswith(self.prefix + "/")

    def _show(self, path: str) -> str:
        return path[len(self.prefix) + 1 :] if self.prefix else path

    def _link(self, *, again: bool = False) -> None:
        """Make the mirrored folders and the links (``again``: only the missing ones)."""
        source = Path(self.links.source)
        missing = [p for p in self.links.paths if not os.path.lexists(source / p)]
        required = [p for p in missing if p in self.links.required]
        if required and not again:
            raise MissingLinkError(
                f"{_shown_list(required)} (untracked, linked from {source}) not found on "
                f"{_host()}; create it there or leave it out of the shared paths",
                required,
            )
        for rel in self.links.folders:
            (self.root / rel).mkdir(parents=True, exist_ok=True)
        wrong = []
        for rel in self.links.paths:
            link, target = self.root / rel, source / rel
            if rel in missing:
                continue
            if os.path.lexists(link):
                if again and not (link.is_symlink() and os.readlink(link) == str(target)):
                    wrong.append(rel)  # a run put its own file in place of the link
                elif not again and rel in self.links.shared:
                    raise WorkspaceError(
                        f"{rel} is tracked by git, so it cannot be shared into the workers; "
                        "share only untracked paths (a dataset, a build folder)"
                    )
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target, target_is_directory=target.is_dir())
        if wrong:
            self._replace(wrong, source)

    def _replace(self, paths: list[str], source: Path) -> None:
        """Put the links back where a run replaced them (the clean keeps whatever is there)."""
        raw = _git(self.path, "ls-files", "-z", "--", *map(self._repo_path, paths)).stdout
        tracked = set(os.fsdecode(raw).split("\0"))
        for rel in paths:
            if self._repo_path(rel) in tracked:
                continue  # the candidate itself tracks a file there: git's, not ours
            link = self.root / rel
            if link.is_dir() and not link.is_symlink():
                shutil.rmtree(link)
            else:
                link.unlink()
            link.symlink_to(source / rel, target_is_directory=(source / rel).is_dir())


def _bytes(diff: str) -> bytes:
    return diff.encode("utf-8", "surrogateescape")


def _remove_worktree(top: Path, path: Path) -> None:
    _git(top, "worktree", "remove", "--force", "--force", str(path), check=False)
    shutil.rmtree(path, ignore_errors=True)
    _git(top, "worktree", "prune", check=False)


def prune_stale(repo: Path | str, folder: Path | str) -> list[Path]:
    """Remove worktrees under ``folder`` left by a driver that is gone; the paths removed.

    Call it when a run starts: a kill -9 of the driver leaves its workers' worktrees (and
    git's records of them) behind. A folder of a process still alive is another run's.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    top = Path(_out(Path(repo).resolve(), "rev-parse", "--show-toplevel"))
    removed = []
    for path in sorted(folder.iterdir()):
        m = _NAME.match(path.name)
        if m is None or not path.is_dir():
            continue
        pid = int(m["pid"])
        if pid_alive(pid):  # another run's, or this process's own (in use)
            continue
        _remove_worktree(top, path)
        removed.append(path)
    _git(top, "worktree", "prune", check=False)
    return removed


def make_bundle(repo: Path | str, sha: str) -> bytes:
    """A git bundle (v2) of ``sha`` and everything it reaches, under ``refs/ship/<sha>``.

    Written by hand from ``git pack-objects`` so that no ref is created in the user's
    repository (``git bundle create`` insists on one).
    """
    repo = Path(repo)
    full = _out(repo, "rev-parse", "--verify", "-q", sha + "^{commit}")
    pack = _git(repo, "pack-objects", "--revs", "--stdout", "-q", input=f"{full}\n".encode()).stdout
    header = f"# v2 git bundle\n{full} refs/ship/{full}\n\n".encode()
    return header + pack


# -- the user's untracked files in the workers ------------------------------------------------


@dataclass(frozen=True)
class Links:
    """The user's untracked files a worker's checkout links to (paths relative to the rootdir).

    ``folders`` are real folders made in the workspace, holding links to what the user's
    folder holds: a run may then write beside them (``outputs/``, ``lightning_logs/``) as
    it does in the user's checkout, and the clean removes only what it wrote. ``required``:
    paths whose absence on a machine is an error (the others are left out there).
    """

    source: str  # the rootdir the links point into (absolute)
    paths: tuple[str, ...] = ()
    folders: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()  # program.md's shared: among ``paths``
    required: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # lines: what was not linked, and why

    def tops(self) -> list[str]:
        """The outermost linked paths and folders (what git must not list as changes)."""
        inner = [p for p in self.paths if not any(p.startswith(f + "/") for f in self.folders)]
        return sorted({*self.folders, *inner})

    def requiring(self, paths: Collection[str]) -> Links:
        """The same links, with only ``paths`` required (the others optional)."""
        return replace(self, required=tuple(p for p in self.paths if p in set(paths)))


def ls_files(root: Path | str, *args: str) -> list[str]:
    """``git ls-files -z *args`` in ``root``: paths relative to it (e.g. the ignored files)."""
    raw = _git(Path(root), "ls-files", "-z", *args).stdout
    return [p for p in os.fsdecode(raw).split("\0") if p]


def _pattern(path: str) -> str:
    """``path`` as a literal gitignore pattern (for ``git clean --exclude``)."""
    return "".join("\\" + c if c in "\\*?[" else c for c in path)


def _shown_list(paths: Sequence[str], most: int = 3) -> str:
    shown = ", ".join(paths[:most])
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")


def _host() -> str:
    import socket

    return socket.gethostname()
