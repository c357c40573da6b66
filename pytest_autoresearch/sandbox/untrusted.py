"""``run_untrusted``: a metric test runs the code under optimisation in a sandbox of its own.

A metric test that imports the editable code runs it in its own process: that code can read
whatever the test can (the answer key, the held-out split), patch the test in memory, and
report its own cost. When a metric must not trust it, the test runs it as a command instead:

    result = run_untrusted(
        [sys.executable, "train.py"], hide=["data/val"], cpu_limit=60, wall_limit=120
    )
    assert result.ok, result.reason
    score = evaluate(Path("model.bin"), Path("data/val"))   # the test, with the answer key

The command runs in a new user, PID, mount and IPC namespace (``isolation``/``boot.py``): the
``hide`` paths are covered by an empty tmpfs (a file by ``/dev/null``): not there at all,
not merely read-only; everything but the working directory and ``writable`` is read-only;
``HOME`` and ``TMPDIR`` are a fresh scratch that vanishes with it; it cannot see the test's
process. Its CPU time and wall clock are measured *here*, from outside: the CPU time of the
whole process tree (``/proc`` while it runs, ``wait4`` rusage at the end, which includes
every descendant: the namespace's init reaps them all), and past a limit the tree is killed.
What the child prints about its own cost changes nothing.

Where namespaces are unavailable, a call with ``hide`` raises ``UntrustedError`` (the answer
key would be readable); without ``hide`` it runs under a reaper that still measures and kills
the whole tree, and ``result.isolation`` says so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

TICK = 0.02  # seconds between looks at the process tree
KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL at a limit
MAX_OUTPUT = 16 * 1024 * 1024


class UntrustedError(Exception):
    """The sandbox asked for cannot be had here; the message says why and what to do."""


@dataclass(frozen=True)
class UntrustedResult:
    """What the command did, measured by the harness."""

    status: str  # "ok" | "failed" (non-zero exit) | "cpu_limit" | "wall_limit"
    returncode: int | None  # None when the harness killed it at a limit
    stdout: str
    stderr: str
    wall_s: float  # wall clock from start to exit, measured here
    cpu_s: float  # user + system CPU seconds of the whole process tree, measured here
    max_rss_mb: float  # the largest resident set of any process in the tree
    reason: str  # "" when ok; else one line: the limit and the measured use, or the exit
    isolation: str  # how it was run (the launcher's line)
    truncated: bool = False  # stdout or stderr longer than max_output (the head is kept)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def run_untrusted(
    cmd: Sequence[str],
    *,
    cwd: Path | str | None = None,
    hide: Sequence[Path | str] = (),
    writable: Sequence[Path | str] = (),
    cpu_limit: float | None = None,
    wall_limit: float | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | str | int | None = None,
    network: bool = True,
    max_output: int = MAX_OUTPUT,
) -> UntrustedResult:
    """Run ``cmd`` sandboxed; its output and resource use as the harness measured them.

    ``hide``: paths the command must not see (absolute, or relative to ``cwd``).
    ``writable``: paths outside ``cwd`` it may write and keep; everything else but ``cwd``
    and its fresh HOME/TMPDIR is read-only. ``cpu_limit``/``wall_limit``: seconds; past one,
    the whole tree is killed and the status says which. ``env``: its environment (default:
    this one without secrets). ``input``: its stdin, as bytes or text, or the read end of a
    pipe (a file descriptor) that the caller feeds while it runs; the caller keeps and
    closes its own copy. ``network=False``: loopback only.
    """
    from pytest_autoresearch.sandbox.scratch import apply, make_scratch
    from pytest_autoresearch.sandbox.secrets import without_secrets

    where = Path(cwd if cwd is not None else os.getcwd()).resolve()
    launcher = _launcher(where, hide, writable, network)
    tmp = Path(tempfile.mkdtemp(prefix="autoresearch-untrusted-"))
    try:
        _, fresh = make_scratch(tmp, ())
        base = dict(without_secrets(os.environ) if env is None else env)
        child_env = apply(base, fresh)
        stdin = _stdin(tmp, input)
        with open(tmp / "out", "w+b") as out, open(tmp / "err", "w+b") as err:
            try:
                proc = subprocess.Popen(
                    launcher.command(list(cmd)), cwd=where, env=child_env, stdin=stdin,
                    stdout=out, stderr=err, start_new_session=True,
                )  # fmt: skip
            finally:
                if hasattr(stdin, "close"):
                    stdin.close()  # the child has its own copy
            measured = _watch(proc, cpu_limit, wall_limit)
            stdout, cut_out = _read(out, max_output)
            stderr, cut_err = _read(err, max_output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    status, returncode, wall, cpu, rss, limit = measured
    return UntrustedResult(
        status=status,
        returncode=returncode,
        stdout=stdout,
        stderr=stderr,
        wall_s=wall,
        cpu_s=cpu,
        max_rss_mb=rss,
        reason=_reason(status, returncode, wall, cpu, limit, stderr),
        isolation=launcher.describe(),
        truncated=cut_out or cut_err,
    )


def _launcher(cwd: Path, hide: Sequence[Path | str], writable: Sequence[Path | str], net: bool):
    from pytest_autoresearch.sandbox.boot import PSEUDO_FS
    from pytest_autoresearch.sandbox.isolation import (
        IsolationError,
        IsolationSpec,
        NamespaceLauncher,
        git_paths,
        make_launcher,
    )

    hidden = tuple((cwd / Path(p).expanduser()).absolute() for p in hide)
    kept = tuple((cwd / Path(p).expanduser()).resolve() for p in writable)
    spec = IsolationSpec(
        network=net, readonly=git_paths(cwd), hidden=hidden, world=True, writable=kept
    )
    try:
        launcher = make_launcher(spec)
    except IsolationError as exc:
        raise UntrustedError(str(exc)) from None
    if launcher.name == "namespaces":
        return launcher
    if hidden:
        raise UntrustedError(
            f"run_untrusted cannot hide {', '.join(map(str, hidden))} here: "
            f"{launcher.describe()}; the code would read them. Run where user namespaces work "
            "(Linux; see docs/untrusted.md), or do not hide anything"
        )
    # No namespaces: the bootstrap alone, as a reaper that measures and kills the whole tree.
    reaper = {"hidden": [], "readonly": [], "lo": False, "pid": False, "drop": [], "probe": False}
    reaper["pseudo"] = PSEUDO_FS.split()
    return NamespaceLauncher([], reaper, launcher.describe())


def _stdin(tmp: Path, data: bytes | str | int | None) -> int | object:
    if data is None:
        return subprocess.DEVNULL
    if isinstance(data, int) and not isinstance(data, bool):
        return data  # a pipe the caller feeds while the command runs (it closes its own copy)
    path = tmp / "in"
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return open(path, "rb")  # noqa: SIM115 - closed with the process (the child has a copy)


def _watch(proc: subprocess.Popen, cpu_limit: float | None, wall_limit: float | None):
    """Wait for ``proc``, killing its tree at a limit: (status, rc, wall, cpu, rss MB, limit)."""
    start = time.monotonic()
    cpu_seen, status, limit = 0.0, "ok", None
    while True:
        pid, wait_status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        cpu_seen = max(cpu_seen, tree_cpu(proc.pid))
        if cpu_limit is not None and cpu_seen > cpu_limit:
            status, limit = "cpu_limit", cpu_limit
        elif wall_limit is not None and time.monotonic() - start > wall_limit:
            status, limit = "wall_limit", wall_limit
        if status != "ok":
            wait_status, usage = _kill_tree(proc.pid)
            break
        time.sleep(TICK)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(wait_status)  # reaped here: Popen must not
    cpu = max(cpu_seen, usage.ru_utime + usage.ru_stime)
    if status == "ok" and cpu_limit is not None and cpu > cpu_limit:
        status, limit = "cpu_limit", cpu_limit  # finished, but spent more than it may
    returncode = proc.returncode if status in ("ok", "failed") else None
    if status == "ok" and returncode != 0:
        status = "failed"
    return status, returncode, wall, cpu, usage.ru_maxrss / 1024, limit


def _kill_tree(root: int) -> tuple[int, os.struct_rusage]:
    """SIGKILL the tree (its group, and every descendant: a setsid one too); reap the root."""
    for pid in [root, *descendants(root)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(root, signal.SIGKILL)
    _, wait_status, usage = os.wait4(root, 0)
    return wait_status, usage


def _read(fh, limit: int) -> tuple[str, bool]:
    fh.seek(0)
    data = fh.read(limit + 1)
    return data[:limit].decode("utf-8", "replace"), len(data) > limit


def _reason(status: str, rc: int | None, wall: float, cpu: float, limit, stderr: str) -> str:
    if status == "cpu_limit":
        return f"used {cpu:.2f}s of CPU time (the whole process tree), over its {limit:g}s limit"
    if status == "wall_limit":
        return f"ran {wall:.2f}s of wall clock, over its {limit:g}s limit"
    if status == "failed":
        last = [ln for ln in stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        return f"exited with {rc}: {last[0][:300]}"
    return ""


# -- the process tree, read from /proc ---------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def descendants(root: int, stats: dict[int, list[str]] | None = None) -> list[int]:
    """Every live descendant of ``root`` (one scan of /proc, or ``stats`` of one)."""
    parents: dict[int, list[int]] = {}
    for pid, stat in (dict(_stats()) if stats is None else stats).items():
        parents.setdefault(int(stat[1]), []).append(pid)
    out, todo = [], [root]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and its descendants so far (own + reaped children's time)."""
    stats = dict(_stats())
    members = {root, *descendants(root, stats)}
    ticks = 0
    for pid in members:
        stat = stats.get(pid)
        if stat is not None:  # utime stime cutime cstime: fields 14-17 of /proc/<pid>/stat
            ticks += sum(int(x) for x in stat[11:15])
    return ticks / _TICKS


def _stats():
    """(pid, fields after the command name) for every process in /proc."""
    if not sys.platform.startswith("linux"):
        return
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                text = fh.read().decode("ascii", "replace")
        except OSError:
            continue
        yield int(name), text.rsplit(")", 1)[1].split()
