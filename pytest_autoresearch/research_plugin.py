"""pytest hooks for ``--autoresearch``: options, ``-n`` interception, hand-off to the loop."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("autoresearch")
    group.addoption("--autoresearch", action="store_true", help="run the research loop")
