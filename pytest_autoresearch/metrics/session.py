"""The metric side of one pytest session: measurements collected, then reported.

``MetricsSession`` is registered as a plugin by ``plugin.pytest_configure`` (like
pytest-benchmark's session): it collects the measurements that reports carry (local, or
from xdist workers), then at the end prints the table, writes the metrics JSON, saves or
compares baselines and fails the session on a regression or a broken metric.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_autoresearch.metrics.metric import Measurement


@dataclass(frozen=True)
class Settings:
    """The metric options, read once from the command line or the ini file."""

    json_path: Path | None
    save: str | None
    compare: str | None
    fail_pct: float | None


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
        self.artifacts: dict[tuple[str, str], dict[str, Any]] = {}  # (nodeid, name) -> entry
        self.problems: list[str] = []  # session-level errors (name collisions, write failures)
        self.regressions: list[str] = []
        self.comparisons: dict[str, Any] | None = None
        self.notes: list[str] = []
        self.started = time.perf_counter()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for entry in getattr(report, "autoresearch_artifacts", None) or ():
            self.artifacts[(str(entry.get("nodeid")), str(entry.get("name")))] = entry
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
            artifacts=self.artifacts.values(),
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
