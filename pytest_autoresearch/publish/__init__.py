"""Publishing a research run: the two steps ``session.py`` calls, around the loop.

- ``preflight(config, echo)``: before any experiment, under ``--autoresearch-pr``, asks the
  ``pytest_autoresearch_publish_check`` hook whether publishing will work (GitHub's
  built-in check: GITHUB_TOKEN, GITHUB_REPOSITORY, the remote, and a call that a 401, 403
  or 404 fails), so a bad setting is one clear line now, not after a 5-hour run.
- ``after_run(session, repo, echo)``: after the run, writes the summary to
  ``GITHUB_STEP_SUMMARY`` when set, then -- only under ``--autoresearch-pr``, when at least
  one experiment was kept, and the run was neither interrupted nor failed -- calls the
  ``pytest_autoresearch_publish`` hook (GitHub's pull request unless a plugin answers
  first). A publishing error is a red line and a non-zero exit; the branch and the record
  stay as they are.

GitHub's implementation (publish/github.py) is registered here, lazily, so an ordinary
pytest run never imports it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import pytest

__all__ = ["after_run", "pr_enabled", "preflight", "publish_reason", "write_step_summary"]

_GITHUB_PLUGIN = "autoresearch-github"
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


def pr_enabled(config: pytest.Config) -> bool:
    """--autoresearch-pr on the command line, else the ``autoresearch_pr`` ini key."""
    return bool(config.getoption("autoresearch_pr", False) or config.getini("autoresearch_pr"))


def _register(config: pytest.Config) -> None:
    pm = config.pluginmanager
    if not pm.has_plugin(_GITHUB_PLUGIN):
        from pytest_autoresearch.publish.github import GitHubPublisher

        pm.register(GitHubPublisher(), _GITHUB_PLUGIN)


def preflight(config: pytest.Config, echo: Callable[..., None]) -> None:
    """Check, before any experiment, that the run could be published; UsageError if not."""
    if not pr_enabled(config):
        return
    _register(config)
    where = config.hook.pytest_autoresearch_publish_check(config=config)
    if where is None:
        raise pytest.UsageError(
            "--autoresearch-pr: no publisher accepted this run (a plugin's "
            "pytest_autoresearch_publish_check returned nothing)"
        )
    echo(f"publish: {where}, if an experiment is kept")


def publish_reason(result: Any, records: list[dict[str, Any]], failed: bool) -> str | None:
    """Why this run is not published (None: publish it)."""
    if result is None:
        return "the run did not start"
    if getattr(result, "interrupted", False):
        return "the run was interrupted"
    if failed or getattr(result, "failed", False):
        return "the run stopped on an error"
    if not any(r.get("status") == "keep" for r in records):
        return "no experiment was kept"
    return None


def _base(repo: Any) -> str | None:
    """The branch the run started from; a detached start uses Actions' GITHUB_REF_NAME."""
    original = str(getattr(repo, "original", "") or "")
    if original and not _SHA_RE.match(original) and original != repo.branch:
        return original
    ref = os.environ.get("GITHUB_REF_NAME", "").strip()
    return ref if ref and ref != repo.branch else None


def write_step_summary(text: str) -> None:
    """Append ``text`` to the job's summary page when GitHub Actions provides one."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text.rstrip("\n") + "\n")
    except OSError:
        pass  # a summary page is a nicety; the run's result does not depend on it


def after_run(session: pytest.Session, repo: Any, echo: Callable[..., None]) -> None:
    """The publish step after the run (see the module docstring)."""
    from pytest_autoresearch.program.options import RESULT_KEY

    config = session.config
    found = config.stash.get(RESULT_KEY, None)
    if found is None:
        return
    result, records = found
    records = list(records)
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        from pytest_autoresearch.publish import body
        from pytest_autoresearch.publish.github import run_url

        base = _base(repo) or "?"
        text = body.body(result, records, branch=repo.branch, base=base, record_url=run_url())
        write_step_summary("\n".join([text, "", *body.chart(result, records)]))
    if not pr_enabled(config):
        return
    why_not = publish_reason(result, records, failed=session.testsfailed > 0)
    if why_not:
        echo(f"no pull request: {why_not}")
        return
    base = _base(repo)
    if base is None:
        echo(
            "no pull request: the run started on a detached HEAD; check out the base branch "
            "(or set GITHUB_REF_NAME) and rerun",
            red=True,
        )
        session.testsfailed += 1
        return
    _register(config)
    try:
        where = config.hook.pytest_autoresearch_publish(
            config=config, result=result, records=records, branch=repo.branch, base=base
        )
        if where:
            write_step_summary(f"\nPull request: {where}")
    except Exception as exc:  # any publisher's failure: the record and branch are kept
        from pytest_autoresearch.sandbox.secrets import scrub

        echo(f"publishing failed: {scrub(str(exc))}", red=True)
        echo(f"the branch {repo.branch} and the record are kept; publish by hand", red=True)
        session.testsfailed += 1
