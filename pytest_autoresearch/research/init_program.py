"""``pytest --autoresearch-init``: a starting program.md and AGENTS.md from the collected tests.

What the tests say is enough for a first program: the objective is the first metric
test's metric, the guards are the tests that are not metric tests, and the editable files
are proposed from the modules the metric tests import that live in the project (the code
being measured; never a test, a conftest or an installed package). Every field is
commented, because a proposal of editable files is a guess the user must confirm.

Nothing is overwritten: an existing program.md is left alone, and AGENTS.md gets its
section appended only when the section's marker is absent.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

INIT_KEY = pytest.StashKey[int]()
AGENTS_MARKER = "<!-- pytest-autoresearch: agent loop -->"

AGENTS_SECTION = """\
{marker}
## Research loop (pytest-autoresearch)

You improve `{objective}` ({goal}) by changing only the files program.md lists under
`editable:`. You propose; `pytest --autoresearch-try` judges. Loop:

1. `pytest --autoresearch-status` shows the best so far, the noise, the last experiments.
2. Make one change to the editable files. Do not commit it.
3. `pytest --autoresearch-try "one line: what you changed and why"` measures it in an
   isolated process, against the best, with the noise measured. It prints one line:
   `autoresearch-try: keep|discard|crash|refused <objective> <value> (<delta>) <reason>`
   and exits 0 keep, 1 discard, 2 crash or refused, 3 usage error
   (`--autoresearch-json` adds one JSON object).
4. keep: the change is committed on the research branch; build on it.
   discard, crash, refused: the tree is back at the best; the change is saved in the
   record (the verdict names the patch). Read the reason, then try something else.

Rules: never edit the metric tests, the guards, program.md, pytest's configuration or
anything outside `editable:` (the try is refused and the tree restored); never commit,
reset or switch branches yourself; never run the metric tests to decide yourself: only
the verdict counts. Run the tries one at a time. Keep scratch files and notes outside
the checkout (or in a path git ignores): a new file in the checkout is part of your change.
"""


def write_starting_point(session: pytest.Session) -> None:
    """Write program.md and the AGENTS.md section; the exit code in ``INIT_KEY``."""
    config = session.config
    tr = config.pluginmanager.get_plugin("terminalreporter")
    echo = tr.write_line if tr is not None else print
    root = Path(config.rootpath)
    metrics = [i for i in session.items if i.get_closest_marker("metric")]
    if not metrics:
        echo("autoresearch-init: no metric tests collected; write one with @metric first")
        config.stash[INIT_KEY] = 3
        return
    objective, goal = metric_of(metrics[0])
    guards = sorted({_rel(i.path, root) for i in session.items if i not in metrics} - {None})
    editable = editable_guess(metrics, root)
    program = root / "program.md"
    if program.exists():
        echo(f"autoresearch-init: {program} exists, left as it is")
    else:
        program.write_text(program_text(objective, goal, guards, editable), encoding="utf-8")
        echo(f"autoresearch-init: wrote {program} (objective {objective}; check editable:)")
    echo(f"autoresearch-init: {add_agents_section(root / 'AGENTS.md', objective, goal)}")
    config.stash[INIT_KEY] = 0


def metric_of(item: pytest.Item) -> tuple[str, str]:
    """(name, goal) of a metric test's first metric (its function name when undeclared)."""
    from pytest_autoresearch.metrics.metric import spec_of

    spec = spec_of(getattr(item, "obj", None))
    callspec = getattr(item, "callspec", None)
    if spec is not None:
        name = spec.names(callspec.id if callspec else None)[0]
        return name, spec.goals[next(iter(spec.goals))]
    base = getattr(item, "originalname", item.name)
    return (base[5:] if base.startswith("test_") else base), "min"


def _rel(path: Path | None, root: Path) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def editable_guess(metrics: list[pytest.Item], root: Path) -> list[str]:
    """Project files the metric tests' modules import (not tests, conftests or packages)."""
    tests = {_rel(i.path, root) for i in metrics}
    found: set[str] = set()
    for path in {i.path for i in metrics}:
        try:
            tree = ast.parse(Path(path).read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            continue
        for name in _imported(tree):
            module = sys.modules.get(name)
            rel = _rel(Path(getattr(module, "__file__", "") or "/"), root) if module else None
            if rel and rel not in tests and _is_code(rel):
                found.add(rel)
    return sorted(found)


def _imported(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def _is_code(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    skip = name == "conftest.py" or name.startswith("test_") or name.endswith("_test.py")
    return rel.endswith(".py") and not skip and ".autoresearch/" not in rel


def program_text(objective: str, goal: str, guards: list[str], editable: list[str]) -> str:
    """program.md with every field commented (YAML front matter, then the instructions)."""
    listed = json.dumps(editable or ["CHANGE-ME.py"])
    return f"""\
---
# Written by pytest --autoresearch-init from the collected tests. Check each line.
# editable: the only files an experiment may change (globs, relative to this folder).
# Proposed from the modules the metric tests import inside this project; narrow it to
# the code worth changing. Metric tests, guards and pytest's configuration are always
# protected, whatever this says.
editable: {listed}
# objective: the metric to improve (the first metric test's); its @metric goal
# ({goal}) gives the direction.
objective: {objective}
# guards: tests that must pass for a change to be kept (the collected tests that are not
# metric tests).
guards: {json.dumps(guards)}
# baseline_runs: how often the unchanged code is measured, for the noise (default 8).
# timeout: 600   # seconds per evaluation (default: from how long the baseline took)
---
# What to try

Describe the goal, what is worth trying and what is not. A proposer (an LLM, or an
outside agent using pytest --autoresearch-try) reads this.
"""


def add_agents_section(path: Path, objective: str, goal: str) -> str:
    """Append the agent-loop section once; say what was done."""
    section = AGENTS_SECTION.format(marker=AGENTS_MARKER, objective=objective, goal=goal)
    if not path.exists():
        path.write_text("# Instructions for coding agents\n\n" + section, encoding="utf-8")
        return f"wrote {path}"
    text = path.read_text(encoding="utf-8")
    if AGENTS_MARKER in text:
        return f"{path} already has the research-loop section, left as it is"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(("" if text.endswith("\n") else "\n") + "\n" + section)
    return f"appended the research-loop section to {path}"
