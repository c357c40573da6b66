"""Parse and validate program.md (YAML front matter + Markdown instructions) into a Program.

API
---
ProgramError(message)              names the file, the line, the problem and the fix (.line)
Constraint(metric, op, bound, text).holds(value) -> bool       "peak_vram_gb <= 60"
Program(path, editable, objective, guards=(), holdout=None, constraints=(), timeout=None,
        min_delta=0.0, baseline_runs=8, context=(), instructions="")
    .is_editable(relpath) -> bool       posix path relative to the root; ``**`` spans dirs
    .editable_files(root) -> list[str]  sorted relative posix paths of existing files
    .check_metrics(goals) -> None       {metric: goal}; raises ProgramError for missing ones
    .protected_reason(relpath) -> str | None   why a path stays protected whatever the globs
                                        say (.git, .autoresearch, conftest.py, the program,
                                        .gitmodules/.gitattributes, paths given below); casefolded
    .with_protected(paths or {path: why}) -> Program   also protect metric tests, guards (a
                                        directory protects what is under it), the ini file
    .protected_overlaps(root) -> list[str]   one line per glob covering a protected path
    .glob_for(relpath) -> str | None    "the editable glob 'g' (program.md line 2)"
    .sandbox, .network: bool            program.md ``sandbox:``/``network:`` (default on)
    .workers: int | None                program.md ``workers:`` (None: not given)
    .gpus_per_worker: int               GPUs each worker gets (default 1; 0 hides them)
    .lean: bool | tuple[str, ...]       start evaluations with only the plugins they need
                                        (a tuple: plugin names to keep loaded as well)
    .shared: tuple[str, ...]            untracked paths linked into every worker's checkout
load_program(path, root) -> Program     reads and validates; raises ProgramError
parse_program(text, path, root) -> Program
glob_to_regex(glob) -> re.Pattern

Nothing here imports pytest; PyYAML is imported inside the parser.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "KEYS",
    "Constraint",
    "Program",
    "ProgramError",
    "glob_to_regex",
    "load_program",
    "parse_program",
]

# What each key is for, shown when a key is unknown or missing.
KEYS: dict[str, str] = {
    "editable": 'globs of the only files a proposal may change, e.g. ["train.py"]',
    "objective": "the @metric whose goal (min/max) the research optimises",
    "guards": 'pytest paths or node ids that must pass for a keep, e.g. ["tests/"]',
    "holdout": "a @metric reported but never used to decide",
    "constraints": 'conditions on other metrics, e.g. ["peak_vram_gb <= 60"]',
    "timeout": "seconds per evaluation (default: from the baseline's duration)",
    "min_delta": "the smallest improvement worth keeping, in objective units (default 0)",
    "baseline_runs": "how many times the baseline is measured to estimate noise (default 8; "
    "3 when they agree exactly)",
    "context": "globs of read-only files an LLM proposer may view",
    "sandbox": "run each evaluation isolated (own PID namespace, .git read-only); default on",
    "network": "whether the experiment may use the network; default on (data loaders)",
    "search": "ranges for the optuna proposer, per file and name, e.g. "
    '{"train.py": {"learning_rate": "log 1e-5..1e-1"}} (docs/optuna-proposer.md)',
    "workers": "experiments in flight at once (default 1; --autoresearch-workers wins)",
    "gpus_per_worker": "GPUs each worker gets, pinned with CUDA_VISIBLE_DEVICES (default 1; "
    "0 hides them)",
    "lean": "start evaluations with only the plugins the metric tests need: true, or a list "
    "of pytest plugins to keep loaded as well (default false)",
    "shared": 'untracked paths the workers\' checkouts link to, e.g. ["data/"] (a dataset)',
}
_OPS = ("<=", ">=", "==", "<", ">")
_CONSTRAINT_RE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_.\-]*)\s*(?P<op><=|>=|==|<|>)\s*(?P<bound>\S+)\s*$"
)
_SKIP_DIRS = {".git", ".hg", ".svn", ".autoresearch", "__pycache__"}
# Protected whatever the globs say (compared casefolded: .GIT on a case-insensitive disk).
_PROTECTED_PARTS = frozenset({".git", ".autoresearch"})
_PROTECTED_NAMES = frozenset({"conftest.py", ".gitmodules", ".gitattributes"})
# Paths standing for "anything inside", to tell a glob that reaches into them.
_PROTECTED_PROBES = (".git/config", ".git/hooks/post-commit", ".autoresearch/t/results.tsv")


class ProgramError(Exception):
    """program.md is wrong; the message says where, what, and how to fix it."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


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
    instructions: str = ""
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)
    program_relpath: str | None = field(default=None, compare=False, repr=False)
    # casefolded relative path -> why it is protected ("a metric test", "a guard", ...)
    protected: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def is_editable(self, relpath: str) -> bool:
        """Whether a proposal may change ``relpath`` (posix, relative to the root)."""
        rel = _normalise(relpath)
        if rel is None or self.protected_reason(rel) is not None:
            return False
        return any(glob_to_regex(g).match(rel) for g in self.editable)

    def editable_files(self, root: Path) -> list[str]:
        """The existing files the editable globs match, as sorted relative posix paths."""
        found = _expand(self.editable, Path(root), exclude=self.program_relpath)
        return [rel for rel in found if self.protected_reason(rel) is None]

    def protected_reason(self, relpath: str) -> str | None:
        """Why ``relpath`` stays protected whatever the globs say, or None."""
        rel = _normalise(relpath)
        if rel is None:
            return "outside the rootdir"
        folded = rel.casefold()
        parts = folded.split("/")
        if self.program_relpath is not None and folded == self.program_relpath.casefold():
            return "the research program"
        if _PROTECTED_PARTS.intersection(parts):
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
            rel = _normalise(str(path).rstrip("/\\"))
            if rel is not None:
                extra.setdefault(rel.casefold(), why)
        return replace(self, protected=extra)

    def glob_for(self, relpath: str) -> str | None:
        """The first editable glob matching ``relpath``, as "the editable glob 'g' (where)"."""
        rel = _normalise(relpath)
        for g in self.editable if rel is not None else ():
            if glob_to_regex(g).match(rel):
                return f"the editable glob {g!r} ({self._where_key('editable')})"
        return None

    def protected_overlaps(self, root: Path) -> list[str]:
        """One line per editable glob that covers a protected file (it stays protected)."""
        out: list[str] = []
        where = self._where_key("editable")
        for g in self.editable:
            pattern = glob_to_regex(g)
            for top in dict.fromkeys(
                p.split("/")[0] for p in _PROTECTED_PROBES if pattern.match(p)
            ):
                out.append(
                    f"{where}: editable glob {g!r} reaches into {top} (git's or the loop's own "
                    "files); they stay protected"
                )
            for rel in _expand([g], Path(root), exclude=None):
                why = self.protected_reason(rel)
                if why is not None:
                    out.append(
                        f"{where}: editable glob {g!r} covers {rel} ({why}); it stays protected"
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
                f"{_where(self.path, self.lines.get(key))}: {key} names the metric {name!r}, "
                f"but the metric tests report no such metric (known: {listed}); {fix}",
                self.lines.get(key),
            )


