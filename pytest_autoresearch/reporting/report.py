"""What a research run tells people: one line per experiment, a summary, report.md.

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
write_report(directory, records, result, program=None) -> Path     report.md (+ progress.png)

Also importable from here: worker_stats, throughput, wall_seconds, worker_lines,
WorkerStat (``workers``: per-worker share of a parallel run) and plot_progress,
PLOT_NAME (``plot``: progress.png); numbers are formatted by ``text``.

Records are the journal's experiment dicts (docs/architecture.md). matplotlib is imported
lazily, with the Agg backend, only to draw the plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_autoresearch.reporting.halves import halves_lines, halves_markdown
from pytest_autoresearch.reporting.learned import learned_lines, learned_markdown
from pytest_autoresearch.reporting.plot import PLOT_NAME, plot_progress
from pytest_autoresearch.reporting.text import (
    cell,
    decimals,
    finite,
    format_duration,
    md,
    one_line,
    signed,
)
from pytest_autoresearch.reporting.workers import (
    WorkerStat,
    journal_time,
    throughput,
    wall_seconds,
    worker_lines,
    worker_stats,
    workers_markdown,
)
from pytest_autoresearch.sandbox.secrets import scrub

# The report page (html.py) imports these under the names they had here.
_decimals, _finite, _time = decimals, finite, journal_time

__all__ = [
    "PLOT_NAME",
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


def eta_seconds(durations: Sequence[float], remaining: int) -> float | None:
    """Time left if the remaining experiments take as long as the finished ones did."""
    done = [d for d in durations if finite(d)]
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
    dec = decimals(noise, value)
    parts = [head, status.ljust(5), name]
    if rec.get("worker"):
        parts.insert(1, f"[{rec['worker']}]")
    if finite(value):
        parts.append(f"{value:.{dec}f}")
        before = rec.get("best_before")
        detail = []
        if finite(before):
            detail.append(signed(value - before, dec))
        if finite(noise):
            detail.append(f"noise ±{noise:.{dec}f}")
        if detail:
            parts.append("(" + ", ".join(detail) + ")")
    else:
        parts.append("-")
    text = " ".join(parts) + " " + one_line(str(rec.get("description", "")), 80)
    if status in ("crash", "rejected", "error", "stale") and rec.get("reason"):
        text += f" [{one_line(str(rec['reason']), 100)}]"
    took = (rec.get("durations") or {}).get("total")
    if finite(took):
        text += f"  {format_duration(took)}"
    if finite(eta_seconds) and eta_seconds > 0:
        text += f"  ETA {format_duration(eta_seconds)}"
    return scrub(text)


def _better(goal: str, new: float, old: float) -> bool:
    return new < old if goal == "min" else new > old


def _change(new: float, old: float, dec: int) -> str:
    pct = f", {100 * (new - old) / abs(old):+.2f}%" if old else ""
    return signed(new - old, dec) + pct


def summary_lines(records: Sequence[dict[str, Any]], result: Any) -> list[str]:
    """The end-of-run summary: baseline -> best, kept, where things are, holdout check,
    then what was learned (per parameter, or the LLM's ideas grouped)."""
    goal = getattr(result, "goal", "min")
    dec = decimals(getattr(result, "sigma", None), getattr(result, "baseline", None))
    learned = halves_lines(records, dec) + learned_lines(records, goal, dec)
    workers = worker_lines(records, workers=getattr(result, "workers", None))
    return _summary(records, result) + [scrub(line) for line in workers + learned]


def _summary(records: Sequence[dict[str, Any]], result: Any) -> list[str]:
    get = lambda name, default=None: getattr(result, name, default)  # noqa: E731
    objective, goal = get("objective", "objective"), get("goal", "min")
    baseline, best, sigma = get("baseline"), get("best"), get("sigma")
    dec = decimals(sigma, baseline)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
    lines = []
    if finite(baseline) and finite(best):
        lines.append(
            f"{objective} ({goal}): baseline {baseline:.{dec}f} -> best {best:.{dec}f} "
            f"({_change(best, baseline, dec)})"
            + (f", noise ±{sigma:.{dec}f}" if finite(sigma) else "")
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
    if finite(usd) and usd > 0:
        lines.append(f"LLM cost: ${usd:.2f}")
    lines += _checks_lines(records)
    return [scrub(line) for line in lines]


def _checks_lines(records: Sequence[dict[str, Any]]) -> list[str]:
    """The LLM's check tool: calls, how many passed, their time (research/checks.py)."""
    checked = [r["checks"] for r in records if isinstance(r.get("checks"), dict)]
    calls = sum(int(c.get("calls") or 0) for c in checked)
    if not calls:
        return []
    passed = sum(int(c.get("passed") or 0) for c in checked)
    seconds = sum(float(c.get("seconds") or 0.0) for c in checked)
    return [
        f"checks before evaluation: {calls} in {len(checked)} experiment(s), {passed} passed, "
        f"{calls - passed} failed; {format_duration(seconds)} in all"
    ]


def _holdout_lines(result: Any, goal: str, baseline: Any, best: Any) -> list[str]:
    name = getattr(result, "holdout", None)
    h0, h1 = getattr(result, "holdout_baseline", None), getattr(result, "holdout_best", None)
    if not name:
        return []
    if not (finite(h0) and finite(h1)):
        return [f"holdout {name}: no value to compare"]
    hgoal = getattr(result, "holdout_goal", None) or goal
    dec = decimals(None, h0)
    line = f"holdout {name} ({hgoal}): {h0:.{dec}f} -> {h1:.{dec}f} ({_change(h1, h0, dec)})"
    improved = finite(baseline) and finite(best) and _better(goal, best, baseline)
    if improved and _better(hgoal, h0, h1):
        return [
            line,
            f"WARNING: the objective improved but the holdout {name} got worse: "
            "the gains may be overfitted to the objective; check before merging",
        ]
    return [line]


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
    dec = decimals(sigma, baseline)
    out = [f"# Research report: {objective}", ""]
    out += [f"- {line}" for line in _summary(records, result)]
    out.append("")
    if why_not is None:
        out += [f"![progress]({PLOT_NAME})", ""]
    else:
        out += [f"_No plot: {why_not}._", ""]
    out += _kept_table(records, dec)
    out += learned_markdown(records, goal, dec)
    out += halves_markdown(records, dec)  # a hybrid run: what the LLM and Optuna each did
    out += workers_markdown(records, getattr(result, "workers", None))
    out += _notes_section(directory)
    out += _artifacts_section(records)
    out += _experiments_table(records, dec)
    if program is not None and getattr(program, "path", None):
        out += [f"Program: `{program.path}`; editable: {', '.join(program.editable)}.", ""]
    path = directory / "report.md"
    path.write_text(scrub("\n".join(out)), encoding="utf-8")
    return path


def _notes_section(directory: Path) -> list[str]:
    """The LLM's research notebook (NOTES.md in the record), as it stood at the end."""
    try:
        notes = (directory / "NOTES.md").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return []
    if not notes:
        return []
    # Fenced: the model wrote it, so its Markdown may not break (or pose as) the report.
    return ["## The model's notes (NOTES.md)", "", "````markdown", notes, "````", ""]


ARTIFACT_LINES = 40  # of each artifact of the best, in report.md


def _artifacts_section(records: Sequence[dict[str, Any]]) -> list[str]:
    """What the metric tests of the last kept experiment attached (record_artifact): the
    end of its training log, say, as the research left it."""
    kept = [r for r in records if r.get("status") == "keep" and r.get("artifacts")]
    if not kept:
        return []
    rec = kept[-1]
    out = [f"## Training signals of the best (experiment {rec.get('index')})", ""]
    for artifact in rec["artifacts"]:
        lines = str(artifact.get("text") or "").rstrip().splitlines()
        shown = lines[-ARTIFACT_LINES:]
        where = f" from `{md(artifact.get('test'))}`" if artifact.get("test") else ""
        cut = len(lines) > len(shown) or bool(artifact.get("cut"))
        tail = f", its last {len(shown)} lines" if cut else ""
        # Fenced: the tests wrote it, so its Markdown may not break (or pose as) the report.
        out += [f"{md(artifact.get('name'))}{where}{tail}:", "", "````text"]
        out += [line.replace("````", "` ` ` `") for line in shown] + ["````", ""]
    return out


def _kept_table(records: Sequence[dict[str, Any]], dec: int) -> list[str]:
    """report.md's "Kept" section; empty when nothing was kept."""
    kept = [r for r in records if r.get("status") == "keep"]
    if not kept:
        return []
    out = [
        "## Kept",
        "",
        "| # | commit | value | change | description |",
        "|---|---|---|---|---|",
    ]
    for r in kept:
        out.append(
            f"| {r.get('index')} | `{str(r.get('commit') or '')[:7]}` | "
            f"{cell(r.get('best_after', r.get('objective')), dec)} | "
            f"{_delta(r, dec)} | {md(r.get('description', ''))} |"
        )
    out.append("")
    return out


def _experiments_table(records: Sequence[dict[str, Any]], dec: int) -> list[str]:
    """report.md's "All experiments" section, with a worker column for parallel runs."""
    by = any(r.get("worker") for r in records)
    out = [
        "## All experiments",
        "",
        "| # | status |" + (" worker |" if by else "") + " value | change | description | reason |",
        "|---|---|" + ("---|" if by else "") + "---|---|---|---|",
    ]
    for r in records:
        out.append(
            f"| {r.get('index')} | {r.get('status')} |"
            + (f" {md(r.get('worker') or '-')} |" if by else "")
            + f" {cell(r.get('objective'), dec)} | {_delta(r, dec)} | "
            f"{md(r.get('description', ''))} | {md(r.get('reason', ''))} |"
        )
    out.append("")
    return out


def _delta(rec: dict[str, Any], dec: int) -> str:
    value, before = rec.get("objective"), rec.get("best_before")
    return signed(value - before, dec) if finite(value) and finite(before) else ""
