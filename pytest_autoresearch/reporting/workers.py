"""The workers of a parallel run, read from the journal's records: who ran what, how busy.

API::

    worker_stats(records, *, workers=None) -> list[WorkerStat]
        per worker: host, experiments, evaluations, busy seconds, utilisation (busy / wall)
    throughput(records) -> float | None      experiments per hour of wall time
    wall_seconds(records) -> float | None    time with an experiment in flight (gaps left out)
    worker_lines(records, *, workers=None) -> list[str]      the terminal's lines
    workers_markdown(records, workers) -> list[str]          report.md's "Workers" section
    journal_time(text) -> float | None       an ISO time from the journal, epoch seconds
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pytest_autoresearch.reporting.text import finite, format_duration, md, pct, plural

__all__ = [
    "SHOWN_WORKERS",
    "WorkerStat",
    "journal_time",
    "throughput",
    "wall_seconds",
    "worker_lines",
    "worker_stats",
    "workers_markdown",
]

SHOWN_WORKERS = 8  # more than this and the terminal gets one line about the pool instead


@dataclass(frozen=True)
class WorkerStat:
    """One worker over a run: what it ran and how much of the wall time it spent measuring."""

    worker: str
    host: str  # its hostname; several, comma-separated, when a Ray worker moved node
    experiments: int  # records whose first evaluation it ran
    evaluations: int  # evaluations it ran: candidates, confirmations, re-measures, re-bases
    busy_seconds: float  # their durations summed
    utilisation: float | None  # busy / wall_seconds(records), at most 1; None without times


def journal_time(text: Any) -> float | None:
    """An ISO time from the journal as seconds since the epoch; None when missing or bad."""
    if not isinstance(text, str) or not text:
        return None
    try:  # "Z" is only understood by fromisoformat from Python 3.11 on
        t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t.timestamp()


def _evaluations(rec: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in rec.get("evaluations") or [] if isinstance(e, dict)]


def _span(rec: dict[str, Any]) -> tuple[float, float] | None:
    """When an experiment was in flight: from its start (or first evaluation's) to its end."""
    starts, ends = [journal_time(rec.get("started"))], [journal_time(rec.get("finished"))]
    for e in _evaluations(rec):
        t = journal_time(e.get("started"))
        starts.append(t)
        if t is not None and finite(e.get("duration")):
            ends.append(t + e["duration"])
    begun = [t for t in starts if t is not None]
    ended = [t for t in ends if t is not None]
    if not begun or not ended:
        return None
    return min(begun), max(max(ended), min(begun))


def wall_seconds(records: Sequence[dict[str, Any]]) -> float | None:
    """Seconds during which at least one of ``records`` was in flight; None without times.

    From the first start to the last record, less the gaps when nothing was in flight
    (between the sessions of a resumed run): a night between two sessions is not time
    the workers stood idle.
    """
    spans = sorted(s for s in map(_span, records) if s is not None)
    if not spans:
        return None
    total, (lo, hi) = 0.0, spans[0]
    for a, b in spans[1:]:
        if a > hi:
            total, lo, hi = total + hi - lo, a, b
        else:
            hi = max(hi, b)
    return total + hi - lo


def throughput(records: Sequence[dict[str, Any]]) -> float | None:
    """Experiments per hour of ``wall_seconds``; None when the records have no times."""
    wall = wall_seconds(records)
    timed = sum(1 for r in records if _span(r) is not None)
    return 3600.0 * timed / wall if wall else None


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _idle(names: set[str], workers: int | None) -> set[str]:
    """Workers of the pool that ran nothing, when the names say which ("w0".."w3")."""
    if not isinstance(workers, int) or len(names) >= workers:
        return set()
    prefixes = {m.group(1) if m else None for m in map(re.compile(r"(\D*)\d+").fullmatch, names)}
    if len(prefixes) != 1 or None in prefixes:
        return set()
    prefix = prefixes.pop()
    return {f"{prefix}{i}" for i in range(workers)} - names


def worker_stats(
    records: Sequence[dict[str, Any]], *, workers: int | None = None
) -> list[WorkerStat]:
    """Each worker's share of the run, in name order; [] for runs without workers.

    ``workers``: the pool's size (the journal's session event); workers named like the
    others ("w3" beside "w0".."w2") that ran nothing are listed with nothing.
    """
    busy: dict[str, float] = {}
    evals: dict[str, int] = {}
    runs: dict[str, int] = {}
    hosts: dict[str, list[str]] = {}

    def seen(name: str, host: Any) -> None:
        where = hosts.setdefault(name, [])
        if host and str(host) not in where:
            where.append(str(host))

    for rec in records:
        own = str(rec.get("worker") or "")
        for e in _evaluations(rec):
            name = str(e.get("worker") or own)
            if name:
                evals[name] = evals.get(name, 0) + 1
                took = e.get("duration")
                busy[name] = busy.get(name, 0.0) + (took if finite(took) else 0.0)
                seen(name, e.get("host") or (rec.get("host") if name == own else None))
                own = own or name  # the first evaluation's worker owns the experiment
        if own:
            runs[own] = runs.get(own, 0) + 1
            seen(own, rec.get("host"))
    names = set(evals) | set(runs)
    if not names:
        return []
    names |= _idle(names, workers)
    wall = wall_seconds(records)
    return [
        WorkerStat(
            worker=name,
            host=", ".join(hosts.get(name, [])),
            experiments=runs.get(name, 0),
            evaluations=evals.get(name, 0),
            busy_seconds=round(busy.get(name, 0.0), 3),
            utilisation=min(1.0, busy.get(name, 0.0) / wall) if wall else None,
        )
        for name in sorted(names, key=_natural)
    ]


def _rebase_line(records: Sequence[dict[str, Any]]) -> str | None:
    moved = [r["rebased"] for r in records if finite(r.get("rebased")) and r["rebased"] > 0]
    stale = sum(1 for r in records if r.get("status") == "stale")
    if not moved and not stale:
        return None
    return (
        f"re-based onto a newer best: {plural(len(moved), 'experiment')} "
        f"({plural(int(sum(moved)), 'time')}); stale: {stale}"
    )


def worker_lines(records: Sequence[dict[str, Any]], *, workers: int | None = None) -> list[str]:
    """The terminal's lines on throughput, the workers' utilisation and re-based/stale work."""
    lines = []
    per_hour, wall = throughput(records), wall_seconds(records)
    if per_hour is not None and wall:
        timed = sum(1 for r in records if _span(r) is not None)
        lines.append(
            f"throughput: {per_hour:.1f} experiments/hour ({timed} in {format_duration(wall)})"
        )
    stats = worker_stats(records, workers=workers)
    if 0 < len(stats) <= SHOWN_WORKERS:
        lines.append(
            "workers: "
            + ", ".join(
                f"{s.worker} {pct(s.utilisation)} ({plural(s.evaluations, 'eval')})" for s in stats
            )
        )
    elif stats:
        known = [s for s in stats if s.utilisation is not None]
        text = f"workers: {len(stats)}, {sum(s.evaluations for s in stats)} evals"
        if known:
            low = min(known, key=lambda s: s.utilisation or 0.0)
            high = max(known, key=lambda s: s.utilisation or 0.0)
            mean = sum(s.utilisation or 0.0 for s in known) / len(known)
            text += (
                f", utilisation {pct(mean)} on average (lowest {low.worker} "
                f"{pct(low.utilisation)}, highest {high.worker} {pct(high.utilisation)})"
            )
        lines.append(text)
    rebased = _rebase_line(records)
    if rebased:
        lines.append(rebased)
    return lines


def workers_markdown(records: Sequence[dict[str, Any]], workers: int | None) -> list[str]:
    """report.md's "Workers" section; empty for runs without workers."""
    stats = worker_stats(records, workers=workers)
    if not stats:
        return []
    out = [
        "## Workers",
        "",
        "| worker | host | experiments | evaluations | busy | utilisation |",
        "|---|---|---|---|---|---|",
    ]
    for s in stats:
        out.append(
            f"| {md(s.worker)} | {md(s.host or '-')} | {s.experiments} | {s.evaluations} | "
            f"{format_duration(s.busy_seconds)} | {pct(s.utilisation)} |"
        )
    out.append("")
    per_hour, wall = throughput(records), wall_seconds(records)
    if per_hour is not None and wall:
        timed = sum(1 for r in records if _span(r) is not None)
        out.append(
            f"- {per_hour:.1f} experiments per hour: {timed} in {format_duration(wall)} "
            "with experiments in flight (gaps between sessions left out)"
        )
        pool = sum(s.busy_seconds for s in stats) / (len(stats) * wall)
        out.append(f"- the {len(stats)} workers spent {pct(min(1.0, pool))} of it measuring")
    kinds: dict[str, int] = {}
    for r in records:
        for e in _evaluations(r):
            if e.get("kind"):
                kinds[str(e["kind"])] = kinds.get(str(e["kind"]), 0) + 1
    if kinds:
        order = ["candidate", "confirm", "remeasure", "rebase"]
        ranked = sorted(kinds, key=lambda k: (order.index(k) if k in order else len(order), k))
        out.append("- evaluations: " + ", ".join(f"{kinds[k]} {k}" for k in ranked))
    rebased = _rebase_line(records)
    if rebased:
        out.append(f"- {rebased}")
    out.append("")
    return out