def glob_to_regex(glob: str) -> re.Pattern[str]:
    """Translate a path glob: ``*`` and ``?`` stay within a directory, ``**`` spans them."""
    return _glob_re(glob)


_GLOB_CACHE: dict[str, re.Pattern[str]] = {}


def _glob_re(glob: str) -> re.Pattern[str]:
    cached = _GLOB_CACHE.get(glob)
    if cached is not None:
        return cached
    out, i, n = [], 0, len(glob)
    while i < n:
        c = glob[i]
        if glob.startswith("**/", i):
            out.append(r"(?:[^/]+/)*")  # zero or more whole directories
            i += 3
        elif glob.startswith("**", i):
            out.append(r".*")
            i += 2
        elif c == "*":
            out.append(r"[^/]*")
            i += 1
        elif c == "?":
            out.append(r"[^/]")
            i += 1
        elif c == "[":
            j = glob.find("]", i + 2 if glob.startswith("[!", i) else i + 1)
            if j == -1:
                out.append(re.escape(c))
                i += 1
                continue
            body = glob[i + 1 : j]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    pattern = re.compile("".join(out) + r"\Z")
    _GLOB_CACHE[glob] = pattern
    return pattern


def _normalise(relpath: str) -> str | None:
    """A clean relative posix path, or None for anything that escapes or is absolute."""
    rel = relpath.replace("\\", "/")
    while rel.startswith("./"):
        rel = rel[2:]
    if not rel or rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
        return None
    parts = rel.split("/")
    if any(p in ("..", "") for p in parts):
        return None
    return "/".join(p for p in parts if p != ".")


