"""pytest entry point (``-p no:autoresearch`` disables all of it).

Hooks for metric tests live here; the ``--autoresearch`` session lives in
``research_plugin`` and is registered from ``pytest_addhooks``.
Nothing heavy is imported at module level.
"""

from __future__ import annotations

import pytest


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_autoresearch import hookspec, research_plugin

    pluginmanager.add_hookspecs(hookspec)
    if not pluginmanager.is_registered(research_plugin):
        pluginmanager.register(research_plugin, "autoresearch.research")
