"""pytest entry point (``-p no:autoresearch`` disables all of it).

Hooks for metric tests live here; the ``--autoresearch`` session lives in
``research_plugin`` and is registered from ``pytest_addhooks``.
Nothing heavy is imported at module level.

How a value travels: ``@metric`` (or ``record_metric``) records into the item's
``Recorder``; ``pytest_runtest_makereport`` puts the measurements on the report as
``report.autoresearch`` (a plain dict, so it survives pytest-xdist) and as junitxml
properties; the controller's ``MetricsSession`` (metrics/session.py) collects them from
``pytest_runtest_logreport`` and writes the table, the JSON and baselines at the end.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_autoresearch.metrics.metric import (
    Measurement,
    MetricError,
    MetricSpec,
    Recorder,
    activate,
    check_goal,
    check_name,
    qualify,
    spec_of,
)
from pytest_autoresearch.metrics.session import MetricsSession, Settings


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_autoresearch import hookspec
    from pytest_autoresearch.research import hooks as research_plugin

    pluginmanager.add_hookspecs(hookspec)
    if not pluginmanager.is_registered(research_plugin):
        pluginmanager.register(research_plugin, "autoresearch.research")


# -- options -------------------------------------------------------------------------------


def _json_path(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a file path such as metrics.json, got ''")
    if text.endswith(("/", "\\")) or Path(text).is_dir():
        raise argparse.ArgumentTypeError(
            f"{text!r} is a directory; give a file path such as {text.rstrip('/')}/metrics.json"
        )
    return text


def _baseline_name(text: str) -> str:
    from pytest_autoresearch.metrics.baseline import BaselineError, check_name

    try:
        return check_name(text)
    except BaselineError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _percent(text: str) -> float:
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a percentage such as 5 or 2.5%, got {text!r}"
        ) from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(
            f"the allowed worsening must be 0% or more, got {text!r} (0 fails on any worsening)"
        )
    return value


# dest/ini name, flag, type, metavar, help
_OPTIONS: list[tuple[str, str, Callable[[str], Any], str, str]] = [
    (
        "metrics_json",
        "--metrics-json",
        _json_path,
        "PATH",
        "write every metric and test outcome, the machine and the git commit to PATH as "
        "versioned JSON (see docs/metrics.md)",
    ),
    (
        "metrics_save",
        "--metrics-save",
        _baseline_name,
        "NAME",
        "save this run's metrics as baseline NAME in .autoresearch/baselines/ at the rootdir",
    ),
    (
        "metrics_compare",
        "--metrics-compare",
        _baseline_name,
        "NAME",
        "compare metrics with saved baseline NAME: the table shows the baseline and the "
        "change in percent",
    ),
    (
        "metrics_fail",
        "--metrics-fail",
        _percent,
        "PCT",
        "with --metrics-compare: fail the session when any metric got more than PCT percent "
        "worse in its own direction (e.g. 5); improvements never fail",
    ),
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("autoresearch", "autoresearch (metric tests and the research loop)")
    for dest, flag, type_, metavar, help_text in _OPTIONS:
        group.addoption(flag, dest=dest, type=type_, default=None, metavar=metavar, help=help_text)
        parser.addini(dest, f"default for {flag}", default=None)
    # Internal: the research loop's evaluations report over inherited pipes (channel.py).
    group.addoption("--autoresearch-channel", dest="autoresearch_channel", help=argparse.SUPPRESS)


_CHANNEL_KEY = pytest.StashKey[Any]()


def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    """In an evaluation: take the results channel before any conftest or test module runs."""
    spec = getattr(early_config.known_args_namespace, "autoresearch_channel", None)
    if spec is None:
        return
    from pytest_autoresearch.sandbox.channel import ChannelError, EvalChannel

    try:
        channel = early_config.stash[_CHANNEL_KEY] = EvalChannel.open(spec)
    except ChannelError as exc:
        raise pytest.UsageError(str(exc)) from None
    early_config.stash[_WATCH_KEY] = _watch(channel, early_config.rootpath)
    if hasattr(early_config.known_args_namespace, "numprocesses"):
        args += ["-n", "0"]  # last wins over addopts: an evaluation never starts xdist workers


_WATCH_KEY = pytest.StashKey[Any]()


def _watch(channel: Any, root: Path) -> Any:
    """Tamper evidence for this evaluation (sandbox/tamper.py), before any project code runs.

    ``AUTORESEARCH_TAMPER_CHECK=off`` in the loop's environment turns it off (a false alarm
    on your code: say so in an issue); the experiment code cannot: it runs after this.
    """
    import os
    import sys

    if os.environ.get("AUTORESEARCH_TAMPER_CHECK", "").lower() in ("off", "0", "false"):
        return None

    from pytest_autoresearch.metrics import json_file, metric
    from pytest_autoresearch.metrics import session as metrics_session
    from pytest_autoresearch.sandbox import channel as channel_module
    from pytest_autoresearch.sandbox import tamper

    modules = [sys.modules[__name__], sys.modules["pytest_autoresearch"], metric]
    modules += [metrics_session, json_file, channel_module, tamper]
    reference = metric.metric(goal="min")(lambda: 0.0)  # every wrapper shares this code
    return tamper.watch(channel, root, modules, reference.__code__)


def read_settings(config: pytest.Config) -> Settings:
    """Command line first, then ini keys (validated like the options); usage errors say which."""
    values: dict[str, Any] = {}
    from_cli: set[str] = set()
    for dest, _flag, type_, _metavar, _help in _OPTIONS:
        value = config.getoption(dest)
        if value is not None:
            from_cli.add(dest)
        else:
            ini = config.getini(dest)
            if ini not in (None, "", []):
                try:
                    value = type_(str(ini).strip())
                except argparse.ArgumentTypeError as exc:
                    raise pytest.UsageError(f"ini key {dest} = {ini!r}: {exc}") from None
        values[dest] = value
    if config.getoption("autoresearch", False):
        given = [flag for dest, flag, *_ in _OPTIONS if dest in from_cli]
        if given:
            raise pytest.UsageError(
                f"{', '.join(given)} apply to ordinary test runs; under --autoresearch every "
                "result is recorded in .autoresearch/<tag>/ instead. Drop the option(s)."
            )
        return Settings(None, None, None, None)
    if values["metrics_fail"] is not None and values["metrics_compare"] is None:
        if "metrics_fail" in from_cli:
            raise pytest.UsageError(
                "--metrics-fail needs a baseline to compare with: add --metrics-compare NAME "
                "(save one first with --metrics-save NAME)"
            )
        values["metrics_fail"] = None  # an ini default only applies when comparing
    json_path = values["metrics_json"]
    if json_path is not None:
        base = Path(config.invocation_params.dir)
        if "metrics_json" not in from_cli and config.inipath is not None:
            base = config.inipath.parent  # an ini path is relative to the ini file
        json_path = base / json_path
    return Settings(
        json_path, values["metrics_save"], values["metrics_compare"], values["metrics_fail"]
    )


_SESSION_KEY = pytest.StashKey["MetricsSession"]()


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "metric: a metric test (@metric or the record_metric fixture); -m metric selects them",
    )
    settings = read_settings(config)
    if _is_worker(config):
        return  # workers only measure; the controller reports
    compare_data = None
    if settings.compare is not None:
        from pytest_autoresearch.metrics.baseline import BaselineError, load

        try:
            compare_data = load(config.rootpath, settings.compare)
        except BaselineError as exc:
            raise pytest.UsageError(str(exc)) from None
    session = MetricsSession(config, settings, compare_data)
    session.channel = config.stash.get(_CHANNEL_KEY, None)
    session.track_tests = session.track_tests or session.channel is not None
    config.stash[_SESSION_KEY] = session
    config.pluginmanager.register(session, "autoresearch.metrics")


# -- per item: mark, record, attach --------------------------------------------------------


@dataclass(frozen=True)
class _ItemInfo:
    spec: MetricSpec | None  # None for record_metric-only or hand-marked tests
    param_id: str | None


_INFO_KEY = pytest.StashKey[_ItemInfo]()
_RECORDER_KEY = pytest.StashKey[Recorder]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark metric tests (before -m deselects anything) and remember what they declare."""
    found = False
    for item in items:
        spec = spec_of(getattr(item, "obj", None))
        fixtures = getattr(item, "fixturenames", ())
        if spec is None and "record_metric" not in fixtures:
            found = found or "record_artifact" in fixtures  # artifacts need the item hooks
            continue
        item.add_marker("metric")
        callspec = getattr(item, "callspec", None)
        item.stash[_INFO_KEY] = _ItemInfo(spec, callspec.id if callspec else None)
        found = True
        watcher = config.stash.get(_WATCH_KEY, None)
        if watcher is not None and spec is not None:
            watcher.protect(item.nodeid, item.obj)
    if found and not config.pluginmanager.is_registered(MetricItemHooks):
        # Per-test hooks only when there is something to measure: a suite without metric
        # tests pays nothing per test.
        config.pluginmanager.register(MetricItemHooks, "autoresearch.items")