def _literal_prefix(glob: str) -> str:
    """The leading directories of a glob that contain no wildcard (where to start walking)."""
    parts = glob.split("/")[:-1]
    keep = []
    for p in parts:
        if any(ch in p for ch in "*?["):
            break
        keep.append(p)
    return "/".join(keep)


def _expand(globs: Iterable[str], root: Path, exclude: str | None = None) -> list[str]:
    found: set[str] = set()
    for g in globs:
        pattern = _glob_re(g)
        start = root / _literal_prefix(g) if _literal_prefix(g) else root
        if not start.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
            base = Path(dirpath)
            for name in filenames:
                rel = (base / name).relative_to(root).as_posix()
                if rel != exclude and pattern.match(rel):
                    found.add(rel)
    return sorted(found)


def _where(path: Path, line: int | None) -> str:
    return f"{path}:{line}" if line else str(path)


# -- parsing ----------------------------------------------------------------------------


def load_program(path: Path, root: Path) -> Program:
    """Read ``path`` and validate it against the files under ``root``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProgramError(
            f"{path}: no such file; create program.md at the rootdir or pass "
            "--autoresearch-program PATH"
        ) from None
    except UnicodeDecodeError as exc:
        raise ProgramError(f"{path}: not UTF-8 text ({exc}); save it as UTF-8") from None
    return parse_program(text, path, root)


def parse_program(text: str, path: Path, root: Path) -> Program:
    """Validate program.md's text; ``path`` is used in messages and to protect the file."""
    import yaml

    path, root = Path(path), Path(root)
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        raise ProgramError(
            f"{_where(path, 1)}: program.md must start with YAML front matter between two "
            "'---' lines; start the file with:\n---\neditable: [\"train.py\"]\n"
            "objective: val_loss\n---",
            1,
        )
    end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), None)
    if end is None:
        raise ProgramError(
            f"{_where(path, 1)}: the front matter opened on line 1 is never closed; "
            "add a line with '---' after the last key",
            1,
        )
    front = "\n".join(lines[1:end])
    instructions = "\n".join(lines[end + 1 :]).strip()
    try:
        node = yaml.compose(front, Loader=yaml.SafeLoader)
        data = yaml.safe_load(front)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ProgramError(
            f"{_where(path, line)}: the front matter is not valid YAML ({problem}); write one "
            "'key: value' a line, and quote values that contain ':' or '#'",
            line,
        ) from None
    if data is None:
        data, node = {}, None
    if not isinstance(data, dict) or (node is not None and node.id != "mapping"):
        raise ProgramError(
            f"{_where(path, 2)}: the front matter must be 'key: value' lines, got "
            f"{type(data).__name__}; e.g. objective: val_loss",
            2,
        )
    key_lines: dict[str, int] = {}
    for key_node, _value in node.value if node is not None else ():
        key = str(key_node.value)
        line = key_node.start_mark.line + 2
        if key in key_lines:
            raise ProgramError(
                f"{_where(path, line)}: {key!r} is given twice (first on line "
                f"{key_lines[key]}); keep one",
                line,
            )
        key_lines[key] = line
    return _build(data, key_lines, path, root, instructions, end + 1)


