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
    .cache: tuple[str, ...]             absolute paths evaluations may write and keep (verified
                                        append-only around each; the rest is read-only)
load_program(path, root) -> Program     reads and validates; raises ProgramError
parse_program(text, path, root) -> Program
glob_to_regex(glob) -> re.Pattern

Where it lives: ``model`` (Program, Constraint, ProgramError), ``globs`` (glob_to_regex),
``fields`` (one validator per key); this module reads the front matter and builds the
Program. Nothing here imports pytest; PyYAML is imported inside the parser.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pytest_autoresearch.program import fields
from pytest_autoresearch.program.globs import glob_to_regex
from pytest_autoresearch.program.model import Constraint, Program, ProgramError, where

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
    "cache": "paths outside the checkout that evaluations may write and keep (everything "
    'else there is read-only to them), e.g. ["~/.cache/huggingface"]; a trust decision',
    "smoke": "tests an LLM's check tool runs with the guards before a full evaluation, e.g. "
    '["tests/test_guards.py::test_export"] (docs/llm-proposers.md)',
    "check_timeout": "seconds one check may take (default 120, at most the evaluation's)",
    "notebook_tokens": "token budget of the lab notebook in an LLM's prompt (default 12000; "
    "--autoresearch-notebook-tokens and the ini key win)",
}


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
    path, root = Path(path), Path(root)
    front, instructions, end = _split_front_matter(text, path)
    data, node = _read_yaml(front, path)
    return _build(data, _key_lines(node, path), path, root, instructions, end + 1)


def _split_front_matter(text: str, path: Path) -> tuple[str, str, int]:
    """(front matter, instructions below it, index of its closing line)."""
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        raise ProgramError(
            f"{where(path, 1)}: program.md must start with YAML front matter between two "
            "'---' lines; start the file with:\n---\neditable: [\"train.py\"]\n"
            "objective: val_loss\n---",
            1,
        )
    end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), None)
    if end is None:
        raise ProgramError(
            f"{where(path, 1)}: the front matter opened on line 1 is never closed; "
            "add a line with '---' after the last key",
            1,
        )
    return "\n".join(lines[1:end]), "\n".join(lines[end + 1 :]).strip(), end


def _read_yaml(front: str, path: Path) -> tuple[dict[Any, Any], Any]:
    """The front matter as a dict, and its YAML node (None when empty) for the lines."""
    import yaml

    try:
        node = yaml.compose(front, Loader=yaml.SafeLoader)
        data = yaml.safe_load(front)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ProgramError(
            f"{where(path, line)}: the front matter is not valid YAML ({problem}); write one "
            "'key: value' a line, and quote values that contain ':' or '#'",
            line,
        ) from None
    if data is None:
        data, node = {}, None
    if not isinstance(data, dict) or (node is not None and node.id != "mapping"):
        raise ProgramError(
            f"{where(path, 2)}: the front matter must be 'key: value' lines, got "
            f"{type(data).__name__}; e.g. objective: val_loss",
            2,
        )
    return data, node


def _key_lines(node: Any, path: Path) -> dict[str, int]:
    """Each key's line in program.md; a key given twice is an error."""
    key_lines: dict[str, int] = {}
    for key_node, _value in node.value if node is not None else ():
        key = str(key_node.value)
        line = key_node.start_mark.line + 2
        if key in key_lines:
            raise ProgramError(
                f"{where(path, line)}: {key!r} is given twice (first on line "
                f"{key_lines[key]}); keep one",
                line,
            )
        key_lines[key] = line
    return key_lines


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
        return ProgramError(f"{where(path, line)}: {problem}; {fix}", line)

    _check_keys(data, fail)
    program_rel = _relative_to(path, root)
    editable = fields.editable_globs(data["editable"], root, program_rel, fail)
    objective = fields.name(data["objective"], "objective", fail)
    guards = fields.guard_paths(data.get("guards", ()), root, fail)
    holdout = fields.holdout_name(data.get("holdout"), objective, fail)
    constraints = tuple(
        fields.constraint(text, fail)
        for text in fields.strings(data.get("constraints", ()), "constraints", fail)
    )
    timeout = fields.number(data.get("timeout"), "timeout", fail, positive=True)
    min_delta = fields.number(data.get("min_delta", 0.0), "min_delta", fail, positive=False)
    runs = fields.baseline_runs(data.get("baseline_runs", 8), fail)
    context = fields.context_globs(data.get("context", ()), root, fail)

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
        search=fields.search(data.get("search"), editable, root, program_rel, fail),
        sandbox=fields.flag(data, "sandbox", fail),
        network=fields.flag(data, "network", fail),
        workers=fields.count(data, "workers", fail, least=1, default=None),
        gpus_per_worker=fields.count(data, "gpus_per_worker", fail, least=0, default=1),
        lean=fields.lean(data.get("lean", False), fail),
        shared=fields.shared(data.get("shared", ()), root, fail),
        cache=fields.caches(data.get("cache"), root, fail),
        smoke=fields.guard_paths(data.get("smoke", ()), root, fail, key="smoke"),
        check_timeout=fields.number(
            data.get("check_timeout"), "check_timeout", fail, positive=True
        ),
        notebook_tokens=fields.count(data, "notebook_tokens", fail, least=500, default=None),
        instructions=instructions,
        lines=lines,
        program_relpath=program_rel,
    )


def _check_keys(data: dict[Any, Any], fail: fields.Fail) -> None:
    """Unknown keys (with a did-you-mean) and the two required ones."""
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


def _relative_to(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None
