"""Tamper evidence inside an evaluation: the plugin's recording path is the one it loaded.

Code under optimisation is imported into the pytest process that measures it, so it can
patch the plugin in memory (the recorder, the ``@metric`` wrapper, the session) or hunt the
results channel with ``gc`` and write a forged message first. No process boundary stops code
in the same process; this module makes the naive ways *visible*, and the loop rejects a run
that shows them. The hard guarantee, for a metric that needs one, is to run the code in its
own process: ``run_untrusted`` (docs/untrusted.md).

Installed only in evaluations (the plugin's ``pytest_load_initial_conftests``, when the
results channel is open), before any conftest or test module is imported:

- an audit hook (``sys.addaudithook``: it cannot be removed) that flags a code swap on the
  plugin's own functions or on a metric test (``object.__setattr__``: ``__code__``,
  ``__defaults__``, ``__class__``; a class or module attribute swap raises no audit event,
  the report-time check finds those), reference hunting around
  them (``gc.get_referrers``/``get_referents``), and, from the project's own files only
  (not from pytest, numpy, torch or the standard library, which use introspection), walking
  every object with ``gc.get_objects``, reading memory with ``ctypes`` (``from_address``,
  ``string_at``), or opening the channel's fd or ``/proc/*/mem``. A finding is sent *at once*
  as the run's message (the first message wins, so a forgery written after it is ignored)
  and the channel is closed;
- at report time (``verify``, called by the channel before it sends), a comparison with the
  snapshot taken at load: every function and class of the watched modules, every method of
  those classes and their code objects are the original objects; every metric test still
  runs the ``@metric`` wrapper's code; each recorder is a plain ``Recorder``; the channel's
  fd is still the pipe it was given.

Findings travel as ``"tamper": [...]`` in the metrics document; ``evaluate`` turns them into
a ``rejected`` evaluation. Against an optimiser that means to hide, this is evidence, not a
wall: docs/isolation.md says what remains possible.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any

PACKAGE = "pytest_autoresearch"
WATCHED = frozenset(
    {
        "object.__setattr__",
        "object.__delattr__",
        "gc.get_referrers",
        "gc.get_referents",
        "gc.get_objects",
        "ctypes.cdata",
        "ctypes.string_at",
        "ctypes.wstring_at",
        "open",
    }
)
PROJECT_ONLY = frozenset(
    {"gc.get_objects", "ctypes.cdata", "ctypes.string_at", "ctypes.wstring_at"}
)

_WATCHER: Watcher | None = None


class Watcher:
    """The snapshot of the plugin's recording path, the audit hook, and what they found."""

    def __init__(self, channel: Any, root: Path, modules: Sequence[ModuleType]) -> None:
        self.channel = channel
        self.modules = tuple(modules)
        self.root = str(Path(root).resolve())
        self.libraries = _library_dirs()
        self.findings: list[str] = []
        self.snapshot = _snapshot(self.modules)
        self.ids = {id(obj) for obj, _code in self.snapshot.values()}
        self.tests: list[tuple[str, Any, Any]] = []  # (nodeid, wrapper, its code at collection)
        self.wrapper_code: Any = None
        self._fd, self._pipe = _pipe_of(channel)
        self._busy = threading.local()

    # -- what is watched ----------------------------------------------------------------

    def protect(self, nodeid: str, func: Any) -> None:
        """A metric test's function (the ``@metric`` wrapper and the body it wraps)."""
        self.tests.append((nodeid, func, getattr(func, "__code__", None)))
        self.ids.add(id(func))
        wrapped = getattr(func, "__wrapped__", None)
        if wrapped is not None:
            self.ids.add(id(wrapped))

    def check_recorder(self, nodeid: str, recorder: Any, recorder_type: type, kind: type) -> None:
        """At the test's report: the recorder and its measurements are the plugin's own."""
        fields = {"spec", "param_id", "measurements"}
        ok = type(recorder) is recorder_type and set(vars(recorder)) == fields
        ok = ok and type(recorder.measurements) is dict
        ok = ok and all(type(m) is kind for m in recorder.measurements.values())
        if not ok:
            self.found(f"{nodeid}: the metric recorder was replaced or changed")

    # -- the audit hook -----------------------------------------------------------------

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if event not in WATCHED or getattr(self._busy, "on", False):
            return
        self._busy.on = True
        try:
            why = self._judge(event, args, sys._getframe(1))
            if why:
                self.found(why)
        except Exception:  # noqa: BLE001 - a watcher must never break the code it watches
            pass
        finally:
            self._busy.on = False

    def _judge(self, event: str, args: tuple[Any, ...], caller: Any) -> str:
        if event in ("object.__setattr__", "object.__delattr__"):
            if args and self._ours(args[0]):
                verb = "set" if event == "object.__setattr__" else "deleted"
                return f"{verb} {args[1]!s} on {_name(args[0])} (a code or method swap)"
            return ""
        if event in ("gc.get_referrers", "gc.get_referents"):
            objs = args[0] if args and isinstance(args[0], tuple) else args
            if any(self._ours(o) for o in objs) or self._project(caller):
                return f"{event}() called from {_where(caller)} (reference hunting)"
            return ""
        if event == "open":
            return self._opened(args[0] if args else None, caller)
        if event in PROJECT_ONLY and self._project(caller):
            return f"{event}() called from {_where(caller)} (looking through process memory)"
        return ""

    def _opened(self, path: Any, caller: Any) -> str:
        fd = self._fd
        if isinstance(path, int) and path == fd >= 0 and self._project(caller):
            return f"opened the results channel's fd from {_where(caller)}"
        if not isinstance(path, (str, bytes, os.PathLike)):
            return ""
        text = os.fsdecode(path)
        fds = {f"/proc/self/fd/{fd}", f"/dev/fd/{fd}", f"/proc/{os.getpid()}/fd/{fd}"}
        if text in fds or (text.startswith("/proc/") and text.endswith("/mem")):
            return f"opened {text} from {_where(caller)} (the results channel or process memory)"
        return ""

    def _runs_wrapper(self, func: Any) -> bool:
        """Whether ``func`` is, or wraps (``__wrapped__``), a function with @metric's code."""
        seen = 0
        while func is not None and seen < 20:  # another decorator may sit outside @metric
            if self.wrapper_code is None or getattr(func, "__code__", None) is self.wrapper_code:
                return True
            func, seen = getattr(func, "__wrapped__", None), seen + 1
        return False

    def _ours(self, obj: Any) -> bool:
        if id(obj) in self.ids or obj is self.channel:
            return True
        # A @metric wrapper not collected yet (patched at import, before collection).
        return isinstance(obj, FunctionType) and hasattr(obj, "_autoresearch_metric")

    def _project(self, frame: Any) -> bool:
        """Whether ``frame`` runs the project's own code (not a library's, not ours)."""
        name = getattr(getattr(frame, "f_code", None), "co_filename", "") or ""
        if not name.startswith(self.root + os.sep):
            return False
        return not any(name.startswith(lib) for lib in self.libraries)

    # -- findings -------------------------------------------------------------------------

    def found(self, why: str) -> None:
        """Record a finding and send it now: the first message on the channel wins."""
        self.findings.append(why)
        send = getattr(self.channel, "send", None)
        if send is not None:
            send({"version": 1, "metrics": [], "tests": [], "tamper": list(self.findings)})

    def verify(self) -> list[str]:
        """Report-time check of the recording path; the findings so far included."""
        now = _snapshot(self.modules)
        for key, (obj, code) in self.snapshot.items():
            if key not in now:
                self.findings.append(f"{key} was removed")
            elif now[key][0] is not obj or now[key][1] is not code:
                self.findings.append(f"{key} was replaced")
        for nodeid, func, code in self.tests:
            if getattr(func, "__code__", None) is not code or not self._runs_wrapper(func):
                self.findings.append(f"{nodeid}: the @metric wrapper was replaced")
        if _pipe_of(self.channel) != (self._fd, self._pipe) and self._fd >= 0:
            self.findings.append("the results channel's fd was replaced")
        return list(dict.fromkeys(self.findings))


