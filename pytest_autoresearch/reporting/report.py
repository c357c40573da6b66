"""What a research run tells people: one line per experiment, a summary, report.md, a plot.

API
---
format_line(rec, *, objective=None, noise=None, eta_seconds=None) -> str
    ``[ 12/200] keep  val_bpb 0.9921 (-0.0042, noise ±0.0008) increase LR to 0.04  312s``
format_duration(seconds) -> str          "312s", "25m00s", "2h05m"
eta_seconds(durations, remaining) -> float | None     mean duration x experiments left
summary_lines(records, result) -> list[str]
    then worker_lines, and ends with what was learned (learned.learned_lines:
    per-parameter best value and effect, LLM ideas grouped); report.md gets the full
    "What was learned" section
    ``result``: the loop's LoopResult (read by attribute: objective, goal, baseline, best,
    sigma, kept, done, stop_reason, branch, record_dir, holdout, holdout_baseline,
    holdout_best, holdout_goal (default: the objective's goal), cost, workers)
worker_stats(records, *, workers=None) -> list[WorkerStat]
    per worker: host, experiments, evaluations, busy seconds, utilisation (busy / wall)
throughput(records) -> float | None      experiments per hour of wall time
wall_seconds(records) -> float | None     time with an experiment in flight (gaps left out)
worker_lines(records, *, workers=None) -> list[str]
    ``throughput: 180.0 experiments/hour (3 in 60s)``,
    ``workers: w0 75% (2 evals), w1 50% (1 eval)``, re-based and stale counts
write_report(directory, records, result, program=None) -> Path     report.md (+ progress.png)
plot_progress(path, records, *, objective, goal, baseline) -> str | None
    draws progress.png; returns None when drawn, else why not (matplotlib missing)

Records are the journal's experiment dicts (docs/architecture.md). matplotlib is imported
lazily, with the Agg backend, only to draw the plot.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_autoresearch.reporting.learned import learned_lines, learned_markdown
from pytest_autoresearch.sandbox.secrets import scrub

__all__ = [
    "eta_seconds",
    "format_duration",
    "format_line",
    "plot_progress",
    "WorkerStat",
    "summary_lines",
    "throughput",
    "wall_seconds",
    "worker_lines",
    "worker_stats",
    "write_report",
]

PLOT_NAME = "progress.png"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _decimals(noise: float | None, value: float | None = None) -> int:
    """Enough decimals to show the noise's first digit (the rest would be noise itself)."""
    if _finite(noise) and noise > 0:
        exp = math.floor(math.log10(noise))
        lead = noise / 10**exp  # a leading 1 or 2 gets a second digit: ±0.0012, not ±0.001
        return max(0, min(10, -exp + (1 if lead < 2.95 else 0)))
    if _finite(value) and value != 0:
        return max(0, min(10, 4 - math.floor(math.log10(abs(value)))))
    return 4


def format_duration(seconds: float) -> str:
    """Short human duration: 42s, 312s, 25m00s, 2h05m."""
    s = max(0, round(seconds))
    if s < 600:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def eta_seconds(durations: Sequence[float], remaining: int) -> float | None:
    """Time left if the remaining experiments take as long as the finished ones did."""
    done = [d for d in durations if _finite(d)]
    if not done or remaining <= 0:
        return None
    return remaining * sum(done) / len(done)


