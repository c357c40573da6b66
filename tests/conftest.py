"""Fixtures shared by the suite."""

from __future__ import annotations

import pytest
from toyproject import LEAN_ENV

# Set by GitHub Actions; a research run with a summary writes to it (publish/), and the
# PR tests set their own.
_CI_SETTINGS = ("GITHUB_TOKEN", "GITHUB_REPOSITORY", "GITHUB_API_URL", "GITHUB_STEP_SUMMARY")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "all_plugins: this test's inner pytest runs load every installed plugin (see pytester)",
    )


@pytest.fixture
def pytester(
    request: pytest.FixtureRequest, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    """pytester whose inner runs (and the evaluations of an inner research loop) load only
    our plugin: ``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1`` with ``-p autoresearch``. Every inner
    run otherwise imports Hypothesis (about 2 s on a 2-core machine), pytest-benchmark,
    xdist and anyio before its first test, and a real loop starts dozens of them.

    A test about other plugins (xdist workers, lean detection) carries
    ``@pytest.mark.all_plugins``; its inner runs still leave out Hypothesis' plugin and
    pytest-benchmark's (it warns in every run under xdist)."""
    if request.node.get_closest_marker("all_plugins"):
        monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest -p no:benchmark")
    else:
        for name, value in LEAN_ENV.items():
            monkeypatch.setenv(name, value)
    for name in _CI_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    return pytester
