"""Fixtures shared by the suite."""

from __future__ import annotations

import pytest

# Set by GitHub Actions; a research run with a summary writes to it (publish/), and the
# PR tests set their own.
_CI_SETTINGS = ("GITHUB_TOKEN", "GITHUB_REPOSITORY", "GITHUB_API_URL", "GITHUB_STEP_SUMMARY")


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytester whose inner runs load neither Hypothesis' plugin (it re-imports all of
    hypothesis in every in-process run, about 2 s each on a 2-core machine) nor
    pytest-benchmark's (it warns in every run under xdist): our plugin needs neither."""
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest -p no:benchmark")
    for name in _CI_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    return pytester