class MetricItemHooks:
    """Per-test hooks: give each metric test a Recorder and put its values on the report."""

    @staticmethod
    def pytest_runtest_setup(item: pytest.Item) -> None:
        info = item.stash.get(_INFO_KEY, None)
        if info is not None:
            # Active from setup on: decorated bodies record only into their own test's
            # recorder, and this spares a pytest_runtest_call hook.
            recorder = item.stash[_RECORDER_KEY] = Recorder(info.spec, info.param_id)
            activate(recorder)

    @staticmethod
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        _attach_artifacts(item, report, call.when)
        recorder = item.stash.get(_RECORDER_KEY, None)
        if recorder is None or call.when == "teardown":
            return report  # after a teardown error the values stand; the test's entry says so
        if call.when == "setup" and report.outcome == "passed":
            return report
        activate(None)
        watcher = item.config.stash.get(_WATCH_KEY, None)
        if watcher is not None:
            watcher.check_recorder(item.nodeid, recorder, Recorder, Measurement)
        entries = _entries(recorder, report)
        report.autoresearch = {"metrics": entries}
        for entry in entries:
            if entry["value"] is not None:
                # On the item, so the teardown report (which junitxml reads) carries them.
                item.user_properties.append((f"metric:{entry['name']}", entry["value"]))
        return report


