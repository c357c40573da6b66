"""pytest entry point (``-p no:autoresearch`` disables all of it).

Hooks for metric tests live here; the ``--autoresearch`` session lives in
``research_plugin`` and is registered from ``pytest_addhooks``.
Nothing heavy is imported at module level.

How a value travels: ``@metric`` (or ``record_metric``) records into the item's
``Recorder``; ``pytest_runtest_makereport`` puts the measurements on the report as
``report.autoresearch`` (a plain dict, so it survives pytest-xdist) and as junitxml
properties; the controller's ``MetricsSession`` collects them from
``pytest_runtest_logreport`` and writes the table, the JSON and baselines at the end.
"""

from __future__ import annotations

import argparse
import time
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
        early_config.stash[_CHANNEL_KEY] = EvalChannel.open(spec)
    except ChannelError as exc:
        raise pytest.UsageError(str(exc)) from None
    if hasattr(early_config.known_args_namespace, "numprocesses"):
        args += ["-n", "0"]  # last wins over addopts: an evaluation never starts xdist workers


@dataclass(frozen=True)
class Settings:
    """The metric options, read once from the command line or the ini file."""

    json_path: Path | None
    save: str | None
    compare: str | None
    fail_pct: float | None


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
        if spec is None and "record_metric" not in getattr(item, "fixturenames", ()):
            continue
        item.add_marker("metric")
        callspec = getattr(item, "callspec", None)
        item.stash[_INFO_KEY] = _ItemInfo(spec, callspec.id if callspec else None)
        found = True
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
        recorder = item.stash.get(_RECORDER_KEY, None)
        if recorder is None or call.when == "teardown":
            return report  # after a teardown error the values stand; the test's entry says so
        if call.when == "setup" and report.outcome == "passed":
            return report
        activate(None)
        entries = _entries(recorder, report)
        report.autoresearch = {"metrics": entries}
        for entry in entries:
            if entry["value"] is not None:
                # On the item, so the teardown report (which junitxml reads) carries them.
                item.user_properties.append((f"metric:{entry['name']}", entry["value"]))
        return report


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


# -- the controller's session --------------------------------------------------------------


def _test_outcome(report: pytest.TestReport) -> str:
    if report.when == "setup" and report.failed:
        return "error"
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    return report.outcome


def _message(report: pytest.TestReport) -> str | None:
    if report.passed:
        return None
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])  # (path, line, "Skipped: why")
    lines = (report.longreprtext or "").strip().splitlines()
    return "\n".join(lines[-10:])[-1000:] or None


class MetricsSession:
    """Collects measurements from reports (local or from xdist workers) and reports at the end."""

    def __init__(
        self, config: pytest.Config, settings: Settings, compare_data: dict[str, Any] | None
    ) -> None:
        self.config = config
        self.settings = settings
        self.compare_data = compare_data
        self.track_tests = settings.json_path is not None or settings.save is not None
        self.channel: Any = None  # an evaluation's EvalChannel (see pytest_configure)
        self.measurements: dict[str, Measurement] = {}
        self.tests: dict[str, dict[str, Any]] = {}
        self.problems: list[str] = []  # session-level errors (name collisions, write failures)
        self.regressions: list[str] = []
        self.comparisons: dict[str, Any] | None = None
        self.notes: list[str] = []
        self.started = time.perf_counter()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, "autoresearch", None)
        if data is None and not self.track_tests:
            return  # the common case: an ordinary test, nothing asked for
        if report.when == "call" or (report.when == "setup" and not report.passed):
            if self.track_tests:
                self.tests[report.nodeid] = {
                    "nodeid": report.nodeid,
                    "outcome": _test_outcome(report),
                    "duration": report.duration,
                    "metric": data is not None,
                    "message": _message(report),
                }
            for entry in (data or {}).get("metrics", ()):
                self._add(Measurement.from_dict(entry))
        elif report.when == "teardown" and report.failed and report.nodeid in self.tests:
            self.tests[report.nodeid].update(outcome="error", message=_message(report))

    def ordered(self) -> list[Measurement]:
        """Run order; by test id under xdist, where arrival order is up to the workers."""
        values = list(self.measurements.values())
        if self.config.pluginmanager.has_plugin("dsession"):
            values.sort(key=lambda m: m.nodeid)  # stable: a test's metrics keep their order
        return values

    def _add(self, m: Measurement) -> None:
        previous = self.measurements.get(m.name)
        if previous is not None and previous.nodeid != m.nodeid:
            self.problems.append(
                f"metric name {m.name!r} is reported by two tests: {previous.nodeid} and "
                f"{m.nodeid}; give one another name (@metric(name=...) or record_metric's name)"
            )
            return
        self.measurements[m.name] = m

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.problems:
            _fail(session)
        if self.compare_data is None and not self.track_tests:
            return  # nothing to compare or write: an ordinary run pays nothing here
        from pytest_autoresearch.metrics import baseline
        from pytest_autoresearch.metrics import json_file as metrics_json

        settings = self.settings
        measured = self.ordered()
        if self.compare_data is not None:
            found = baseline.compare(measured, self.compare_data)
            self.comparisons = {c.name: c for c in found}
            if settings.fail_pct is not None:
                self.regressions = baseline.regressions(found, settings.fail_pct)
        if self.regressions:
            _fail(session)
        if not self.track_tests:
            return
        data = metrics_json.build(
            measured,
            self.tests.values(),
            exitstatus=session.exitstatus,
            duration=time.perf_counter() - self.started,
            root=self.config.rootpath,
        )
        if self.channel is not None:
            self.channel.send(data)
        if settings.json_path is not None:
            try:
                metrics_json.write(settings.json_path, data)
            except OSError as exc:
                reason = exc.strerror or exc
                self._problem(session, f"could not write {settings.json_path}: {reason}")
        if settings.save is not None:
            if session.exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR):
                self._problem(
                    session, f"baseline {settings.save!r} not saved: the session was interrupted"
                )
                return
            try:
                path = baseline.save(self.config.rootpath, settings.save, data)
            except OSError as exc:
                reason = exc.strerror or exc
                self._problem(session, f"could not save baseline {settings.save!r}: {reason}")
                return
            failed = [m.name for m in measured if m.value is None]
            self.notes.append(
                f"saved baseline {settings.save!r} ({len(measured) - len(failed)} metrics) to "
                f"{_relative(path, self.config.rootpath)}"
                + (f"; without a value: {', '.join(failed)}" if failed else "")
            )

    def _problem(self, session: pytest.Session, message: str) -> None:
        self.problems.append(message)
        _fail(session)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        if self.measurements or self.problems:
            from pytest_autoresearch.metrics import table

            table.write(
                tr,
                self.ordered(),
                self.comparisons,
                baseline=self.settings.compare,
                problems=self.problems,
                fail_pct=self.settings.fail_pct,
            )
        for note in self.notes:
            tr.write_line(note)
        fail_pct = self.settings.fail_pct
        if self.regressions:
            tr.write_sep("=", "metric regressions", red=True, bold=True)
            for message in self.regressions:
                tr.write_line(message, red=True)
            tr.write_line(
                f"{len(self.regressions)} metric(s) got more than {fail_pct:g}% worse than "
                f"baseline {self.settings.compare!r} (--metrics-fail {fail_pct:g})",
                red=True,
            )
        elif fail_pct is not None and self.comparisons is not None:
            tr.write_line(
                f"no metric got more than {fail_pct:g}% worse than baseline "
                f"{self.settings.compare!r}",
                green=True,
            )


def _fail(session: pytest.Session) -> None:
    """Make the session exit non-zero (keeping a more specific failure status)."""
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
