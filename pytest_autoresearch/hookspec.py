"""Hooks other plugins (and conftest.py files) may implement."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from pytest_autoresearch.executors.base import Executor
    from pytest_autoresearch.program.options import ExecutorSettings
    from pytest_autoresearch.program.program_md import Program
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


@pytest.hookspec(firstresult=True)
def pytest_autoresearch_make_executor(
    config: pytest.Config,
    settings: ExecutorSettings,
    root: Path,
    launcher: Any,
    record_dir: Path,
    program: Program,
) -> Executor | None:
    """Say where the experiments' evaluations run: an Executor, or None for one at a time.

    Called once per research session, after the research branch is checked out. None (the
    built-in answer for one worker) evaluates in the user's checkout, one experiment at a
    time; otherwise the object follows ``executors.base.Executor`` (``capacity``,
    ``submit``, ``as_completed``, ``shutdown``) and the loop keeps ``capacity`` trials in
    flight. ``settings``: ``workers`` (None: as many as a Ray cluster holds), ``ray``,
    ``gpus_per_worker``, ``workers_from``; ``launcher``: the session's isolation for
    evaluations on this machine; ``record_dir``: ``.autoresearch/<tag>``. The first
    non-None answer wins; the built-in one (worktrees, Ray) runs last. Raise
    ``pytest.UsageError`` to refuse the settings with one clear line::

        def pytest_autoresearch_make_executor(config, settings, root, launcher, record_dir,
                                              program):
            if not config.getini("slurm_partition"):
                return None  # not ours: the built-in executors decide
            from my_plugin.slurm import SlurmExecutor
            return SlurmExecutor(root, partition=config.getini("slurm_partition"),
                                 jobs=settings.workers or 8)
    """


@pytest.hookspec()
def pytest_autoresearch_experiment_done(record: dict, config: pytest.Config) -> None:
    """Called after each experiment is journaled, with its JSONL record.

    Useful for notifications::

        def pytest_autoresearch_experiment_done(record, config):
            if record["status"] == "keep":
                print("kept:", record["description"])
    """


@pytest.hookspec(firstresult=True)
def pytest_autoresearch_publish_check(config: pytest.Config) -> str | None:
    """Under ``--autoresearch-pr``, before any experiment: can this run be published?

    Return one line saying where it will go (printed at the start), or None if publishing is
    not yours; raise ``pytest.UsageError`` with a clear line when a setting is missing or
    refused, so the run stops before it spends hours. The first non-None answer wins; the
    built-in GitHub check runs last. A plugin for another forge implements this and
    ``pytest_autoresearch_publish``::

        def pytest_autoresearch_publish_check(config):
            if not os.environ.get("GITLAB_TOKEN"):
                raise pytest.UsageError("--autoresearch-pr needs GITLAB_TOKEN")
            return "GitLab merge request on " + os.environ["CI_PROJECT_PATH"]
    """


@pytest.hookspec(firstresult=True)
def pytest_autoresearch_publish(
    config: pytest.Config,
    result: Any,
    records: list[dict[str, Any]],
    branch: str,
    base: str,
) -> str | None:
    """Publish a finished research run; return where (a URL), or None if it is not yours.

    Called once after the run, only under ``--autoresearch-pr``, when at least one experiment
    was kept and the run was neither interrupted nor stopped by an error. ``result`` is the
    loop's ``LoopResult`` (objective, goal, baseline, best, sigma, kept, done, stop_reason,
    branch, record_dir, holdout..., cost); ``records`` the journal's experiment records
    (docs/architecture.md); ``branch`` the research branch (``autoresearch/<tag>``, already
    committed locally); ``base`` the branch the run started from, which must never be pushed
    to. The first non-None answer wins (``firstresult``): one run, one pull request. The
    built-in GitHub implementation (publish/github.py) runs last, so a plugin's answer
    replaces it. Raise an exception to report a failure (printed; the run exits non-zero;
    the branch and record stay)::

        def pytest_autoresearch_publish(config, result, records, branch, base):
            from pytest_autoresearch.publish import body
            subprocess.run(["git", "push", "gitlab", branch], check=True)
            return my_forge.open_merge_request(
                source=branch, target=base,
                title=body.title(result, records),
                description=body.body(result, records, branch=branch, base=base),
            )
    """
