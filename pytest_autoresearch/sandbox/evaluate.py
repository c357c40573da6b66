"""Run the metric tests and guards in a fresh pytest subprocess and read back the metrics JSON.

``evaluate(root, metric_args, guard_args, timeout)`` returns an ``Evaluation``; a crash,
a timeout, a NaN or a failed guard is an outcome, never an exception. Numbers come only
from the metrics document the worker-side plugin sends once over an inherited pipe with a
per-run nonce (``channel.py``), never from the output, and never from a file the measured
code could rewrite afterwards. The child is started by a launcher (``isolation.py``: its own
PID/mount namespace where the system allows, else plain), in its own process group, and the
whole group is killed at the timeout, grandchildren included; it gets no API keys or tokens.
Its ``-n``/``--dist`` from addopts are overridden (``-n 0``), ``--ff``/``--lf``/``--sw`` work,
and its cache goes to a throwaway folder under ``tmp_root``.

Each evaluation gets a fresh scratch (``scratch.py``: HOME, TMPDIR, XDG_CACHE_HOME), so
nothing it writes there reaches a later one; the launcher's declared caches are verified
before and after (``caches.py``). A rejected evaluation (``status="rejected"``: a cache
changed, or the worker's tamper evidence, ``tamper.py``) never carries a value.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pytest_autoresearch.sandbox.secrets import (
    is_secret_name,
    scrub,
    secret_values,
    without_secrets,
)

if TYPE_CHECKING:
    import subprocess

    from pytest_autoresearch.sandbox.channel import ResultChannel
    from pytest_autoresearch.sandbox.isolation import Launcher

__all__ = ["Evaluation", "MetricValue", "TestResult", "cleanup_stale", "evaluate", "scrub"]
__all__ += ["child_environment", "is_secret_name", "read_metrics_json"]

TAIL_LINES = 60
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
EVAL_ENV = "AUTORESEARCH_EVAL"  # set in every evaluation; research_plugin runs no loop there
TMP_PREFIX = "eval-"


@dataclass
class MetricValue:
    """One metric as the worker reported it; ``value`` is None when the test produced none."""

    name: str
    value: float | None
    samples: list[float]
    goal: str
    unit: str | None
    error: str | None


@dataclass
class TestResult:
    """One test that ran in the worker (call-phase outcome; setup errors are "error")."""

    __test__ = False  # not a pytest test class

    nodeid: str
    outcome: str
    duration: float
    message: str | None


@dataclass
class Evaluation:
    """What one run of the metric tests and guards produced."""

    status: str  # "ok" | "crash" | "timeout" | "rejected" (tampering: never a value)
    metrics: dict[str, MetricValue] = field(default_factory=dict)
    tests: list[TestResult] = field(default_factory=list)
    guards_passed: bool = False
    failed_guards: list[str] = field(default_factory=list)
    duration: float = 0.0
    returncode: int | None = None
    log_tail: str = ""  # last lines of the combined output, secrets scrubbed
    reason: str = ""  # one line: why it crashed or which guard failed; "" when all is well
    # Texts the tests attached (record_artifact): {name, test, text, cut}, bounded, scrubbed.
    artifacts: list[dict[str, Any]] = field(default_factory=list)


def evaluate(
    root: Path | str,
    metric_args: Sequence[str],
    guard_args: Sequence[str],
    timeout: float | None,
    *,
    launcher: Launcher | None = None,
    env: Mapping[str, str] | None = None,
    required: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    tmp_root: Path | str | None = None,
) -> Evaluation:
    """Run ``pytest <metric_args> <guard_args>`` in ``root`` in a fresh process, killed at timeout.

    ``launcher``: how the process is started (``isolation.make_launcher``); None is plain.
    ``required``: metric names that must have a value (e.g. the objective), else "crash".
    ``tmp_root``: where the log and the cache go (a folder the child cannot see, ideally);
    a system temp folder when None. Leftovers of a killed run: ``cleanup_stale(tmp_root)``.
    """
    from pytest_autoresearch.sandbox.caches import guard_of
    from pytest_autoresearch.sandbox.channel import ResultChannel
    from pytest_autoresearch.sandbox.isolation import plain_launcher
    from pytest_autoresearch.sandbox.scratch import apply, make_scratch

    launcher = launcher or plain_launcher()
    guard = guard_of(launcher)
    problem = guard.check("since the last evaluation") if guard is not None else ""
    if problem:  # a poisoned cache would change this measurement: do not take it
        return Evaluation(status="rejected", reason=problem)
    tmp = _make_tmp(tmp_root)
    log_path = tmp / "output.log"
    channel = ResultChannel()
    scratch, fresh = make_scratch(tmp, guard.paths if guard is not None else ())
    cmd = [
        sys.executable, "-m", "pytest", "-p", "autoresearch", channel.argument, "-q",
        # A throwaway cache: --ff/--lf/--sw from addopts work, and nothing lands in the repo.
        "-o", f"cache_dir={scratch / 'pytest-cache'}",
        *extra_args, *metric_args, *guard_args,
    ]  # fmt: skip
    base = dict(os.environ if env is None else env)
    secrets = secret_values(base)
    if "PYTHONUSERBASE" in base:
        fresh.pop("PYTHONUSERBASE", None)
    try:
        # The parent opens the log: under an isolated tmp_root the child cannot see its path.
        with open(log_path, "wb") as log:
            returncode, duration, timed_out = _run(
                launcher, cmd, Path(root), apply(child_environment(base), fresh), log,
                channel, timeout,
            )  # fmt: skip
        tail = scrub(_tail(log_path), secrets)
        return _verdict(
            guard, channel, timeout, timed_out, returncode, duration, tail, required, secrets
        )
    finally:
        channel.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _verdict(
    guard: Any, channel: Any, timeout: float | None, timed_out: bool, returncode: int,
    duration: float, tail: str, required: Sequence[str], secrets: Any,
) -> Evaluation:  # fmt: skip
    """What the finished run measured, in order: a poisoned cache, a timeout, tampering."""
    problem = guard.check("during this evaluation") if guard is not None else ""
    if problem:
        return Evaluation(
            status="rejected", duration=duration, returncode=returncode, log_tail=tail,
            reason=problem,
        )  # fmt: skip
    if timed_out:
        return Evaluation(
            status="timeout", duration=duration, returncode=returncode, log_tail=tail,
            reason=f"timed out after {timeout:g}s",
        )  # fmt: skip
    data, problem = channel.result()
    tamper = _tampering(data, channel.duplicates)
    if tamper:
        return Evaluation(
            status="rejected", duration=duration, returncode=returncode, log_tail=tail,
            reason=scrub(tamper, secrets),
        )  # fmt: skip
    return _interpret(data, problem, returncode, duration, tail, required, secrets)


# Set by pytest and pytest-xdist for the process they run tests in. An evaluation is a
# fresh session of its own: inherited, they would tell plugins it is an xdist worker.
_SESSION_VARS = ("PYTEST_XDIST_", "PYTEST_CURRENT_TEST")


def child_environment(base: Mapping[str, str]) -> dict[str, str]:
    """The evaluation's environment: ``base`` without secrets, plus the evaluation marker."""
    env = {k: v for k, v in without_secrets(base).items() if not k.startswith(_SESSION_VARS)}
    env[EVAL_ENV] = "1"
    return env


