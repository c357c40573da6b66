"""Loading the plugin in an ordinary session imports nothing heavy (checked in fresh processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "anthropic", "openai", "optuna", "git", "matplotlib")

CHECK = f"""
import json, sys
heavy = {HEAVY!r}
loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
"""


def test_importing_the_package_and_plugin_imports_nothing_heavy() -> None:
    code = (
        "import pytest_autoresearch, pytest_autoresearch.plugin\n"
        "import pytest_autoresearch.research.hooks, pytest_autoresearch.hookspec\n"
        + CHECK
        + "print(json.dumps(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(done.stdout) == []


def test_a_session_with_metrics_imports_nothing_heavy(pytester: pytest.Pytester) -> None:
    # Only our plugin is loaded (the way the research loop's evaluator runs pytest), so a
    # heavy import can only come from it.
    pytester.makeconftest(
        f"""
import json, pathlib, sys

def pytest_unconfigure(config):  # after the summary and every report
    heavy = {HEAVY!r}
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
    pathlib.Path("loaded.json").write_text(json.dumps(loaded))
"""
    )
    pytester.makepyfile(
        """
        from pytest_autoresearch import metric

        @metric(goal="min", unit="ms", repeat=2)
        def test_latency():
            return 1.0

        def test_fixture(record_metric):
            record_metric("rps", 2.0, goal="max")
        """
    )
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    args = ["-p", "autoresearch", "--metrics-json", "m.json", "--metrics-save", "b"]
    for extra in ([], ["--metrics-compare", "b", "--metrics-fail", "1"]):
        done = subprocess.run(
            [sys.executable, "-m", "pytest", *args, *extra, "-p", "no:cacheprovider"],
            cwd=pytester.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "= metrics" in done.stdout  # the plugin really ran
        assert json.loads((pytester.path / "loaded.json").read_text()) == []