def watch(channel: Any, root: Path, modules: Iterable[ModuleType], wrapper_code: Any) -> Watcher:
    """Install the watcher (once per process) and let the channel verify before it sends."""
    global _WATCHER
    if _WATCHER is None:
        _WATCHER = Watcher(channel, root, list(modules))
        _WATCHER.wrapper_code = wrapper_code
        channel.verify = _WATCHER.verify
        sys.addaudithook(_WATCHER.audit)
    return _WATCHER


def _snapshot(modules: Sequence[ModuleType]) -> dict[str, tuple[Any, Any]]:
    """``module.name`` (and ``module.Class.method``) -> (object, its code object)."""
    out: dict[str, tuple[Any, Any]] = {}
    for module in modules:
        for name, value in list(vars(module).items()):
            if not isinstance(value, (FunctionType, type)):
                continue
            if not str(getattr(value, "__module__", "")).startswith(PACKAGE):
                continue
            key = f"{module.__name__}.{name}"
            out[key] = (value, getattr(value, "__code__", None))
            if isinstance(value, type):
                for attr, member in list(vars(value).items()):
                    func = getattr(member, "__func__", member)
                    if isinstance(func, FunctionType):
                        out[f"{key}.{attr}"] = (member, func.__code__)
    return out


def _pipe_of(channel: Any) -> tuple[int, tuple[int, int] | None]:
    fd = getattr(channel, "_fd", -1)
    try:
        st = os.fstat(fd) if fd >= 0 else None
    except OSError:
        st = None
    return fd, (st.st_dev, st.st_ino) if st is not None else None


def _library_dirs() -> tuple[str, ...]:
    import sysconfig

    found = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            found.add(path)
    found.update(p for p in sys.path if "site-packages" in p or "dist-packages" in p)
    found.add(str(Path(__file__).resolve().parents[1]))  # this package itself
    return tuple(sorted(str(Path(p).resolve()) + os.sep for p in found if p))


def _name(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or ""
    qual = getattr(obj, "__qualname__", None) or type(obj).__name__
    return f"{module}.{qual}" if module else str(qual)


def _where(frame: Any) -> str:
    code = getattr(frame, "f_code", None)
    if code is None:
        return "?"
    return f"{code.co_filename}:{getattr(frame, 'f_lineno', '?')}"
