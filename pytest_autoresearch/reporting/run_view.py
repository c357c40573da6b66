"""A research record read for display, never written: what report.html shows.

API
---
RunView                            everything the page shows about one record folder
RecordTail(directory)              reads experiments.jsonl incrementally (only what was appended)
    .view(holdout=None, time_budget=None, max_cost=None) -> RunView
read_run(directory, **extras) -> RunView     the whole record, read once
RunSummary / summarise(view)       a LoopResult-like object for report.write_report

Why not ``Journal.load()``: it repairs the record (cuts a torn last line, appends missing
results.tsv rows). A second reader doing that while the loop appends could cut a line that
is being written. This reader only reads: a line without its newline is left for later.
Old records are welcome: every field may be missing.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_autoresearch.sandbox.secrets import scrub

__all__ = ["RecordTail", "RunSummary", "RunView", "read_run", "scrub_all", "summarise"]

JSONL = "experiments.jsonl"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class RunView:
    """One record folder as the page shows it (a snapshot; records in index order)."""

    directory: Path
    objective: str = "objective"
    goal: str = "min"
    baseline: float | None = None
    sigma: float | None = None
    baseline_metrics: dict[str, Any] = field(default_factory=dict)
    goals: dict[str, str] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    total: int | None = None  # experiments the last session was asked for
    workers: int | None = None  # experiments in flight at once (None: one, in place)
    proposer: str | None = None
    started: str | None = None  # the first session's start (ISO)
    session_started: str | None = None  # the last session's start
    ended: bool = False  # an "end" after the last "session"
    end_reason: str | None = None
    ended_at: str | None = None
    in_flight: list[int] = field(default_factory=list)
    cost: dict[str, float] = field(default_factory=dict)
    holdout: str | None = None
    time_budget: float | None = None  # seconds, from the session's options when known
    max_cost: float | None = None
    version: int = 0  # bytes of experiments.jsonl read: grows with every event
    skipped_lines: int = 0

    @property
    def tag(self) -> str:
        return self.directory.name

    @property
    def best(self) -> float | None:
        kept = [
            r for r in self.records if r.get("status") == "keep" and _finite(r.get("best_after"))
        ]
        return kept[-1]["best_after"] if kept else self.baseline

    @property
    def live(self) -> bool:
        """A session has started and not (yet) written its end."""
        return self.session_started is not None and not self.ended


_SEP = "\n\x00\n"  # no key shape, "NAME=value" or secret value runs across a NUL


def scrub_all(obj: Any) -> Any:
    """``obj`` with every string (and key) scrubbed, in one ``scrub`` call.

    ``scrub`` costs about 0.25 ms a call whatever the text (it reads the environment for
    secret values each time); a record holds dozens of strings, a page hundreds of records.
    """
    texts: list[str] = []

    def collect(o: Any) -> None:
        if isinstance(o, str):
            texts.append(o.replace("\x00", ""))
        elif isinstance(o, dict):
            for k, v in o.items():
                collect(str(k))
                collect(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                collect(v)

    collect(obj)
    if not texts:
        return obj
    clean = scrub(_SEP.join(texts)).split(_SEP)
    if len(clean) != len(texts):  # cannot happen (scrub keeps the NULs); never guess
        clean = [scrub(t) for t in texts]
    it = iter(clean)

    def rebuild(o: Any) -> Any:
        if isinstance(o, str):
            return next(it)
        if isinstance(o, dict):
            return {next(it): rebuild(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [rebuild(v) for v in o]
        return o

    return rebuild(obj)


class _Fold:
    """The events of experiments.jsonl folded into what the page needs, one at a time."""

    def __init__(self) -> None:
        self.baseline: dict[str, Any] = {}
        self.session: dict[str, Any] = {}
        self.first_session: str | None = None
        self.end: dict[str, Any] | None = None
        self.records: dict[int, dict[str, Any]] = {}
        self.started: set[int] = set()
        self.skipped = 0

    def add(self, ev: dict[str, Any]) -> None:
        kind, index = ev.get("event"), ev.get("index")
        if kind in ("session", "baseline", "end") or (
            kind == "experiment" and isinstance(index, int) and index not in self.records
        ):
            ev = scrub_all(ev)  # once per event kept: the page shows nothing unscrubbed
        if kind == "session":
            self.session, self.end = ev, None
            self.first_session = self.first_session or str(ev.get("at") or "") or None
        elif kind == "baseline":
            self.baseline = ev
        elif kind == "end":
            self.end = ev
        elif kind in ("start", "interrupted") and isinstance(index, int):
            self.started.add(index)
        elif kind == "experiment" and isinstance(index, int) and index not in self.records:
            self.records[index] = ev


class RecordTail:
    """Reads a record's experiments.jsonl, each call only the complete lines appended since.

    Thread-safe: the live server and the page writer may each hold one, or share one.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._offset = 0
        self._fold = _Fold()
        self._lock = threading.Lock()

    def _catch_up(self) -> None:
        path = self.directory / JSONL
        try:
            size = path.stat().st_size
        except OSError:
            return
        if size < self._offset:  # replaced or cut: read it again from the start
            self._offset, self._fold = 0, _Fold()
        if size == self._offset:
            return
        with open(path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read(size - self._offset)
        end = chunk.rfind(b"\n") + 1  # a line without its newline is still being written
        for line in chunk[:end].splitlines():
            try:
                ev = json.loads(line.decode("utf-8", errors="replace"))
            except json.JSONDecodeError:
                self._fold.skipped += 1
                continue
            if isinstance(ev, dict):
                self._fold.add(ev)
            else:
                self._fold.skipped += 1
        self._offset += end

    def view(
        self,
        *,
        holdout: str | None = None,
        time_budget: float | None = None,
        max_cost: float | None = None,
    ) -> RunView:
        """What the record says now (reads what was appended since the last call)."""
        with self._lock:
            self._catch_up()
            return _view(self.directory, self._fold, self._offset, holdout, time_budget, max_cost)


def _view(
    directory: Path,
    fold: _Fold,
    version: int,
    holdout: str | None,
    time_budget: float | None,
    max_cost: float | None,
) -> RunView:
    base, session = fold.baseline, fold.session
    records = [fold.records[i] for i in sorted(fold.records)]
    cost: dict[str, float] = {}
    for r in records:
        for k, v in (r.get("cost") or {}).items() if isinstance(r.get("cost"), dict) else ():
            if _finite(v):
                cost[k] = cost.get(k, 0) + v
    objective = base.get("objective") or next(
        (r.get("objective_name") for r in records if r.get("objective_name")), "objective"
    )
    workers = session.get("workers")
    serial = session.get("executor") in (None, "serial") and not any(
        r.get("worker") for r in records
    )
    return RunView(
        directory=directory,
        objective=str(objective),
        goal=str(base.get("goal") or "min"),
        baseline=base.get("value") if _finite(base.get("value")) else None,
        sigma=base.get("sigma") if _finite(base.get("sigma")) else None,
        baseline_metrics=dict(base.get("metrics") or {}),
        goals=dict(base.get("goals") or {}),
        records=records,
        total=session.get("experiments") if isinstance(session.get("experiments"), int) else None,
        workers=workers if isinstance(workers, int) and not serial else None,
        proposer=session.get("proposer"),
        started=fold.first_session,
        session_started=session.get("at") if session else None,
        ended=fold.end is not None,
        end_reason=(fold.end or {}).get("reason"),
        ended_at=(fold.end or {}).get("at"),
        in_flight=[] if fold.end else sorted(fold.started - set(fold.records)),
        cost=cost,
        holdout=holdout,
        time_budget=time_budget,
        max_cost=max_cost,
        version=version,
        skipped_lines=fold.skipped,
    )


def read_run(directory: Path, **extras: Any) -> RunView:
    """The whole record in ``directory`` (an empty view when there is none yet)."""
    return RecordTail(directory).view(**extras)


@dataclass
class RunSummary:
    """What ``report.summary_lines`` and ``write_report`` read from a LoopResult."""

    objective: str
    goal: str
    baseline: float | None
    best: float | None
    sigma: float | None
    kept: int
    done: int
    stop_reason: str
    branch: str
    record_dir: Path
    holdout: str | None = None
    holdout_baseline: float | None = None
    holdout_best: float | None = None
    holdout_goal: str | None = None
    cost: dict[str, float] = field(default_factory=dict)
    workers: int | None = None


def summarise(view: RunView) -> RunSummary:
    """A LoopResult's fields, rebuilt from the record alone (for --autoresearch-report)."""
    kept = [r for r in view.records if r.get("status") == "keep"]
    h = view.holdout
    h_best = view.baseline_metrics.get(h) if h else None
    for r in kept:
        if h and _finite((r.get("metrics") or {}).get(h)):
            h_best = r["metrics"][h]
    if view.ended:
        stop = str(view.end_reason or "ended")
    else:
        stop = "no end in the record (still running, or killed)"
    return RunSummary(
        objective=view.objective,
        goal=view.goal,
        baseline=view.baseline,
        best=view.best,
        sigma=view.sigma,
        kept=len(kept),
        done=len(view.records),
        stop_reason=stop,
        branch=f"autoresearch/{view.tag}",
        record_dir=view.directory,
        holdout=h,
        holdout_baseline=view.baseline_metrics.get(h) if h else None,
        holdout_best=h_best,
        holdout_goal=view.goals.get(h) if h else None,
        cost=dict(view.cost),
        workers=view.workers,
    )