_ARTIFACTS_KEY = pytest.StashKey[dict]()


def _attach_artifacts(item: pytest.Item, report: pytest.TestReport, when: str) -> None:
    """The test's artifacts on its call report (its setup report when setup failed), as
    plain dicts: they survive pytest-xdist like ``report.autoresearch``."""
    found = item.stash.get(_ARTIFACTS_KEY, None)
    if not found or when == "teardown" or (when == "setup" and report.passed):
        return
    report.autoresearch_artifacts = [  # type: ignore[attr-defined]
        {**a.as_dict(), "nodeid": report.nodeid} for a in found.values()
    ]


def _entries(recorder: Recorder, report: pytest.TestReport) -> list[dict[str, Any]]:
    if report.skipped:
        return []  # a skipped metric has no value; another test may report the same name
    out = []
    for m in recorder.measurements.values():
        m.nodeid, m.duration = report.nodeid, report.duration
        if not report.passed:
            m.outcome = "error" if report.when == "setup" else "failed"
            m.error = m.error or _crash_line(report)
        elif not m.samples:
            m.outcome, m.error = "failed", f"metric {m.name!r} recorded no value"
        out.append(m.as_dict())
    return out


def _crash_line(report: pytest.TestReport) -> str:
    """The first line of what the test raised ("RuntimeError: out of memory")."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = getattr(crash, "message", None) or str(report.longrepr or "")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if crash is None:  # a fixture lookup error starts with "file ..., line N": use its E lines
        lines = [ln.strip()[1:].strip() for ln in lines if ln.strip().startswith("E ")] or lines
    if not lines:
        return f"test {report.outcome} in {report.when}"
    return lines[0].removeprefix(f"{MetricError.__module__}.MetricError: ")[:500]


@pytest.fixture
def record_metric(request: pytest.FixtureRequest) -> Callable[..., float]:
    """Record a metric from a test body: ``record_metric("req_per_s", 1234.0, goal="max")``.

    Arguments: name, value, goal ("min" or "max", required), unit (optional). Recording the
    same name again adds a sample. Returns the value as a float.
    """
    node = request.node
    recorder = node.stash.get(_RECORDER_KEY, None)
    if recorder is None:
        callspec = getattr(node, "callspec", None)
        recorder = node.stash[_RECORDER_KEY] = Recorder(None, callspec.id if callspec else None)

    def record(name: str, value: object, goal: str | None = None, unit: str | None = None) -> float:
        __tracebackhide__ = True
        check_name(name, "record_metric(name, ...)")
        if goal is None:
            raise MetricError(
                f"record_metric({name!r}, ...) needs goal='min' or goal='max' "
                "(which direction is better)"
            )
        check_goal(goal, f"record_metric({name!r}, ...)")
        full = qualify(name, recorder.param_id)
        try:
            return recorder.record(full, value, goal, unit, verb="was given")
        except MetricError as exc:
            failed = recorder.measurements.setdefault(full, Measurement(full, goal, unit))
            failed.outcome, failed.error = "failed", str(exc)
            raise MetricError(str(exc)) from None  # afresh: the traceback ends at the test

    return record


@pytest.fixture
def record_artifact(request: pytest.FixtureRequest) -> Callable[[str, object], None]:
    """Attach a text to this test's result: ``record_artifact("train_log", log_text)``.

    For what a person would read besides the number: a training log, a loss curve. It goes
    into the metrics JSON (``artifacts``) and, in the research loop, into the experiment's
    record, where an LLM proposer sees the recent ones. The tail of a long text is kept
    (8,000 characters, the cut counted); the same name again replaces it; four per test.
    Works in any test, ``@metric`` tests included (ask for the fixture as an argument).
    """
    from pytest_autoresearch.metrics.artifacts import MAX_ARTIFACTS, make

    node = request.node
    found = node.stash.setdefault(_ARTIFACTS_KEY, {})
    manager = request.config.pluginmanager
    if not manager.is_registered(MetricItemHooks):  # asked for with getfixturevalue
        manager.register(MetricItemHooks, "autoresearch.items")

    def attach(name: str, text: object) -> None:
        __tracebackhide__ = True
        artifact = make(name, text)
        if artifact.name not in found and len(found) >= MAX_ARTIFACTS:
            raise MetricError(
                f"record_artifact({name!r}, ...): this test already attached {MAX_ARTIFACTS} "
                f"artifacts ({', '.join(found)}); join them into one text or reuse a name"
            )
        found[artifact.name] = artifact

    return attach


# -- the controller's session --------------------------------------------------------------
