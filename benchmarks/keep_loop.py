"""The keep rule through the real loop: a noisy toy metric, half the proposals real 2σ gains.

    python benchmarks/keep_loop.py -n 60          # the session of issue 8 (tens of minutes)
    python benchmarks/keep_loop.py -n 12 --keep   # a short one; keep the project to look at

A throwaway git project: ``toy/model.py`` holds ``X``; the metric is ``|X - 3|`` plus
normal noise with σ = 0.5 (fresh entropy in every evaluation, as real noise is; the
test suite passes ``seed=`` for a reproducible stream drawn in evaluation order). A
scripted proposer alternates: odd experiments move X one unit toward 3 (a true gain of
1.0 = 2σ over the current best), even ones mirror X around 3 (the same loss: a change
that does nothing). ``pytest --autoresearch`` runs the session in a subprocess; the
journal says what was kept and how many evaluations each experiment cost.
Results go in docs/keep-rule.md ("Through the real loop").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIGMA = 0.5
STEP = 1.0  # one step toward 3 lowers the loss by STEP = 2 sigma

PROGRAM = """\
---
editable: ["toy/model.py"]
objective: loss
guards: ["tests/test_guard.py"]
timeout: 60
baseline_runs: {baseline_runs}
{cache}---
# What to try
Move X toward the value that minimises the loss.
"""

CONFTEST = '''
import re
from pathlib import Path

from pytest_autoresearch.proposers.base import Proposal

STEP = {step!r}


class Stepper:
    """Odd experiments: X one STEP toward 3 (a real gain). Even: X mirrored around 3.

    Each proposal carries its experiment number (``TRY``), so a gain proposed again after a
    discard is a new experiment, not a repeat sent back unmeasured."""

    name = "stepper"

    def __init__(self, root):
        self.path = Path(root) / "toy" / "model.py"

    def propose(self, ctx):
        x = float(re.search(r"^X = (\\S+)", self.path.read_text(), re.M)[1])
        if ctx.experiment % 2:
            new = x - STEP if x > 3 else x + STEP
            what = f"gain: X {{x:g}} -> {{new:g}}"
        else:
            new = 6.0 - x
            what = f"null: X {{x:g}} -> {{new:g}} (mirror, same loss)"
        # TRY numbers the proposal: the loop never measures one change twice on the same
        # best (research/dedupe.py), and this script re-proposes a discarded gain; the line
        # makes each proposal an experiment of its own without changing the loss.
        self.path.write_text(f"X = {{new!r}}\\nTRY = {{ctx.experiment}}\\n")
        return Proposal(what, params={{"X": new}})

    def repair(self, ctx, failure):
        return None

    def observe(self, ctx, proposal, outcome):
        pass

    def close(self):
        pass


def pytest_autoresearch_make_proposer(name, config):
    return Stepper(config.rootpath) if name == "stepper" else None
'''

METRIC = """
import random

from pytest_autoresearch import metric

import toy.model as model

SIGMA = {sigma!r}
SEED = {seed!r}
# Outside the project, a declared cache: the n-th evaluation leaves the n-th file there and
# draws the n-th number (a cache may grow; a file in it must never change).
DRAWS = {draws!r}


def noise():
    if SEED is None:
        return random.SystemRandom().gauss(0.0, SIGMA)
    import os

    n = len(os.listdir(DRAWS))
    while True:
        try:
            os.close(os.open(os.path.join(DRAWS, str(n)), os.O_CREAT | os.O_EXCL))
            break
        except FileExistsError:
            n += 1
    return random.Random(f"{{SEED}}-{{n}}").gauss(0.0, SIGMA)


@metric(goal="min")
def test_loss():
    return abs(model.X - 3.0) + noise()
"""

GUARD = """
import toy.model as model


def test_x_is_sane():
    assert abs(model.X) < 100
