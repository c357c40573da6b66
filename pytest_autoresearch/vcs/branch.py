"""The research branch's ground: HEAD and refs, the origin file, the checks start() makes.

A mixin of ``repo.ResearchRepo``: it reads the attributes declared below, which
``ResearchRepo.__init__`` sets. HEAD is read from git's files when git allows (no
subprocess), and every refusal says what to do instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_autoresearch.vcs.gitutil import (
    Entry,
    VcsError,
    chunks,
    flag_names,
    is_sha,
    lock_message,
    short_list,
)

__all__ = ["ResearchBranch"]


class ResearchBranch:
    """HEAD, refs and the origin file of the research branch; the refusals of ``start()``."""

    _repo: Any  # git.Repo
    workdir: Path
    tag: str
    branch: str
    original: str
    _original_is_branch: bool
    _started: bool
    _record_prefix: str

    if TYPE_CHECKING:  # the other parts of ResearchRepo

        def _show(self, path: str) -> str: ...  # scope.ScopeRules

    def _require_started(self) -> None:
        if not self._started:
            raise VcsError("the research branch is not checked out: call start() first")

    # -- HEAD and refs ------------------------------------------------------------------

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

    # -- what start() refuses -----------------------------------------------------------

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

    # -- the origin file: where to go back to, across a kill ----------------------------

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
