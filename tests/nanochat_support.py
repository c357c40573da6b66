"""Helpers for the tests of the bundled nanochat example (example_project/).

Each test works on its own copy of the example with a data cache shared by the session (the
cache is built atomically, so copies never see half of one), offline, on the CPU profile.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from toyproject import LEAN_ENV

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "example_project"
METRIC_NODE = "tests/test_metric.py::test_train_cpu"
SMALL_BUDGET = "2e10"  # model FLOPs: about 18 steps of the CPU profile, a few seconds


def copy_example(dest: Path) -> Path:
    """A private copy of example_project/ (without caches, results or checkpoints)."""
    ignore = shutil.ignore_patterns("__pycache__", ".pytest_cache", ".autoresearch", "*.pt")
    return Path(shutil.copytree(EXAMPLE, dest / "example_project", ignore=ignore))


def shared_cache(tmp_path_factory) -> Path:
    """One data cache per test session (per xdist worker)."""
    return tmp_path_factory.getbasetemp() / "nanochat-cache"


def example_env(
    cache: Path, project: Path | None = None, *, lean: bool = True, **extra: str
) -> dict[str, str]:
    """Offline corpus, the given cache, the CPU profile even where CUDA exists; with
    ``lean``, only our plugin in the example's pytest runs and their evaluations."""
    env = dict(os.environ)
    for key in ("NANOCHAT_PROFILE", "NANOCHAT_TIME_BUDGET", "NANOCHAT_FLOP_BUDGET",
                "NANOCHAT_COMPILE", "NANOCHAT_BF16", "PYTEST_ADDOPTS",
                "NANOCHAT_DATA"):  # fmt: skip
        env.pop(key, None)
    env.update(NANOCHAT_CACHE=str(cache), NANOCHAT_FORCE_CPU="1", OMP_WAIT_POLICY="PASSIVE")
    if lean:
        env.update(LEAN_ENV)
    # This checkout's plugin, whatever is installed (the example's own runs need it too).
    paths = [str(project)] if project is not None else []
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(REPO)])
    env.update(extra)
    return env


def run_session(project: Path, env: dict[str, str], out: Path, *args: str, timeout: float = 300):
    """One pytest session of the example, as the research loop runs it; (process, report)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "autoresearch", f"--metrics-json={out}",
         "-p", "no:cacheprovider", "-p", "no:randomly", "-q", *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    report = json.loads(out.read_text()) if out.exists() else None
    return proc, report


def metric_values(report: dict) -> dict[str, float]:
    return {m["name"]: m["value"] for m in report["metrics"]}


def honest_values(tmp_path_factory) -> dict[str, float]:
    """The unchanged example's metric values at SMALL_BUDGET, from one session of guards and
    metric as the research loop runs them (`tests -x`), on a machine left alone.

    The CPU metric is deterministic, so one such run serves every test of the session (of
    the xdist worker) that compares a run against the honest code: measured once.
    """
    base = tmp_path_factory.getbasetemp()
    memo = base / "nanochat-honest.json"
    if memo.exists():
        return json.loads(memo.read_text())
    work = base / "nanochat-honest"
    project = copy_example(work)
    env = example_env(shared_cache(tmp_path_factory), NANOCHAT_FLOP_BUDGET=SMALL_BUDGET)
    proc, report = run_session(project, env, work / "report.json", "tests", "-x")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    values = metric_values(report)
    memo.write_text(json.dumps(values))  # floats round-trip exactly through JSON
    return values
