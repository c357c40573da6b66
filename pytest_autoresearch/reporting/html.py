"""report.html: one self-contained page of a research record, live while the run goes on.

API
---
PAGE_NAME = "report.html"
render_page(view, *, now=None) -> str        the whole page (run_view.RunView -> HTML)
write_page(directory, view=None, **extras) -> Path
    renders and writes ``directory/report.html`` atomically (a temp file, then os.replace);
    ``view`` defaults to the record in ``directory`` (``extras``: holdout, time_budget, max_cost)
page_version(html_head) -> str | None         the version a page carries (for the live server)

What it shows: state (live / ended, and why), baseline -> best, noise, ETA and budgets; the
objective over experiments (every value and sample, the kept frontier, the noise band) and
the holdout beside it; the experiments (page_rows), workers and their utilisation, what was
learned (learned.learned_markdown, as HTML). No network: inline CSS, SVG and a small script
allowed by hash (page_assets). Text is scrubbed when read (run_view) and escaped here.
"""

from __future__ import annotations

import datetime
import os
import re
import tempfile
from html import escape
from pathlib import Path
from typing import Any

from pytest_autoresearch.reporting.learned import learned_markdown
from pytest_autoresearch.reporting.page_assets import CSP, CSS, JS
from pytest_autoresearch.reporting.page_rows import esc, experiments_section, num
from pytest_autoresearch.reporting.plot import PLOT_NAME
from pytest_autoresearch.reporting.report import eta_seconds
from pytest_autoresearch.reporting.run_view import RunView, read_run, scrub_all
from pytest_autoresearch.reporting.svg import chart
from pytest_autoresearch.reporting.text import decimals, finite, format_duration
from pytest_autoresearch.reporting.workers import (
    journal_time,
    throughput,
    wall_seconds,
    worker_stats,
)

__all__ = ["PAGE_NAME", "page_version", "render_page", "write_page"]

PAGE_NAME = "report.html"
_VERSION = re.compile(rb'data-version="(\d+)"')


def render_page(view: RunView, *, now: float | None = None) -> str:
    """The page for ``view`` (a snapshot of a record folder)."""
    now = datetime.datetime.now(datetime.timezone.utc).timestamp() if now is None else now
    dec = decimals(view.sigma, view.baseline)
    title = f"autoresearch {view.tag}: {view.objective}"
    body = [
        _header(view, now),
        '<div class="banner" id="banner" hidden></div>',
        _stats(view, now, dec),
        _charts(view, dec),
        experiments_section(view.records, dec=dec),
        _workers(view),
        _learned(view, dec),
        _footer(view, now),
    ]
    return (
        f'<!DOCTYPE html>\n<html lang="en" data-version="{view.version}" '
        f'data-live="{1 if view.live else 0}">\n<head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="color-scheme" content="light dark"><link rel="icon" href="data:,">'
        + ('<noscript><meta http-equiv="refresh" content="30"></noscript>' if view.live else "")
        + f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body><main>"
        + "".join(body)
        + f"</main><script>{JS}</script></body></html>\n"
    )


def _utc(ts: float | None) -> str:
    if ts is None:
        return "?"
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _header(view: RunView, now: float) -> str:
    if view.live:
        state = '<span class="state live">live</span>'
        why = f"updated {_utc(now)}; this page follows the run"
    elif view.ended:
        state = '<span class="state ended">ended</span>'
        why = f"{esc(view.end_reason or 'ended')}, {_utc(journal_time(view.ended_at))}"
    elif view.records:  # a record from before session lines were journaled
        state = '<span class="state ended">no end recorded</span>'
        why = "this record does not say how its run ended"
    else:
        state = '<span class="state ended">not started</span>'
        why = "no research session in this record yet"
    arrow = "lower is better" if view.goal == "min" else "higher is better"
    return (
        f"<header><h1>autoresearch <code>{esc(view.tag)}</code>: {esc(view.objective)} "
        f'<span class="mute">({esc(view.goal)}, {arrow})</span></h1>'
        f'<p>{state} <span class="mute">{why}</span></p></header>'
    )