def _make_tmp(tmp_root: Path | str | None) -> Path:
    """A fresh folder named after this process, so ``cleanup_stale`` knows whose it is."""
    parent, prefix = _tmp_place(tmp_root)
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))


def _tmp_place(tmp_root: Path | str | None) -> tuple[Path, str]:
    if tmp_root is None:
        return Path(tempfile.gettempdir()), "autoresearch-" + TMP_PREFIX
    return Path(tmp_root), TMP_PREFIX


def cleanup_stale(tmp_root: Path | str | None = None) -> int:
    """Remove evaluation folders left by processes that are gone (a kill -9); how many."""
    parent, prefix = _tmp_place(tmp_root)
    try:
        entries = list(parent.iterdir())
    except OSError:
        return 0
    removed = 0
    for path in entries:
        pid = path.name.removeprefix(prefix).split("-", 1)[0]
        if not path.name.startswith(prefix) or not pid.isdigit() or not path.is_dir():
            continue
        if int(pid) != os.getpid() and pid_alive(int(pid)):
            continue  # another run's evaluation, still going
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the subprocess ---------------------------------------------------------------------


def _run(
    launcher: Launcher,
    cmd: list[str],
    cwd: Path,
    env: dict[str, str],
    log: IO[bytes],
    channel: ResultChannel,
    timeout: float | None,
) -> tuple[int | None, float, bool]:
    """Run ``cmd`` in its own process group, output to ``log``; (returncode, seconds, timed out)."""
    start = time.monotonic()
    # A file, not a pipe, for the output: a chatty training loop cannot block on a full pipe.
    proc = launcher.popen(cmd, cwd=cwd, env=env, stdout=log, pass_fds=channel.pass_fds)
    channel.started()
    timed_out = False
    try:
        timed_out = not channel.pump(proc, None if timeout is None else start + timeout)
    finally:
        # Also on Ctrl-C, and after a normal exit: no grandchild outlives its evaluation.
        _kill_group(proc)
        channel.drain()
    return proc.returncode, time.monotonic() - start, timed_out


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, wait a little, then SIGKILL whatever is left."""
    if os.name != "posix":  # pragma: no cover - no process groups
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        return
    pgid = proc.pid  # start_new_session made the child its group leader
    if not _signal_group(pgid, signal.SIGTERM):
        proc.wait()
        return
    deadline = time.monotonic() + KILL_GRACE
    while time.monotonic() < deadline:
        proc.poll()
        if not _group_alive(pgid):
            break
        time.sleep(0.02)
    _signal_group(pgid, signal.SIGKILL)
    proc.wait()


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _tail(path: Path, lines: int = TAIL_LINES, max_bytes: int = 64_000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


# -- reading the metrics JSON -----------------------------------------------------------


def _tampering(data: dict[str, Any] | None, duplicates: int) -> str:
    """Why the worker's report cannot be trusted (``tamper.py``'s findings), or ""."""
    found = data.get("tamper") if isinstance(data, dict) else None
    if isinstance(found, list) and found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        return f"tampering detected in the evaluation: {str(found[0])[:300]}{more}"
    if duplicates:
        return (
            "tampering detected in the evaluation: the results channel carried "
            f"{duplicates + 1} messages with this run's nonce (the plugin sends one)"
        )
    return ""


def _interpret(
    data: dict[str, Any] | None,
    problem: str,
    returncode: int | None,
    duration: float,
    tail: str,
    required: Sequence[str],
    secrets: Sequence[str],
) -> Evaluation:
    """The Evaluation for the worker's document (``data``), or for its absence (``problem``)."""
    ev = Evaluation(status="crash", duration=duration, returncode=returncode, log_tail=tail)
    try:
        if data is None:
            raise ValueError(problem)
        check_document(data)
    except ValueError as exc:
        ev.reason = scrub(f"{exc} (pytest exit code {returncode}): {_error_line(tail)}", secrets)
        return ev
    from pytest_autoresearch.sandbox.channel import artifacts_of

    ev.artifacts = artifacts_of(data, secrets)
    ev.metrics = {m.name: m for m in _metrics(data, secrets)}
    ev.tests = [_test(t, secrets) for t in data.get("tests") or []]
    metric_ids = {t["nodeid"] for t in data.get("tests") or [] if t.get("metric")}
    metric_ids |= {m.get("nodeid") for m in data.get("metrics") or [] if m.get("nodeid")}
    bad_tests = [t for t in ev.tests if t.nodeid in metric_ids and t.outcome in _FAILED]
    bad_metrics = [m for m in ev.metrics.values() if m.value is None and m.error]
    missing = [name for name in required if ev.metrics.get(name) is None]
    missing += [n for n in required if n in ev.metrics and ev.metrics[n].value is None]
    failed_guards = [t for t in ev.tests if t.nodeid not in metric_ids and t.outcome in _FAILED]
    ev.failed_guards = [t.nodeid for t in failed_guards]
    ev.guards_passed = not failed_guards
    if bad_metrics:
        m = bad_metrics[0]
        error = _last_line(m.error)
        ev.reason = error if m.name in error else f"metric {m.name}: {error}"
    elif bad_tests:
        t = bad_tests[0]
        ev.reason = f"{t.nodeid} {t.outcome}: {_last_line(t.message) or _error_line(tail)}"
    elif missing:
        ev.reason = f"metric {missing[0]}: no value reported ({_error_line(tail)})"
    elif not any(m.value is not None for m in ev.metrics.values()):
        ev.reason = f"no metric values were reported (pytest exit code {returncode}): " + (
            _error_line(tail)
        )
    else:
        ev.status = "ok"
        if failed_guards:
            t = failed_guards[0]
            ev.reason = f"guard {t.nodeid} {t.outcome}: {_last_line(t.message)}".rstrip(": ")
    ev.reason = scrub(ev.reason, secrets)
    return ev