def _build(
    data: dict[Any, Any],
    key_lines: dict[str, int],
    path: Path,
    root: Path,
    instructions: str,
    closing_line: int,
) -> Program:
    def fail(key: str | None, problem: str, fix: str) -> ProgramError:
        line = key_lines.get(key, closing_line) if key else closing_line
        return ProgramError(f"{_where(path, line)}: {problem}; {fix}", line)

    for key in data:
        if str(key) not in KEYS:
            hint = difflib.get_close_matches(str(key), list(KEYS), n=1)
            fix = (
                f"did you mean {hint[0]!r}?"
                if hint
                else "the known keys are " + ", ".join(KEYS) + "; move free text below the '---'"
            )
            raise fail(str(key), f"unknown key {key!r}", fix)
    for key in ("editable", "objective"):
        if data.get(key) in (None, "", []):
            raise fail(
                key if key in data else None, f"{key!r} is required", f"add {key}: ({KEYS[key]})"
            )

    program_rel = _relative_to(path, root)
    editable = _globs(data["editable"], "editable", fail)
    # A glob covering program.md is not an error: it stays protected (protected_overlaps).
    for g in editable:
        if not _expand([g], root, exclude=program_rel):
            raise fail(
                "editable",
                f"the editable glob {g!r} matches no file under {root}",
                "check the spelling; globs are relative to the rootdir and '**' spans directories",
            )
    _check_symlinks(editable, root, program_rel, fail)

    objective = _name(data["objective"], "objective", fail)
    guards = _strings(data.get("guards", ()), "guards", fail)
    for g in guards:
        if g.startswith("-"):
            raise fail(
                "guards",
                f"guard {g!r} is an option, not a test",
                "list test paths or node ids only (e.g. tests/test_model.py::test_shapes)",
            )
        target = g.split("::", 1)[0]
        if not (root / target).exists():
            raise fail(
                "guards",
                f"the guard path {target!r} does not exist under {root}",
                "give a test file or directory relative to the rootdir",
            )
    holdout = _name(data["holdout"], "holdout", fail) if data.get("holdout") is not None else None
    if holdout is not None and holdout == objective:
        raise fail(
            "holdout",
            "the holdout is the objective itself",
            "name a different metric, one never used to decide (e.g. test_bpb)",
        )
    constraints = tuple(
        _constraint(text, fail)
        for text in _strings(data.get("constraints", ()), "constraints", fail)
    )
    timeout = _number(data.get("timeout"), "timeout", fail, positive=True)
    min_delta = _number(data.get("min_delta", 0.0), "min_delta", fail, positive=False)
    runs = data.get("baseline_runs", 8)
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 2:
        raise fail(
            "baseline_runs",
            f"baseline_runs must be a whole number >= 2, got {runs!r}",
            "use 3 or more: the noise is estimated from the spread of these runs",
        )
    context = _globs(data.get("context", ()), "context", fail)
    for g in context:
        if not _expand([g], root):
            raise fail(
                "context",
                f"the context glob {g!r} matches no file under {root}",
                "check the spelling, or remove it",
            )

    lines = {k: key_lines[k] for k in key_lines}
    return Program(
        path=path,
        editable=editable,
        objective=objective,
        guards=guards,
        holdout=holdout,
        constraints=constraints,
        timeout=timeout,
        min_delta=min_delta if min_delta is not None else 0.0,
        baseline_runs=runs,
        context=context,
        search=_search(data.get("search"), editable, root, program_rel, fail),
        sandbox=_flag(data, "sandbox", fail),
        network=_flag(data, "network", fail),
        workers=_count(data, "workers", fail, least=1, default=None),
        gpus_per_worker=_count(data, "gpus_per_worker", fail, least=0, default=1),
        lean=_lean(data.get("lean", False), fail),
        shared=_shared(data.get("shared", ()), root, fail),
        instructions=instructions,
        lines=lines,
        program_relpath=program_rel,
    )


