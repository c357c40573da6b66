"""A tiny research project in a real git repository, for end-to-end loop tests.

``toy/model.py`` holds the editable constant ``X``; the metric is ``abs(X - 3)``.
A scripted proposer (registered by the project's conftest.py through the
``pytest_autoresearch_make_proposer`` hook) replays edits from ``script.json``,
one step per experiment, so a test decides exactly what each experiment does.
"""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
from pathlib import Path

# Inner pytest runs (and the evaluations of an inner loop) that load only our plugin: every
# other installed plugin (Hypothesis, benchmark, xdist, anyio) costs each run its import,
# 0.8 s on an idle 2-core VM, more under load, and a loop starts one run per evaluation.
LEAN_ENV = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTEST_ADDOPTS": "-p autoresearch"}

PROGRAM = """\
---
editable: ["toy/model.py"]
objective: loss
guards: ["tests/test_guard.py"]
timeout: {timeout}
baseline_runs: 2
---
# What to try
Move X toward the value that minimises the loss.
"""

CONFTEST = '''
import json
from pathlib import Path

from pytest_autoresearch.proposers.base import Proposal, ProposerError


class ScriptedProposer:
    """Replays script.json: step k is experiment k (1-based, cycling)."""

    name = "scripted"

    def __init__(self, root):
        self.steps = json.loads((Path(root) / "script.json").read_text())
        self.repairs = 0

    def _apply(self, root, writes):
        for rel, text in writes.items():
            path = Path(root) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def propose(self, ctx):
        step = self.steps[(ctx.experiment - 1) % len(self.steps)]
        if step.get("error"):
            raise ProposerError(step["error"])
        self._apply(ctx.root, step.get("write", {}))
        return Proposal(step["description"], params=step.get("params"))

    def repair(self, ctx, failure):
        step = self.steps[(ctx.experiment - 1) % len(self.steps)]
        if "repair" not in step:
            return None
        self.repairs += 1
        self._apply(ctx.root, step["repair"])
        return Proposal(step["description"] + " (repaired)")

    def observe(self, ctx, proposal, outcome):
        pass

    def close(self):
        pass


def pytest_autoresearch_make_proposer(name, config):
    if name == "scripted":
        return ScriptedProposer(config.rootpath)
    return None
'''

METRIC_TEST = """
from pytest_autoresearch import metric

import toy.model as model


@metric(goal="min")
def test_loss():
    return abs(model.X - 3.0)
"""

GUARD_TEST = """
import toy.model as model


def test_x_is_sane():
    assert model.X < 100
"""


def model_source(x: float, extra: str = "") -> str:
    """The editable file with X set to ``x`` (plus optional code after it)."""
    return f"# The knob the research loop turns.\nX = {x!r}  # search: -20..20\n{extra}"


def default_sigint() -> None:
    """``preexec_fn`` for a child a test will send SIGINT: Ctrl-C's default handling.

    A job started in the background by a shell without job control inherits SIGINT as
    ignored, and Python then installs no KeyboardInterrupt handler: the signal would be lost.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def git(root: Path, *args: str, identity: bool = False) -> str:
    """Run git in ``root``; ``identity`` commits as a tester where no user is configured."""
    who = ["-c", "user.name=t", "-c", "user.email=t@e"] if identity else []
    out = subprocess.run(["git", *who, *args], cwd=root, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def make_toy(root: Path, steps: list[dict], *, x: float = 10.0, timeout: float = 20) -> Path:
    """Write the toy project into ``root``, commit it on ``main``; return ``root``."""
    files = {
        "program.md": PROGRAM.format(timeout=timeout),
        "pytest.ini": "[pytest]\ntestpaths = tests\npythonpath = .\n",
        "conftest.py": CONFTEST,
        "script.json": json.dumps(steps, indent=1),
        "toy/__init__.py": "",
        "toy/model.py": model_source(x),
        "tests/test_metric.py": METRIC_TEST,
        "tests/test_guard.py": GUARD_TEST,
        ".gitignore": ".autoresearch/\n__pycache__/\n*.flag\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text) if rel.endswith(".md") else text)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "toy@example.com")
    git(root, "config", "user.name", "Toy")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "toy project")
    return root


def step(
    description: str, x: float | None = None, *, extra: str = "", files: dict | None = None
) -> dict:
    """One scripted experiment: set X, and/or write other files ({path: text})."""
    out: dict = {"description": description, "write": dict(files or {})}
    if x is not None:
        out["write"]["toy/model.py"] = model_source(x, extra)
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


# -- two knobs: for K workers in flight -------------------------------------------------

TWO_KNOBS_PROGRAM = """\
---
editable: ["toy/model.py", "toy/other.py"]
objective: loss
guards: ["tests/test_guard.py"]
timeout: 30
baseline_runs: 2
---
Move X and Y toward the values that minimise the loss.
"""

TWO_KNOBS_METRIC = """
from pytest_autoresearch import metric

import toy.model as model
import toy.other as other


@metric(goal="min")
def test_loss():
    return abs(model.X - 3.0) + abs(other.Y - 1.0)
"""


def other_source(y: float, extra: str = "") -> str:
    return f"Y = {y!r}  # search: -20..20\n{extra}"


def make_two_knobs(root: Path, steps: list[dict]) -> Path:
    """The toy with two editable files (X in toy/model.py, Y in toy/other.py): two
    candidates in flight can both be real gains, or collide on one file."""
    make_toy(root, steps)
    (root / "program.md").write_text(TWO_KNOBS_PROGRAM)
    (root / "toy" / "other.py").write_text(other_source(5.0))
    (root / "tests" / "test_metric.py").write_text(TWO_KNOBS_METRIC)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "two knobs")
    return root


def ystep(description: str, y: float, extra: str = "") -> dict:
    return {"description": description, "write": {"toy/other.py": other_source(y, extra)}}
