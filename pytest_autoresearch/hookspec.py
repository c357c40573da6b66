"""Hooks other plugins (and conftest.py files) may implement."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_autoresearch.proposers.base import Proposer


@pytest.hookspec(firstresult=True)
def pytest_autoresearch_make_proposer(name: str, config: pytest.Config) -> Proposer | None:
    """Build the proposer called ``name``, or return None if it is not yours.

    The first non-None answer wins. Built-in names are ``optuna``, ``anthropic``
    and ``openai``; a plugin adds its own name like this::

        def pytest_autoresearch_make_proposer(name, config):
            if name == "grid":
                from my_plugin.grid import GridProposer
                return GridProposer(step=config.getini("grid_step"))
            return None
    """


@pytest.hookspec()
def pytest_autoresearch_experiment_done(record: dict, config: pytest.Config) -> None:
    """Called after each experiment is journaled, with its JSONL record.

    Useful for notifications::

        def pytest_autoresearch_experiment_done(record, config):
            if record["status"] == "keep":
                print("kept:", record["description"])
    """