def _relative_to(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def _strings(value: Any, key: str, fail: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(
        isinstance(x, str) and x.strip() for x in items
    ):
        raise fail(
            key,
            f"{key} must be a list of non-empty strings, got {value!r}",
            f'write e.g. {key}: ["..."]',
        )
    return tuple(x.strip() for x in items)


def _globs(value: Any, key: str, fail: Any) -> tuple[str, ...]:
    globs = _strings(value, key, fail)
    for g in globs:
        if g.startswith("/") or re.match(r"^[A-Za-z]:", g) or g.startswith("~"):
            raise fail(
                key,
                f"the {key} glob {g!r} is absolute",
                "write it relative to the rootdir, e.g. src/model.py",
            )
        if "\\" in g:
            raise fail(key, f"the {key} glob {g!r} uses '\\'", "separate directories with '/'")
        if ".." in g.split("/"):
            raise fail(
                key,
                f"the {key} glob {g!r} leaves the rootdir with '..'",
                "only files under the rootdir can be named",
            )
    return globs


def _check_symlinks(globs: tuple[str, ...], root: Path, program_rel: str | None, fail: Any) -> None:
    real_root = root.resolve()
    matcher = [_glob_re(g) for g in globs]
    for rel in _expand(globs, root, exclude=program_rel):
        real = (root / rel).resolve()
        try:
            target = real.relative_to(real_root).as_posix()
        except ValueError:
            raise fail(
                "editable",
                f"{rel} is a symlink (or inside one) that leads outside the rootdir, to {real}",
                "replace the link with the real file, or drop it from the editable globs",
            ) from None
        if target == program_rel or not any(m.match(target) for m in matcher):
            raise fail(
                "editable",
                f"{rel} is a symlink to {target}, which the editable globs do not allow",
                "name the real file in editable, or remove the link",
            )


def _name(value: Any, key: str, fail: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_.\-]*$", value.strip()):
        raise fail(
            key,
            f"{key} must be a metric name, got {value!r}",
            f"write the name of a @metric test's metric, e.g. {key}: val_loss",
        )
    return value.strip()


def _number(value: Any, key: str, fail: Any, *, positive: bool) -> float | None:
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        need = "a number of seconds > 0" if positive else "a number >= 0"
        raise fail(
            key,
            f"{key} must be {need}, got {value!r}",
            f"e.g. {key}: {'420' if positive else '0.001'}",
        )
    return float(value)


def _constraint(text: str, fail: Any) -> Constraint:
    m = _CONSTRAINT_RE.match(text)
    bound: float | None = None
    if m:
        try:
            bound = float(m.group("bound"))
        except ValueError:
            bound = None
    if m is None or bound is None or not math.isfinite(bound):
        raise fail(
            "constraints",
            f"cannot read the constraint {text!r}",
            f"write 'metric OP number' with OP one of {', '.join(_OPS)}, e.g. 'peak_vram_gb <= 60'",
        )
    return Constraint(metric=m.group("metric"), op=m.group("op"), bound=bound, text=text.strip())


def _search(value: Any, editable: tuple[str, ...], root: Path, program_rel: Any, fail: Any) -> Any:
    from pytest_autoresearch.program.search_spec import SEARCH_EXAMPLE, HintError, parse_search

    try:
        return parse_search(value, lambda rel: rel in _expand(editable, root, exclude=program_rel))
    except HintError as exc:
        raise fail("search", str(exc), f"write e.g. {SEARCH_EXAMPLE}") from None


def _flag(data: dict[Any, Any], key: str, fail: Any) -> bool:
    value = data.get(key, True)
    if isinstance(value, bool):
        return value
    raise fail(key, f"{key} must be on or off, got {value!r}", f"write {key}: on (or {key}: off)")


def _count(data: dict[Any, Any], key: str, fail: Any, *, least: int, default: int | None) -> Any:
    value = data.get(key, default)
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= least):
        return value
    example = {"workers": 4, "gpus_per_worker": 2}.get(key, least)
    raise fail(
        key,
        f"{key} must be a whole number >= {least}, got {value!r}",
        f"write e.g. {key}: {example}",
    )


def _lean(value: Any, fail: Any) -> bool | tuple[str, ...]:
    if isinstance(value, bool):
        return value
    if isinstance(value, list) and all(
        isinstance(x, str) and re.match(r"^[A-Za-z0-9_.:\-]+$", x.strip()) for x in value
    ):
        return tuple(x.strip() for x in value) or True  # [] is lean with nothing kept
    raise fail(
        "lean",
        f"lean must be true, false or a list of pytest plugin names, got {value!r}",
        "write lean: true, or e.g. lean: [pytest_timeout] to keep a plugin loaded",
    )


def _shared(value: Any, root: Path, fail: Any) -> tuple[str, ...]:
    out = []
    for raw in _strings(value, "shared", fail) if value is not None else ():
        rel = _normalise(raw.rstrip("/"))
        if rel is None or any(ch in rel for ch in "*?["):
            raise fail(
                "shared",
                f"the shared path {raw!r} is not a plain path inside the rootdir",
                "name a file or folder relative to the rootdir, without '..' or wildcards, "
                "e.g. data/",
            )
        if _PROTECTED_PARTS.intersection(rel.casefold().split("/")):
            raise fail(
                "shared",
                f"the shared path {raw!r} is inside git's or the loop's own files",
                "share only your own untracked files, e.g. a dataset folder",
            )
        if not (root / rel).exists():
            raise fail(
                "shared",
                f"the shared path {raw!r} does not exist under {root}",
                "create it first (e.g. download the data), or remove it from shared",
            )
        out.append(rel)
    return tuple(dict.fromkeys(out))