"""


def make_project(root: Path, *, x: float, baseline_runs: int, seed: int | None = None) -> Path:
    """The toy project in ``root/project``; with ``seed``, its noise is a seeded stream."""
    draws = root / "noise-draws" if seed is not None else None
    if draws is not None:
        draws.mkdir(parents=True, exist_ok=True)
    cache = f"cache: [{str(draws)!r}]\n" if draws is not None else ""
    root = root / "project"
    files = {
        "program.md": PROGRAM.format(baseline_runs=baseline_runs, cache=cache),
        "pytest.ini": "[pytest]\ntestpaths = tests\npythonpath = .\n",
        "conftest.py": CONFTEST.format(step=STEP),
        "toy/__init__.py": "",
        "toy/model.py": f"X = {x!r}\n",
        "tests/test_metric.py": METRIC.format(
            sigma=SIGMA, seed=seed, draws=str(draws) if draws else None
        ),
        "tests/test_guard.py": GUARD,
        ".gitignore": ".autoresearch/\n__pycache__/\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for cmd in (
        ["init", "-q", "-b", "main"],
        ["config", "user.email", "keep@example.com"],
        ["config", "user.name", "Keep"],
        ["add", "-A"],
        ["commit", "-q", "-m", "toy project"],
    ):
        subprocess.run(["git", *cmd], cwd=root, check=True, capture_output=True)
    return root


def run_session(root: Path, n: int, *, timeout: float) -> subprocess.CompletedProcess:
    # Only our plugin in the loop and its evaluations (they inherit the variable): the
    # others' imports cost about a second per evaluation on a 2-core machine.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "AUTORESEARCH"))}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    cmd = [
        sys.executable, "-m", "pytest", "-p", "autoresearch", "--autoresearch", "-n", str(n),
        "--autoresearch-tag", "keep", "--autoresearch-proposer", "stepper",
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


def summarise(root: Path) -> dict:
    """Kept and cost per kind of proposal, from the journal."""
    events = [
        json.loads(line)
        for line in (root / ".autoresearch" / "keep" / "experiments.jsonl").read_text().splitlines()
        if line.strip()
    ]
    out: dict = {"gain": [0, 0, 0], "null": [0, 0, 0]}  # [proposed, kept, evaluations]
    for e in events:
        if e.get("event") != "experiment":
            continue
        kind = "gain" if e.get("description", "").startswith("gain") else "null"
        out[kind][0] += 1
        out[kind][1] += e.get("status") == "keep"
        out[kind][2] += len(e.get("evaluations") or [])
    base = next((e for e in events if e.get("event") == "baseline"), {})
    out["baseline_runs"] = len(base.get("samples") or [])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description="the keep rule through the real loop")
    ap.add_argument("-n", type=int, default=60, help="experiments (default 60)")
    ap.add_argument("--baseline-runs", type=int, default=8)
    ap.add_argument("--keep", action="store_true", help="keep the project directory")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="keep_loop_"))
    root = make_project(tmp, x=3.0 + STEP * (args.n // 2 + 5), baseline_runs=args.baseline_runs)
    print(
        f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {args.n} experiments, sigma {SIGMA}, "
        f"real gains {STEP / SIGMA:g} sigma; project {root}"
    )
    started = time.perf_counter()
    proc = run_session(root, args.n, timeout=60.0 * args.n + 600)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-2000:])
        print(f"the session failed (exit {proc.returncode})")
        return 1
    s = summarise(root)
    for kind in ("gain", "null"):
        proposed, kept, evals = s[kind]
        print(
            f"  {kind:4s}: kept {kept} of {proposed} ({kept / max(proposed, 1):.0%}), "
            f"evaluations {evals / max(proposed, 1):.2f} each"
        )
    total = s["gain"][2] + s["null"][2]
    print(
        f"  all: {total / args.n:.2f} evaluations per experiment (plus {s['baseline_runs']} "
        f"baseline runs); wall {wall:.0f}s"
    )
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
