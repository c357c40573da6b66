"""lean.py: the plugins an evaluation keeps, and real evaluations started with only those.

The plugins are real ones installed with the dev extra: pytest-xdist (its ``worker_id``
fixture, its ``-n`` option), anyio (its ``anyio`` marker and ``anyio_backend`` fixture) and
pytest-benchmark. The research session is a real one (``pytester.inline_run``); the
evaluations are real ``evaluate()`` subprocesses.
"""

from __future__ import annotations

import os
import textwrap

import pytest

from pytest_autoresearch.research.lean import AUTOLOAD_ENV, LeanStart, installed_plugins, lean_start
from pytest_autoresearch.sandbox.evaluate import evaluate

pytestmark = pytest.mark.all_plugins  # which installed plugins an evaluation loads

pytest.importorskip("xdist")
pytest.importorskip("anyio")

METRICS = """
    import pytest
    from pytest_autoresearch import metric

    @metric(goal="min")
    def test_plain():
        return 2.0

    @metric(goal="min")
    def test_with_worker_id(worker_id):
        # xdist's fixture: "master" in a session without xdist workers
        return 1.0 if worker_id == "master" else 99.0
"""

ASYNC_GUARD = """
    import pytest

    @pytest.mark.anyio
    async def test_async_guard():
        assert True

    @pytest.fixture
    def anyio_backend():
        return "asyncio"
"""


def collected(pytester: pytest.Pytester, *args: str) -> pytest.Session:
    """The session of a real collection of the project (what the research session holds)."""
    rec = pytester.inline_run("--co", "-p", "no:cacheprovider", *args)
    return rec.getcall("pytest_collection_finish").session


def run(pytester: pytest.Pytester, start: LeanStart, ids: list[str], guards=()):
    """A real evaluation as the research loop starts it under lean."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    return evaluate(
        pytester.path, ids, list(guards), 60,
        extra_args=start.extra_args, env={**env, **start.env},
        tmp_root=pytester.path.parent / "eval-tmp",
    )  # fmt: skip


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_metrics=textwrap.dedent(METRICS))
    return pytester


def test_a_metric_using_a_plugin_fixture_keeps_that_plugin_and_evaluates(
    project: pytest.Pytester,
) -> None:
    session = collected(project)
    start = lean_start(session, ["test_metrics.py::test_with_worker_id"], [])
    assert start.plugins == ("xdist",)
    assert start.extra_args == ("-p", "xdist")
    assert start.env == {AUTOLOAD_ENV: "1"}
    assert "xdist (fixture worker_id)" in start.why
    assert "not loaded:" in start.why and "anyio" in start.why

    ev = run(project, start, ["test_metrics.py::test_with_worker_id"])
    assert ev.status == "ok", ev.reason + "\n" + ev.log_tail
    assert ev.metrics["with_worker_id"].value == 1.0


def test_a_needed_plugin_left_out_fails_the_evaluation_with_the_reason(
    project: pytest.Pytester,
) -> None:
    ids = ["test_metrics.py::test_with_worker_id"]
    dropped = LeanStart(extra_args=(), env={AUTOLOAD_ENV: "1"}, plugins=(), why="")
    ev = run(project, dropped, ids)
    assert ev.status == "crash"
    assert ev.reason.startswith("metric with_worker_id: ")
    assert ev.metrics["with_worker_id"].value is None
    # The log tail (shown when the baseline fails) and the test's entry name the fixture.
    assert "fixture 'worker_id' not found" in ev.log_tail
    (entry,) = ev.tests
    assert entry.outcome == "error" and "fixture 'worker_id' not found" in (entry.message or "")


def test_a_metric_needing_nothing_keeps_nothing_and_our_plugin_still_loads(
    project: pytest.Pytester,
) -> None:
    start = lean_start(collected(project), ["test_metrics.py::test_plain"], [])
    assert start.plugins == () and start.extra_args == ()
    assert start.env == {AUTOLOAD_ENV: "1"}
    assert start.why.startswith("lean: evaluations load none of the ")
    ev = run(project, start, ["test_metrics.py::test_plain"])  # -p autoresearch, no autoload
    assert ev.status == "ok", ev.reason + "\n" + ev.log_tail
    assert ev.metrics["plain"].value == 2.0


def test_a_guard_with_a_plugin_marker_keeps_the_plugin_and_passes(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(test_guard=textwrap.dedent(ASYNC_GUARD))
    start = lean_start(collected(project), ["test_metrics.py::test_plain"], ["test_guard.py"])
    assert start.plugins == ("anyio",)
    assert "marker anyio" in start.why
    ev = run(project, start, ["test_metrics.py::test_plain"], ["test_guard.py"])
    assert ev.status == "ok" and ev.guards_passed, ev.reason + "\n" + ev.log_tail
    assert [t.outcome for t in ev.tests if "guard" in t.nodeid] == ["passed"]


def test_keep_adds_a_plugin_by_entry_point_or_distribution_name(project: pytest.Pytester) -> None:
    pytest.importorskip("pytest_benchmark")
    session = collected(project)
    ids = ["test_metrics.py::test_plain"]
    by_dist = lean_start(session, ids, [], keep=["pytest-benchmark"])
    assert by_dist.plugins == ("benchmark",)
    assert "benchmark (listed under lean:)" in by_dist.why
    assert lean_start(session, ids, [], keep=["benchmark"]).extra_args == ("-p", "benchmark")
    with pytest.raises(pytest.UsageError, match="'pytest-nosuch' is not an installed") as info:
        lean_start(session, ids, [], keep=["pytest-nosuch"])
    assert "xdist" in str(info.value)  # it lists what is installed


def test_an_option_of_a_plugin_in_addopts_keeps_that_plugin(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\naddopts = -ra -n 0\n")
    start = lean_start(collected(project), ["test_metrics.py::test_plain"], [])
    assert start.plugins == ("xdist",)
    assert "option -n in addopts" in start.why


def test_an_ini_key_of_a_plugin_the_project_sets_keeps_that_plugin(
    project: pytest.Pytester,
) -> None:
    project.makeini("[pytest]\nrsyncdirs = .\n")  # pytest-xdist's
    start = lean_start(collected(project), ["test_metrics.py::test_plain"], [])
    assert start.plugins == ("xdist",)
    assert "ini key rsyncdirs" in start.why


def test_guards_not_collected_here_are_said_to_be_unchecked(project: pytest.Pytester) -> None:
    start = lean_start(collected(project), ["test_metrics.py::test_plain"], ["other/"])
    assert "guard(s) other/ not collected in this session" in start.why
    assert start.plugins == ()


def test_installed_plugins_are_the_entry_points_without_ours() -> None:
    names = [p.name for p in installed_plugins()]
    assert "xdist" in names and "autoresearch" not in names
    assert len(names) == len(set(names))


def test_a_plugin_blocked_with_p_no_stays_off_unless_listed(project: pytest.Pytester) -> None:
    project.makepyfile(test_guard=textwrap.dedent(ASYNC_GUARD))
    ids, guards = ["test_metrics.py::test_plain"], ["test_guard.py"]
    assert lean_start(collected(project), ids, guards).plugins == ("anyio",)
    # The anyio marker is still on the test, but "-p anyio" would undo the user's "-p no:anyio".
    session = collected(project, "-p", "no:anyio")
    assert lean_start(session, ids, guards).plugins == ()
    assert lean_start(session, ids, guards, keep=["anyio"]).plugins == ("anyio",)
