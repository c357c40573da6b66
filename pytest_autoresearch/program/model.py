"""The research program as the loop reads it: a Program, its Constraints, ProgramError.

``program_md.parse_program`` builds a Program from program.md; this module only answers
questions about one (what is editable, what stays protected, which metrics it names).
Pure: the standard library only.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_autoresearch.program.globs import expand, glob_to_regex, normalise

__all__ = ["PROTECTED_PARTS", "Constraint", "Program", "ProgramError", "where"]

# Protected whatever the globs say (compared casefolded: .GIT on a case-insensitive disk).
PROTECTED_PARTS = frozenset({".git", ".autoresearch"})
_PROTECTED_NAMES = frozenset({"conftest.py", ".gitmodules", ".gitattributes"})
# Paths standing for "anything inside", to tell a glob that reaches into them.
_PROTECTED_PROBES = (".git/config", ".git/hooks/post-commit", ".autoresearch/t/results.tsv")


class ProgramError(Exception):
    """program.md is wrong; the message says where, what, and how to fix it."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def where(path: Path, line: int | None) -> str:
    """``path:line`` for a message, or the path alone when the line is unknown."""
    return f"{path}:{line}" if line else str(path)


@dataclass(frozen=True)
class Constraint:
    """A condition another metric must meet for a keep, e.g. ``peak_vram_gb <= 60``."""

    metric: str
    op: str
    bound: float
    text: str

    def holds(self, value: float) -> bool:
        """Whether ``value`` satisfies the constraint (NaN never does)."""
        if not math.isfinite(value):
            return False
        return {
            "<=": value <= self.bound,
            ">=": value >= self.bound,
            "<": value < self.bound,
            ">": value > self.bound,
            "==": value == self.bound,
        }[self.op]


@dataclass(frozen=True)
class Program:
    """The research program: what may change, what is measured, what must hold."""

    path: Path
    editable: tuple[str, ...]
    objective: str
    guards: tuple[str, ...] = ()
    holdout: str | None = None
    constraints: tuple[Constraint, ...] = ()
    timeout: float | None = None
    min_delta: float = 0.0
    baseline_runs: int = 8  # decide.BASELINE_RUNS: the keep rule's figures assume it
    context: tuple[str, ...] = ()
    search: tuple[Any, ...] = ()  # proposers.search_spec.Declared: ranges for named numbers
    sandbox: bool = True  # isolate each evaluation (read by the launcher)
    network: bool = True  # the experiment may use the network
    workers: int | None = None  # experiments in flight; None: not said here
    gpus_per_worker: int = 1  # each worker's own GPUs (0: hidden from the evaluations)
    lean: bool | tuple[str, ...] = False  # a tuple: lean, keeping these plugins loaded
    shared: tuple[str, ...] = ()  # untracked paths linked into workers' checkouts
    cache: tuple[str, ...] = ()  # absolute paths outside the checkout evaluations may write
    # The LLM's check tool: the guards plus these tests, within check_timeout seconds.
    smoke: tuple[str, ...] = ()
    check_timeout: float | None = None
    notebook_tokens: int | None = None  # the lab notebook's budget (the option wins)
    instructions: str = ""
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)
    program_relpath: str | None = field(default=None, compare=False, repr=False)
    # casefolded relative path -> why it is protected ("a metric test", "a guard", ...)
    protected: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def is_editable(self, relpath: str) -> bool:
        """Whether a proposal may change ``relpath`` (posix, relative to the root)."""
        rel = normalise(relpath)
        if rel is None or self.protected_reason(rel) is not None:
            return False
        return any(glob_to_regex(g).match(rel) for g in self.editable)

    def editable_files(self, root: Path) -> list[str]:
        """The existing files the editable globs match, as sorted relative posix paths."""
        found = expand(self.editable, Path(root), exclude=self.program_relpath)
        return [rel for rel in found if self.protected_reason(rel) is None]

    def protected_reason(self, relpath: str) -> str | None:
        """Why ``relpath`` stays protected whatever the globs say, or None."""
        rel = normalise(relpath)
        if rel is None:
            return "outside the rootdir"
        folded = rel.casefold()
        parts = folded.split("/")
        if self.program_relpath is not None and folded == self.program_relpath.casefold():
            return "the research program"
        if PROTECTED_PARTS.intersection(parts):
            return "git's or the loop's own files"
        for i in range(len(parts), 0, -1):  # the path itself, or a protected directory
            why = self.protected.get("/".join(parts[:i]))
            if why is not None:
                return why
        if parts[-1] in _PROTECTED_NAMES:
            return "a conftest file" if parts[-1] == "conftest.py" else "git configuration"
        return None

    def with_protected(self, paths: Iterable[str] | Mapping[str, str]) -> Program:
        """A copy that also protects ``paths`` (relative posix; a mapping gives the reasons)."""
        given = paths.items() if isinstance(paths, Mapping) else ((p, "protected") for p in paths)
        extra = dict(self.protected)
        for path, why in given:
            rel = normalise(str(path).rstrip("/\\"))
            if rel is not None:
                extra.setdefault(rel.casefold(), why)
        return replace(self, protected=extra)

    def glob_for(self, relpath: str) -> str | None:
        """The first editable glob matching ``relpath``, as "the editable glob 'g' (where)"."""
        rel = normalise(relpath)
        for g in self.editable if rel is not None else ():
            if glob_to_regex(g).match(rel):
                return f"the editable glob {g!r} ({self._where_key('editable')})"
        return None

    def protected_overlaps(self, root: Path) -> list[str]:
        """One line per editable glob that covers a protected file (it stays protected)."""
        out: list[str] = []
        at = self._where_key("editable")
        for g in self.editable:
            pattern = glob_to_regex(g)
            for top in dict.fromkeys(
                p.split("/")[0] for p in _PROTECTED_PROBES if pattern.match(p)
            ):
                out.append(
                    f"{at}: editable glob {g!r} reaches into {top} (git's or the loop's own "
                    "files); they stay protected"
                )
            for rel in expand([g], Path(root), exclude=None):
                why = self.protected_reason(rel)
                if why is not None:
                    out.append(
                        f"{at}: editable glob {g!r} covers {rel} ({why}); it stays protected"
                    )
        return out

    def _where_key(self, key: str) -> str:
        line = self.lines.get(key)
        return f"{self.path.name} line {line}" if line else self.path.name

    def check_metrics(self, goals: Mapping[str, str]) -> None:
        """Fail clearly when the objective, holdout or a constraint names an unknown metric."""
        wanted = [("objective", self.objective)]
        if self.holdout:
            wanted.append(("holdout", self.holdout))
        wanted += [("constraints", c.metric) for c in self.constraints]
        known = sorted(goals)
        for key, name in wanted:
            if name in goals:
                continue
            hint = difflib.get_close_matches(name, known, n=1)
            fix = f"did you mean {hint[0]!r}?" if hint else "use one of the metric names above"
            listed = ", ".join(known) if known else "none: no @metric test reported a value"
            raise ProgramError(
                f"{where(self.path, self.lines.get(key))}: {key} names the metric {name!r}, "
                f"but the metric tests report no such metric (known: {listed}); {fix}",
                self.lines.get(key),
            )