def format_line(
    rec: dict[str, Any],
    *,
    objective: str | None = None,
    noise: float | None = None,
    eta_seconds: float | None = None,
) -> str:
    """One line for a finished experiment, as the terminal shows it."""
    total = rec.get("total")
    index = rec.get("index", 0)
    width = len(str(total)) if total else len(str(index))
    head = f"[{index:>{width}}/{total}]" if total else f"[{index}]"
    status = str(rec.get("status", "?"))
    name = objective or rec.get("objective_name") or "objective"
    noise = rec.get("noise") if noise is None else noise
    value = rec.get("objective")
    dec = _decimals(noise, value)
    parts = [head, status.ljust(5), name]
    if rec.get("worker"):
        parts.insert(1, f"[{rec['worker']}]")
    if _finite(value):
        parts.append(f"{value:.{dec}f}")
        before = rec.get("best_before")
        detail = []
        if _finite(before):
            detail.append(_signed(value - before, dec))
        if _finite(noise):
            detail.append(f"noise ±{noise:.{dec}f}")
        if detail:
            parts.append("(" + ", ".join(detail) + ")")
    else:
        parts.append("-")
    text = " ".join(parts) + " " + _one_line(str(rec.get("description", "")), 80)
    if status in ("crash", "rejected", "error", "stale") and rec.get("reason"):
        text += f" [{_one_line(str(rec['reason']), 100)}]"
    took = (rec.get("durations") or {}).get("total")
    if _finite(took):
        text += f"  {format_duration(took)}"
    if _finite(eta_seconds) and eta_seconds > 0:
        text += f"  ETA {format_duration(eta_seconds)}"
    return scrub(text)


def _signed(x: float, dec: int) -> str:
    return f"{(round(x, dec) or 0.0):+.{dec}f}"  # no "-0.000"


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _better(goal: str, new: float, old: float) -> bool:
    return new < old if goal == "min" else new > old


def _change(new: float, old: float, dec: int) -> str:
    pct = f", {100 * (new - old) / abs(old):+.2f}%" if old else ""
    return _signed(new - old, dec) + pct


def summary_lines(records: Sequence[dict[str, Any]], result: Any) -> list[str]:
    """The end-of-run summary: baseline -> best, kept, where things are, holdout check,
    then what was learned (per parameter, or the LLM's ideas grouped)."""
    goal = getattr(result, "goal", "min")
    dec = _decimals(getattr(result, "sigma", None), getattr(result, "baseline", None))
    learned = learned_lines(records, goal, dec)
    workers = worker_lines(records, workers=getattr(result, "workers", None))
    return _summary(records, result) + [scrub(line) for line in workers + learned]


def _summary(records: Sequence[dict[str, Any]], result: Any) -> list[str]:
    get = lambda name, default=None: getattr(result, name, default)  # noqa: E731
    objective, goal = get("objective", "objective"), get("goal", "min")
    baseline, best, sigma = get("baseline"), get("best"), get("sigma")
    dec = _decimals(sigma, baseline)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
    lines = []
    if _finite(baseline) and _finite(best):
        lines.append(
            f"{objective} ({goal}): baseline {baseline:.{dec}f} -> best {best:.{dec}f} "
            f"({_change(best, baseline, dec)})"
            + (f", noise ±{sigma:.{dec}f}" if _finite(sigma) else "")
        )
    done = len(records)
    by_status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    lines.append(f"experiments: {done} ({by_status or 'none'}); kept {counts.get('keep', 0)}")
    if get("stop_reason"):
        lines.append(f"stopped: {get('stop_reason')}")
    if get("branch"):
        lines.append(f"branch: {get('branch')}")
    if get("record_dir"):
        lines.append(f"record: {get('record_dir')}")
    lines += _holdout_lines(result, goal, baseline, best)
    cost = get("cost")
    usd = getattr(cost, "usd", None) if cost is not None else None
    if isinstance(cost, dict):
        usd = cost.get("usd")
    if _finite(usd) and usd > 0:
        lines.append(f"LLM cost: ${usd:.2f}")
    return [scrub(line) for line in lines]


def _holdout_lines(result: Any, goal: str, baseline: Any, best: Any) -> list[str]:
    name = getattr(result, "holdout", None)
    h0, h1 = getattr(result, "holdout_baseline", None), getattr(result, "holdout_best", None)
    if not name:
        return []
    if not (_finite(h0) and _finite(h1)):
        return [f"holdout {name}: no value to compare"]
    hgoal = getattr(result, "holdout_goal", None) or goal
    dec = _decimals(None, h0)
    line = f"holdout {name} ({hgoal}): {h0:.{dec}f} -> {h1:.{dec}f} ({_change(h1, h0, dec)})"
    improved = _finite(baseline) and _finite(best) and _better(goal, best, baseline)
    if improved and _better(hgoal, h0, h1):
        return [
            line,
            f"WARNING: the objective improved but the holdout {name} got worse: "
            "the gains may be overfitted to the objective; check before merging",
        ]
    return [line]