def _stat(value: str, label: str) -> str:
    return f'<div class="stat"><b>{value}</b><span>{label}</span></div>'


def _stats(view: RunView, now: float, dec: int) -> str:
    recs, best = view.records, view.best
    out = []
    if finite(view.baseline) and finite(best):
        change = (
            f", {100 * (best - view.baseline) / abs(view.baseline):+.2f}%" if view.baseline else ""
        )
        out.append(
            _stat(
                f"{num(view.baseline, dec)} &rarr; {num(best, dec)}",
                f"baseline &rarr; best{change}",
            )
        )
    if finite(view.sigma):
        out.append(_stat(f"&plusmn;{num(view.sigma, dec)}", "noise (baseline sigma)"))
    kept = sum(1 for r in recs if r.get("status") == "keep")
    total = f" / {view.total}" if view.total else ""
    out.append(_stat(f"{len(recs)}{total}", f"experiments, {kept} kept"))
    if view.in_flight:
        running = ", ".join(f"#{i}" for i in view.in_flight[:8])
        out.append(_stat(running, "in flight now"))
    out += _eta(view, now)
    usd = view.cost.get("usd")
    if finite(usd) and usd > 0 or view.max_cost:
        cap = f" of ${view.max_cost:.2f}" if view.max_cost else ""
        out.append(_stat(f"${usd or 0:.2f}{cap}", "LLM cost"))
    per_hour = throughput(recs)
    if per_hour:
        out.append(_stat(f"{per_hour:.1f}/h", "experiments per hour"))
    if view.proposer:
        out.append(_stat(esc(view.proposer), "proposer"))
    return f'<section class="stats">{"".join(out)}</section>'


def _eta(view: RunView, now: float) -> list[str]:
    """Time left at the pace so far, and the time budget's end, while the run is live."""
    out = []
    if view.live and view.total:
        remaining = view.total - len(view.records)
        per_hour = throughput(view.records)
        if per_hour and remaining > 0:
            left: float | None = 3600.0 * remaining / per_hour
        else:
            took = [(r.get("durations") or {}).get("total") for r in view.records]
            left = eta_seconds([t for t in took if finite(t)], remaining)
        if left:
            out.append(_stat(format_duration(left), f"left at this pace ({remaining} to go)"))
    start = journal_time(view.session_started)
    if view.time_budget and start is not None:
        end = start + view.time_budget
        left_s = end - now
        value = format_duration(left_s) if view.live and left_s > 0 else "spent"
        out.append(
            _stat(
                value,
                f"of the {format_duration(view.time_budget)} time budget left (until {_utc(end)})",
            )
        )
    elif wall_seconds(view.records):
        out.append(_stat(format_duration(wall_seconds(view.records) or 0), "spent running"))
    return out


def _charts(view: RunView, dec: int) -> str:
    main = chart(
        view.records,
        metric=view.objective,
        goal=view.goal,
        baseline=view.baseline,
        sigma=view.sigma,
        title=f"{view.objective} over experiments",
        dec=dec,
    )
    if not main:
        return '<p class="mute">No value yet: the baseline is being measured.</p>'
    figs = [
        f"<figure>{main}<figcaption>{esc(view.objective)}: every experiment (dots; small: "
        "further samples), the kept best (line) and its noise band"
        f"{_legend()}</figcaption></figure>"
    ]
    h = view.holdout
    if h:
        side = chart(
            view.records,
            metric=h,
            goal=view.goals.get(h, view.goal),
            baseline=view.baseline_metrics.get(h),
            title=f"holdout {h}",
            dec=decimals(None, view.baseline_metrics.get(h)),
            holdout=True,
            width=380,
        )
        if side:
            figs.append(
                f"<figure>{side}<figcaption>holdout {esc(h)}: never used to decide; the line "
                "follows the kept experiments</figcaption></figure>"
            )
    cls = "charts" if len(figs) > 1 else "charts one"
    return f'<section class="{cls}">{"".join(figs)}</section>'


