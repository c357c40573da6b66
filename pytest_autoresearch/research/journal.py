"""The research record: ``results.tsv`` and ``experiments.jsonl``, append-only and fsynced.

API
---
scrub(text) -> str                   replace anything that looks like an API key or token
scrub_obj(obj) -> obj                scrub every string (and key) in a JSON-like value
JournalError                         the record cannot be used as it is (says what to do)
JournalState                         what load() found: records, baseline, best, unfinished...
Journal(directory, objective, metric_names=None)
    .write(event, **fields)          one JSON line {"event": ..., **fields}, flush + fsync
    .decide(rec)                     the write-ahead line: a finished experiment's record,
                                     journaled before its irreversible step (commit/restore)
    .record(rec)                     an "experiment" line, then its results.tsv row
    .load() -> JournalState          also repairs a torn last line and missing TSV rows
    .jsonl_path, .tsv_path

results.tsv's header is ``commit, <objective>, status, description, <other metrics>``;
the other metrics are ``metric_names`` (minus the objective) or, when not given, the sorted
metric names of the first record. Resuming with another objective or other metrics fails.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_autoresearch.sandbox.secrets import scrub, scrub_obj  # re-exported: the one scrubber

__all__ = ["Journal", "JournalError", "JournalState", "scrub", "scrub_obj"]

_STATUSES = ("keep", "discard", "crash", "rejected", "error", "stale")


class JournalError(Exception):
    """The record on disk cannot be appended to as it is; the message says what to do."""


@dataclass
class JournalState:
    """What a previous run left, so the next one carries on where it stopped."""

    records: list[dict[str, Any]] = field(default_factory=list)  # finished experiments
    baseline: dict[str, Any] | None = None  # the last "baseline" event
    best: float | None = None  # the value carried forward (baseline's or the last keep's)
    best_commit: str | None = None
    unfinished: int | None = None  # the last experiment that started, undecided, with no record
    # Every such experiment (several with K workers): resume runs each again, same index.
    pending: list[int] = field(default_factory=list)
    highest: int = 0  # the highest experiment index started or recorded
    # Experiments decided (a "decided" line with the full record) whose irreversible step
    # (moving the branch or restoring the tree) may not have happened: resume finishes them.
    decided: list[dict[str, Any]] = field(default_factory=list)
    sessions: int = 0
    cost: dict[str, float] = field(default_factory=dict)
    skipped_lines: int = 0  # unreadable lines in the middle of experiments.jsonl

    @property
    def next_index(self) -> int:
        """The index the next experiment gets."""
        return max((r["index"] for r in self.records), default=0) + 1


class Journal:
    """Append-only record of one research tag, safe to kill at any point."""

    def __init__(
        self, directory: Path, objective: str, metric_names: Sequence[str] | None = None
    ) -> None:
        self.directory = Path(directory)
        self.objective = objective
        self.metric_names = (
            None if metric_names is None else [m for m in metric_names if m != objective]
        )
        self.jsonl_path = self.directory / "experiments.jsonl"
        self.tsv_path = self.directory / "results.tsv"
        self._repaired = False
        self._indices: set[int] | None = None

    # -- writing --------------------------------------------------------------------------

    def write(self, event: str, **fields: Any) -> None:
        """Append one event line to experiments.jsonl and make it durable."""
        self._prepare()
        line = json.dumps(scrub_obj({"event": event, **fields}), ensure_ascii=False, default=str)
        _append(self.jsonl_path, line + "\n")

    def decide(self, rec: dict[str, Any]) -> None:
        """Journal a finished experiment's record before its commit or restore (write-ahead)."""
        self.write("decided", index=rec.get("index"), record=rec)

    def record(self, rec: dict[str, Any]) -> None:
        """Append a finished experiment: its full JSON line first, then its results.tsv row."""
        index = rec.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise ValueError(f"an experiment record needs an integer 'index', got {index!r}")
        if rec.get("status") not in _STATUSES:
            raise ValueError(
                f"status must be one of {', '.join(_STATUSES)}, got {rec.get('status')!r}"
            )
        self._prepare()
        if self._indices is None:
            self._indices = {r["index"] for r in self._read()[0] if r["event"] == "experiment"}
        if index in self._indices:
            raise ValueError(f"experiment {index} is already recorded in {self.jsonl_path}")
        clean = scrub_obj({"event": "experiment", **{k: v for k, v in rec.items() if k != "event"}})
        self._ensure_header(clean)
        _append(self.jsonl_path, json.dumps(clean, ensure_ascii=False, default=str) + "\n")
        self._indices.add(index)
        _append(self.tsv_path, self._row(clean))

    # -- reading --------------------------------------------------------------------------

    def load(self) -> JournalState:
        """Read the record (repairing a torn tail first) into a JournalState."""
        if not self.jsonl_path.exists() and not self.tsv_path.exists():
            return JournalState()
        self._prepare()
        events, skipped = self._read()
        state = JournalState(skipped_lines=skipped)
        started: set[int] = set()
        finished: set[int] = set()
        decided: dict[int, dict[str, Any]] = {}
        totals: dict[str, float] = {}
        for ev in events:
            kind = ev.get("event")
            if kind == "session":
                state.sessions += 1
            elif kind == "baseline":
                state.baseline = ev
                state.best, state.best_commit = ev.get("value"), ev.get("commit")
            elif kind == "start" and isinstance(ev.get("index"), int):
                started.add(ev["index"])
                decided.pop(ev["index"], None)  # a re-run after an interruption
            elif kind == "decided" and isinstance(ev.get("record"), dict):
                if isinstance(ev.get("index"), int) and ev["index"] not in finished:
                    decided[ev["index"]] = ev["record"]
            elif kind == "experiment" and ev.get("index") not in finished:
                finished.add(ev["index"])
                state.records.append(ev)
                if ev.get("status") == "keep":
                    state.best, state.best_commit = ev.get("best_after"), ev.get("commit")
                for k, v in (ev.get("cost") or {}).items():
                    if isinstance(v, (int, float)):
                        totals[k] = totals.get(k, 0) + v
        state.decided = [decided[i] for i in sorted(decided) if i not in finished]
        pending = sorted(started - finished - set(decided))
        state.unfinished = pending[-1] if pending else None
        state.pending = pending
        state.highest = max(started | finished | set(decided), default=0)
        state.cost = totals
        return state

    # -- internals ------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Once per process: create the folder, cut torn tails, rebuild missing TSV rows."""
        if self._repaired:
            return
        fresh = not self.directory.exists()
        self.directory.mkdir(parents=True, exist_ok=True)
        if fresh:
            _fsync_dir(self.directory.parent)
        _cut_torn_tail(self.jsonl_path)
        _cut_torn_tail(self.tsv_path)
        self._repaired = True
        if self.tsv_path.exists() and self.tsv_path.stat().st_size:
            header = self.tsv_path.read_text(encoding="utf-8").splitlines()[0].split("\t")
            self._check_header(header)
            if self.metric_names is None:
                self.metric_names = header[4:]
        records = [e for e in self._read()[0] if e["event"] == "experiment"]
        seen: set[int] = set()
        unique = [r for r in records if not (r["index"] in seen or seen.add(r["index"]))]
        rows = self._tsv_rows()
        if rows > len(unique):
            raise JournalError(
                f"{self.tsv_path} has {rows} rows but {self.jsonl_path} holds only "
                f"{len(unique)} experiments: the files were edited or mixed up. Move "
                f"{self.directory} aside, or use a new --autoresearch-tag"
            )
        for rec in unique[rows:]:  # killed between the JSON line and its TSV row
            self._ensure_header(rec)
            _append(self.tsv_path, self._row(rec))

    def _read(self) -> tuple[list[dict[str, Any]], int]:
        if not self.jsonl_path.exists():
            return [], 0
        events, skipped = [], 0
        with open(self.jsonl_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # a torn tail: never trusted
                try:
                    ev = json.loads(line)
                except json.JSONDecodeError:
                    skipped += 1
                    continue
                if not isinstance(ev, dict) or "event" not in ev:
                    skipped += 1
                elif ev["event"] != "experiment" or isinstance(ev.get("index"), int):
                    events.append(ev)
        return events, skipped

    def _header(self, rec: dict[str, Any] | None) -> list[str]:
        if self.metric_names is None:
            names = sorted((rec or {}).get("metrics") or {})
            self.metric_names = [m for m in names if m != self.objective]
        return ["commit", self.objective, "status", "description", *self.metric_names]

    def _check_header(self, found: list[str]) -> None:
        if len(found) < 4 or found[0] != "commit" or found[2:4] != ["status", "description"]:
            raise JournalError(
                f"{self.tsv_path} is not a results.tsv this plugin wrote (header: "
                f"{' '.join(found)}); move it aside or use a new --autoresearch-tag"
            )
        want_objective = found[1] == self.objective
        want_metrics = self.metric_names is None or found[4:] == self.metric_names
        if not (want_objective and want_metrics):
            raise JournalError(
                f"{self.tsv_path} was written for objective {found[1]!r} with metrics "
                f"{found[4:]}, but the program now has objective {self.objective!r}"
                + ("" if self.metric_names is None else f" with metrics {self.metric_names}")
                + ": a record holds one program's results. Restore program.md, or start a "
                "new record with --autoresearch-tag NEWTAG"
            )

    def _ensure_header(self, rec: dict[str, Any]) -> None:
        if self.tsv_path.exists() and self.tsv_path.stat().st_size:
            return
        _append(self.tsv_path, "\t".join(_cell(h) for h in self._header(rec)) + "\n")

    def _tsv_rows(self) -> int:
        if not self.tsv_path.exists():
            return 0
        with open(self.tsv_path, encoding="utf-8", errors="replace") as f:
            return max(0, sum(1 for _ in f) - 1)

    def _row(self, rec: dict[str, Any]) -> str:
        metrics = rec.get("metrics") or {}
        value = rec.get("objective")
        cells = [
            str(rec.get("commit") or "")[:7],
            _fixed(value),
            str(rec.get("status", "")),
            _cell(str(rec.get("description", ""))),
        ]
        cells += [_short(metrics.get(name)) for name in self.metric_names or []]
        return "\t".join(cells) + "\n"


def _fixed(value: Any) -> str:
    # Karpathy's results.tsv writes 0.000000 when an experiment produced no value.
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.6f}"
    return "0.000000"


def _short(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.6g}"
    return ""


def _cell(text: str) -> str:
    """One TSV cell: no tabs or line breaks, no secrets."""
    return " ".join(scrub(text).split())


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line that a kill left without its newline, so the next append starts clean."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Walk back to the last newline in blocks (files can be large; tails are short).
        pos, keep = size, 0
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            i = block.rfind(b"\n")
            if i != -1:
                keep = pos + i + 1
                break
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not every filesystem lets a directory be fsynced
    finally:
        os.close(fd)