# -- workers ---------------------------------------------------------------------------

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


def _time(text: Any) -> float | None:
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
    starts, ends = [_time(rec.get("started"))], [_time(rec.get("finished"))]
    for e in _evaluations(rec):
        t = _time(e.get("started"))
        starts.append(t)
        if t is not None and _finite(e.get("duration")):
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
                busy[name] = busy.get(name, 0.0) + (took if _finite(took) else 0.0)
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


def _pct(x: float | None) -> str:
    return f"{100 * x:.0f}%" if _finite(x) else "-"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _rebase_line(records: Sequence[dict[str, Any]]) -> str | None:
    moved = [r["rebased"] for r in records if _finite(r.get("rebased")) and r["rebased"] > 0]
    stale = sum(1 for r in records if r.get("status") == "stale")
    if not moved and not stale:
        return None
    return (
        f"re-based onto a newer best: {_plural(len(moved), 'experiment')} "
        f"({_plural(int(sum(moved)), 'time')}); stale: {stale}"
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
                f"{s.worker} {_pct(s.utilisation)} ({_plural(s.evaluations, 'eval')})"
                for s in stats
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
                f", utilisation {_pct(mean)} on average (lowest {low.worker} "
                f"{_pct(low.utilisation)}, highest {high.worker} {_pct(high.utilisation)})"
            )
        lines.append(text)
    rebased = _rebase_line(records)
    if rebased:
        lines.append(rebased)
    return lines


def _workers_markdown(records: Sequence[dict[str, Any]], workers: int | None) -> list[str]:
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
            f"| {_md(s.worker)} | {_md(s.host or '-')} | {s.experiments} | {s.evaluations} | "
            f"{format_duration(s.busy_seconds)} | {_pct(s.utilisation)} |"
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
        out.append(f"- the {len(stats)} workers spent {_pct(min(1.0, pool))} of it measuring")
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


def write_report(
    directory: Path, records: Sequence[dict[str, Any]], result: Any, program: Any = None
) -> Path:
    """Write report.md (and progress.png when matplotlib is installed); return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    objective = getattr(result, "objective", None) or getattr(program, "objective", "objective")
    goal = getattr(result, "goal", "min")
    baseline = getattr(result, "baseline", None)
    why_not = plot_progress(
        directory / PLOT_NAME, records, objective=objective, goal=goal, baseline=baseline
    )
    sigma = getattr(result, "sigma", None)
    dec = _decimals(sigma, baseline)
    out = [f"# Research report: {objective}", ""]
    out += [f"- {line}" for line in _summary(records, result)]
    out.append("")
    if why_not is None:
        out += [f"![progress]({PLOT_NAME})", ""]
    else:
        out += [f"_No plot: {why_not}._", ""]
    kept = [r for r in records if r.get("status") == "keep"]
    if kept:
        out += [
            "## Kept",
            "",
            "| # | commit | value | change | description |",
            "|---|---|---|---|---|",
        ]
        for r in kept:
            out.append(
                f"| {r.get('index')} | `{str(r.get('commit') or '')[:7]}` | "
                f"{_cell(r.get('best_after', r.get('objective')), dec)} | "
                f"{_delta(r, dec)} | {_md(r.get('description', ''))} |"
            )
        out.append("")
    out += learned_markdown(records, goal, dec)
    out += _workers_markdown(records, getattr(result, "workers", None))
    by = any(r.get("worker") for r in records)  # a worker column for parallel runs
    out += [
        "## All experiments",
        "",
        "| # | status |" + (" worker |" if by else "") + " value | change | description | reason |",
        "|---|---|" + ("---|" if by else "") + "---|---|---|---|",
    ]
    for r in records:
        out.append(
            f"| {r.get('index')} | {r.get('status')} |"
            + (f" {_md(r.get('worker') or '-')} |" if by else "")
            + f" {_cell(r.get('objective'), dec)} | {_delta(r, dec)} | "
            f"{_md(r.get('description', ''))} | {_md(r.get('reason', ''))} |"
        )
    out.append("")
    if program is not None and getattr(program, "path", None):
        out += [f"Program: `{program.path}`; editable: {', '.join(program.editable)}.", ""]
    path = directory / "report.md"
    path.write_text(scrub("\n".join(out)), encoding="utf-8")
    return path


def _cell(value: Any, dec: int) -> str:
    return f"{value:.{dec}f}" if _finite(value) else "-"


def _delta(rec: dict[str, Any], dec: int) -> str:
    value, before = rec.get("objective"), rec.get("best_before")
    return _signed(value - before, dec) if _finite(value) and _finite(before) else ""


def _md(text: Any) -> str:
    return _one_line(str(text), 120).replace("|", "\\|")


def plot_progress(
    path: Path,
    records: Sequence[dict[str, Any]],
    *,
    objective: str,
    goal: str,
    baseline: float | None,
) -> str | None:
    """Draw every experiment as a dot and the running best as a step line; None when drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'pytest-autoresearch[plot]')"
    pts = [(r["index"], r["objective"]) for r in records if _finite(r.get("objective"))]
    if not pts and not _finite(baseline):
        return "no experiment produced a value yet"
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=120)
    try:
        _draw(ax, records, objective, goal, baseline)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return None