def _legend() -> str:
    colours = ("keep", "discard", "crash", "stale", "other")
    return (
        '<br><span class="legend">'
        + "".join(f'<i style="background:var(--{c})"></i>{c}' for c in colours)
        + "</span>"
    )


def _workers(view: RunView) -> str:
    stats = worker_stats(view.records, workers=view.workers)
    if not stats:
        return ""
    rows = []
    for s in stats:
        share = s.utilisation
        bar = (
            f'<span class="bar" style="width:{60 * share:.0f}px"></span>{100 * share:.0f}%'
            if share is not None
            else "-"
        )
        rows.append(
            f"<tr><td>{esc(s.worker)}</td><td>{esc(s.host or '-')}</td><td>{s.experiments}</td>"
            f"<td>{s.evaluations}</td><td>{format_duration(s.busy_seconds)}</td><td>{bar}</td></tr>"
        )
    return (
        f'<section id="workers"><h2>Workers ({len(stats)})</h2><table><tr><th>worker</th>'
        "<th>host</th><th>experiments</th><th>evaluations</th><th>busy</th>"
        f"<th>utilisation</th></tr>{''.join(rows)}</table></section>"
    )


# Optuna's importances over 200 trials take ~0.3 s: while a run is live the section is
# recomputed every LEARNED_EVERY experiments (and always on the final page).
LEARNED_EVERY = 10
_LEARNED: dict[tuple[str, str, int], tuple[int, str]] = {}


def _learned(view: RunView, dec: int) -> str:
    """learned.learned_markdown as HTML (one source for report.md and the page)."""
    key, n = (str(view.directory), view.goal, dec), len(view.records)
    cached = _LEARNED.get(key)
    if view.live and cached is not None and 0 <= n - cached[0] < LEARNED_EVERY:
        return cached[1]
    lines = scrub_all(learned_markdown(view.records, view.goal, dec))
    text = '<section id="learned">' + _markdown(lines) + "</section>" if lines else ""
    _LEARNED[key] = (n, text)
    return text


def _inline(text: str) -> str:
    out = escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"(?<![\w])_(.+?)_(?![\w])", r"<em>\1</em>", out)


def _markdown(lines: list[str]) -> str:
    """The little markdown learned_markdown writes: headings, tables, paragraphs."""
    out: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, rows = table[0], [r for r in table[1:] if not set("".join(r)) <= set("-: ")]
            out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>")
            out.extend(
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows
            )
            out.append("</table>")
            table.clear()

    for line in lines:
        if line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
            table.append([c.strip().replace("\\|", "|") for c in cells])
            continue
        flush()
        if line.startswith("#"):
            level = min(3, len(line) - len(line.lstrip("#")) + 0)
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    flush()
    return "".join(out)


def _footer(view: RunView, now: float) -> str:
    files = [
        f'<a href="{name}">{name}</a>'
        for name in ("report.md", PLOT_NAME, "results.tsv")
        if (view.directory / name).exists()
    ]
    skipped = (
        f"; {view.skipped_lines} unreadable journal lines skipped" if view.skipped_lines else ""
    )
    return (
        f"<footer>Record <code>{esc(view.directory.name)}</code>"
        + (f" ({', '.join(files)})" if files else "")
        + "; everything, diffs and logs uncut: experiments.jsonl beside this page"
        + f"; page written {_utc(now)}{skipped}. Regenerate with "
        f"<code>pytest --autoresearch-report {esc(view.tag)}</code>.</footer>"
    )


def write_page(directory: Path, view: RunView | None = None, **extras: Any) -> Path:
    """Render and write ``directory/report.html`` atomically; return its path."""
    directory = Path(directory)
    if view is None:
        view = read_run(directory, **extras)
    text = render_page(view)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / PAGE_NAME
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html.tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def page_version(head: bytes) -> str | None:
    """The ``data-version`` in the first bytes of a page, None when absent."""
    m = _VERSION.search(head)
    return m.group(1).decode("ascii") if m else None
