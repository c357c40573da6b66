"""report.html's table of experiments: one ``<details>`` a row, opening to its diff, log tail
and the keep rule's reasoning (works without JavaScript).

API
---
experiments_section(records, *, dec) -> str
    newest first; each row ``<details class="exp" id="e<index>" data-status=...>``

Records arrive scrubbed (run_view); here every text is HTML-escaped. Long diffs and logs are
cut (the whole text stays in experiments.jsonl), so 200 experiments stay a small page.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from typing import Any

from pytest_autoresearch.reporting.text import decimals, finite, format_duration, signed

__all__ = ["DIFF_LINES", "LOG_CHARS", "experiments_section"]

DIFF_LINES = 300  # per experiment; the rest is in experiments.jsonl
LOG_CHARS = 4000
STATUSES = ("keep", "discard", "crash", "rejected", "error", "stale")


def esc(x: Any) -> str:
    """Escaped text of an already scrubbed value."""
    return escape(str(x), quote=True)


def num(x: Any, dec: int) -> str:
    return f"{x:.{dec}f}" if finite(x) else "-"


def experiments_section(records: Sequence[dict[str, Any]], *, dec: int) -> str:
    counts = {s: sum(1 for r in records if r.get("status") == s) for s in STATUSES}
    buttons = [f'<button type="button" data-want="all">all {len(records)}</button>']
    buttons += [
        f'<button type="button" data-want="{s}">{s} {n}</button>' for s, n in counts.items() if n
    ]
    head = (
        '<div class="row head"><span>#</span><span>status</span><span>value</span>'
        '<span>change</span><span class="desc">description</span>'
        '<span class="proposer">proposer</span><span class="worker">worker</span>'
        '<span class="time">time</span><span class="cost">cost</span></div>'
    )
    rows = [_cached_row(r, dec) for r in sorted(records, key=lambda r: -int(r.get("index", 0)))]
    return (
        f'<section id="experiments"><h2>Experiments ({len(records)})</h2>'
        f'<div class="tools">{"".join(buttons)}'
        '<input id="q" type="search" placeholder="filter" aria-label="filter experiments">'
        f'</div>{head}<div class="exps">{"".join(rows)}</div></section>'
    )


# A journaled experiment never changes: a live page re-renders only the new rows.
_ROWS: dict[tuple[Any, ...], str] = {}
_ROWS_MAX = 4000


def _cached_row(r: dict[str, Any], dec: int) -> str:
    key = (r.get("index"), r.get("commit"), r.get("status"), r.get("finished"), dec, id(r))
    found = _ROWS.get(key)
    if found is None:
        if len(_ROWS) >= _ROWS_MAX:
            _ROWS.clear()
        found = _ROWS[key] = _row(r, dec)
    return found


def _row(r: dict[str, Any], dec: int) -> str:
    index = int(r.get("index", 0))
    status = str(r.get("status", "?"))
    value, before = r.get("objective"), r.get("best_before")
    delta = signed(value - before, dec) if finite(value) and finite(before) else ""
    took = (r.get("durations") or {}).get("total") if isinstance(r.get("durations"), dict) else None
    usd = (r.get("cost") or {}).get("usd") if isinstance(r.get("cost"), dict) else None
    summary = (
        f'<summary class="row"><span class="num">{index}</span>'
        f'<span class="st {esc(status)}">{esc(status)}</span>'
        f'<span class="num">{num(value, dec)}</span><span class="num">{delta}</span>'
        f'<span class="desc" title="{esc(r.get("description", ""))}">'
        f"{esc(r.get('description', '') or '-')}</span>"
        f'<span class="proposer">{esc(r.get("proposer") or "-")}</span>'
        f'<span class="worker">{esc(r.get("worker") or "-")}</span>'
        f'<span class="time num">{format_duration(took) if finite(took) else "-"}</span>'
        f'<span class="cost num">{f"${usd:.2f}" if finite(usd) and usd > 0 else "-"}</span>'
        "</summary>"
    )
    return (
        f'<details class="exp" id="e{index}" data-status="{esc(status)}">{summary}'
        f'<div class="body">{_body(r, dec)}</div></details>'
    )


def _body(r: dict[str, Any], dec: int) -> str:
    out = [_facts(r, dec)]
    attempts = [a for a in r.get("attempts") or [] if isinstance(a, dict)]
    for n, a in enumerate(attempts, 1):
        out.append(
            f"<h3>Repair attempt {n}: {esc(a.get('status', '?'))}</h3>"
            f"<p>{esc(a.get('reason', ''))}</p>" + _pre(a.get("log_tail"))
        )
    notes = r.get("notes")
    if notes:
        items = notes if isinstance(notes, list) else [notes]
        out.append("<h3>Notes</h3><ul>" + "".join(f"<li>{esc(n)}</li>" for n in items) + "</ul>")
    out.append(_evaluations(r))
    if r.get("diff"):
        out.append("<h3>Diff</h3>" + _diff(str(r["diff"])))
    if r.get("log_tail"):
        out.append("<h3>Log tail</h3>" + _pre(r.get("log_tail")))
    return "".join(out)


def _facts(r: dict[str, Any], dec: int) -> str:
    facts: list[tuple[str, str]] = []
    why = r.get("decision") or r.get("reason")
    if why:
        facts.append(("keep rule", esc(why)))
    if r.get("reason") and r.get("reason") != why:
        facts.append(("reason", esc(r["reason"])))
    noise = r.get("noise")
    ndec = decimals(noise, r.get("objective")) if finite(noise) else dec
    if finite(r.get("best_before")):
        after = num(r.get("best_after"), ndec)
        facts.append(("best", f"{num(r.get('best_before'), ndec)} &rarr; {after}"))
    if finite(r.get("improvement")):
        facts.append(("improvement", signed(r["improvement"], ndec)))
    if finite(noise):
        facts.append(("noise", f"&plusmn;{noise:.{ndec}f}"))
    kept = r.get("kept")
    if isinstance(kept, dict):
        facts.append(("confirmation", esc(_compact(kept))))
    for key, label in (("params", "parameters"), ("metrics", "metrics"), ("samples", "samples")):
        if isinstance(r.get(key), dict) and r[key]:
            facts.append((label, f"<code>{esc(_compact(r[key]))}</code>"))
    guards = r.get("guards")
    if isinstance(guards, dict) and guards.get("passed") is not None:
        failed = ", ".join(map(str, guards.get("failed") or []))
        facts.append(("guards", "passed" if guards["passed"] else esc(f"failed: {failed}")))
    if r.get("lines_added") is not None or r.get("lines_removed") is not None:
        facts.append(
            ("lines", f"+{esc(r.get('lines_added', 0))} -{esc(r.get('lines_removed', 0))}")
        )
    for key in ("commit", "parent"):
        if r.get(key):
            facts.append((key, f"<code>{esc(str(r[key])[:12])}</code>"))
    if r.get("rebased"):
        facts.append(("re-based", esc(r["rebased"])))
    span = " &rarr; ".join(esc(r[k]) for k in ("started", "finished") if r.get(k))
    if span:
        facts.append(("when", span))
    durations = r.get("durations")
    if isinstance(durations, dict) and durations:
        parts = [f"{esc(k)} {format_duration(v)}" for k, v in durations.items() if finite(v)]
        facts.append(("durations", ", ".join(parts)))
    cost = r.get("cost")
    if isinstance(cost, dict) and any(finite(v) and v for v in cost.values()):
        facts.append(("cost", esc(_compact({k: v for k, v in cost.items() if v}))))
    return "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"


def _rounded(obj: Any) -> Any:
    if isinstance(obj, float):
        return float(f"{obj:.6g}")
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v) for v in obj]
    return obj


def _compact(obj: Any) -> str:
    """A JSON-ish line, numbers to 6 significant digits (all of them stay in the journal)."""
    text = json.dumps(_rounded(obj), ensure_ascii=False, default=str)
    return text if len(text) <= 600 else text[:599] + "…"


def _evaluations(r: dict[str, Any]) -> str:
    evals = [e for e in r.get("evaluations") or [] if isinstance(e, dict)]
    if not evals:
        return ""
    rows = []
    for e in evals:
        took = e.get("duration")
        rows.append(
            f"<tr><td>{esc(e.get('kind') or ('confirm' if e.get('confirm') else 'candidate'))}"
            f"</td><td>{esc(e.get('worker') or r.get('worker') or '-')}</td>"
            f"<td>{esc(e.get('host') or '-')}</td><td>{esc(e.get('status') or '-')}</td>"
            f"<td>{format_duration(took) if finite(took) else '-'}</td></tr>"
        )
    return (
        "<h3>Evaluations</h3><table><tr><th>kind</th><th>worker</th><th>host</th>"
        f"<th>status</th><th>time</th></tr>{''.join(rows)}</table>"
    )


def _pre(text: Any) -> str:
    if not text:
        return ""
    text = str(text)
    if len(text) > LOG_CHARS:
        text = "…" + text[-LOG_CHARS:]
    return f"<pre>{esc(text)}</pre>"


def _diff(diff: str) -> str:
    lines = diff.splitlines()
    more = len(lines) - DIFF_LINES
    out = []
    for line in lines[:DIFF_LINES]:
        if line.startswith(("+++", "---", "diff ", "index ", "@@")):
            cls = "h"
        elif line.startswith("+"):
            cls = "a"
        elif line.startswith("-"):
            cls = "d"
        else:
            cls = "c"
        out.append(f'<span class="{cls}">{esc(line) or " "}</span>')
    if more > 0:
        out.append(f'<span class="h">… {more} more lines in experiments.jsonl</span>')
    return f'<pre class="diff">{"".join(out)}</pre>'