_FAILED = ("failed", "error")


def read_metrics_json(path: Path) -> dict[str, Any]:
    """Load a version-1 metrics JSON; ValueError says what is wrong with it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError("the worker wrote no metrics file") from None
    except OSError as exc:
        raise ValueError(f"the metrics file is unreadable ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the metrics file is not valid JSON ({exc.msg})") from None
    return check_document(data, "the metrics file")


def check_document(data: Any, what: str = "the evaluation's results") -> dict[str, Any]:
    """``data`` if it is a version-1 metrics document; ValueError says what is wrong."""
    if not isinstance(data, dict) or data.get("version") != 1:
        version = data.get("version") if isinstance(data, dict) else None
        raise ValueError(f"{what} has version {version!r}, expected 1")
    if not isinstance(data.get("metrics"), list) or not isinstance(data.get("tests", []), list):
        raise ValueError(f"{what} has no 'metrics' list")
    return data


def _metrics(data: dict[str, Any], secrets: Sequence[str]) -> list[MetricValue]:
    out = []
    for m in data["metrics"]:
        if not isinstance(m, dict) or not m.get("name"):
            continue
        value = _number(m.get("value"))
        samples = [s for s in (_number(x) for x in m.get("samples") or []) if s is not None]
        error = m.get("error")
        if m.get("value") is not None and value is None:
            error = error or f"returned {m.get('value')!r}"
        if m.get("outcome", "passed") != "passed" and value is not None:
            value, error = None, error or f"test {m.get('outcome')}"
        out.append(
            MetricValue(
                name=str(m["name"]),
                value=value,
                samples=samples if value is not None else [],
                goal=str(m.get("goal") or "min"),
                unit=m.get("unit"),
                error=scrub(str(error), secrets) if error else None,
            )
        )
    return out


def _test(t: dict[str, Any], secrets: Sequence[str]) -> TestResult:
    message = t.get("message")
    return TestResult(
        nodeid=str(t.get("nodeid", "")),
        outcome=str(t.get("outcome", "")),
        duration=float(t.get("duration") or 0.0),
        message=scrub(str(message), secrets) if message else None,
    )


def _number(value: Any) -> float | None:
    """A finite float, or None (NaN and infinities are not values)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning)\b")


def _last_line(text: str | None) -> str:
    """The telling line of a failure text: the last ``E`` line that is not assert detail."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    errors = [ln[1:].strip() for ln in lines if ln.startswith("E ")]
    errors = [ln for ln in errors if not ln.startswith(("+", "-", "?", "where ", "At index"))]
    raised = [ln for ln in errors if _EXCEPTION_LINE.match(ln)]
    if raised:  # the exception itself; with a chain, the last one raised
        return raised[-1]
    if errors:  # a bare assert: its first line, the rest is detail
        return errors[0]
    return lines[-1] if lines else ""


def _error_line(tail: str) -> str:
    """The most telling line of pytest output: the last ``E   ...`` or error line."""
    lines = [ln.rstrip() for ln in tail.splitlines() if ln.strip()]
    if any(ln.startswith("E ") for ln in lines):
        return _last_line(tail)
    for ln in reversed(lines):
        if re.search(r"Error|error:|ERROR", ln) and not re.match(r"^=+ .* =+$", ln):
            return ln.strip()
    return lines[-1].strip() if lines else "no output"