def _draw(
    ax: Any, records: Sequence[dict[str, Any]], objective: str, goal: str, baseline: Any
) -> None:
    colours = {"keep": "#2ca02c", "discard": "#9e9e9e", "stale": "#ff7f0e", "crash": "#d62728"}
    for status, colour in colours.items():
        xs = [
            r["index"] for r in records if r.get("status") == status and _finite(r.get("objective"))
        ]
        ys = [
            r["objective"]
            for r in records
            if r.get("status") == status and _finite(r.get("objective"))
        ]
        if xs:
            size, alpha = (60, 1.0) if status == "keep" else (22, 0.6)
            ax.scatter(xs, ys, s=size, c=colour, alpha=alpha, label=status, zorder=3)
    # The running best: flat until a keep, then the kept (confirmed) value.
    last = max((r["index"] for r in records), default=0)
    steps_x, steps_y = [0], [baseline if _finite(baseline) else None]
    for r in sorted(records, key=lambda r: r["index"]):
        if r.get("status") == "keep" and _finite(r.get("best_after")):
            steps_x.append(r["index"])
            steps_y.append(r["best_after"])
    if steps_y[0] is None:
        steps_x, steps_y = steps_x[1:], steps_y[1:]
    if steps_x:
        steps_x.append(max(last, steps_x[-1]))
        steps_y.append(steps_y[-1])
        ax.step(steps_x, steps_y, where="post", color="#1f77b4", lw=2, label="best", zorder=2)
    kept = [r for r in records if r.get("status") == "keep" and _finite(r.get("objective"))]
    for n, r in enumerate(kept):
        ax.annotate(
            f"#{r['index']} " + _one_line(str(r.get("description", "")), 28),
            (r["index"], r["objective"]),
            xytext=(8, 12 if n % 2 == 0 else -16),
            textcoords="offset points",
            fontsize=8,
            color="#1b5e20",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
            zorder=4,
        )
    arrow = "lower is better" if goal == "min" else "higher is better"
    ax.set_xlabel("experiment")
    ax.set_ylabel(f"{objective} ({arrow})")
    novalue = sum(1 for r in records if not _finite(r.get("objective")))
    extra = f" ({novalue} without a value, not shown)" if novalue else ""
    ax.set_title(f"{objective}: {len(kept)} kept of {len(records)} experiments{extra}")
    ax.margins(x=0.08)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=9)
