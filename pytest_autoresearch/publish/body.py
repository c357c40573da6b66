"""The pull request's words: a title with the objective's change and a body for reviewers.

API::

    title(result, records) -> str
        ``autoresearch: val_bpb 0.998 → 0.981 (−1.7%), 5 kept of 137``
    body(result, records, *, branch, base, machine=None, record_url=None) -> str
        Markdown: kept experiments (description, change, noise floor, runs), holdout,
        guards, cost, machine, how to reproduce one experiment, where the record is.

Pure text from the run's LoopResult (read by attribute) and its journal records; every
string goes through the journal's secret scrubber. ``MARKER`` starts every body, so a
later run recognises the pull requests it opened (and only those) to supersede them.
"""

from __future__ import annotations

import math
import platform
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_autoresearch.sandbox.secrets import scrub

__all__ = ["MARKER", "MAX_BODY", "body", "kept_records", "title"]

MARKER = "<!-- pytest-autoresearch pull request -->"
MAX_BODY = 60_000  # GitHub refuses bodies over 65,536 characters
_MAX_DIFF = 4_000  # per kept experiment; the commit has the rest


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _decimals(noise: Any, value: Any) -> int:
    """Enough decimals to show the noise's first digit (as the terminal summary does)."""
    if _finite(noise) and noise > 0:
        exp = math.floor(math.log10(noise))
        lead = noise / 10**exp  # ±0.0012 keeps a second digit, ±0.004 does not
        return max(0, min(10, -exp + (1 if lead < 2.95 else 0)))
    if _finite(value) and value != 0:
        return max(0, min(10, 3 - math.floor(math.log10(abs(value)))))
    return 4


def _pct(new: float, old: float) -> str:
    if not old:
        return ""
    pct = 100 * (new - old) / abs(old)
    text = f"{pct:+.1f}%" if abs(pct) >= 0.1 else f"{pct:+.2f}%"
    return text.replace("-", "−")  # a real minus sign, as in the title people read


def kept_records(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The experiments kept on the branch, in order."""
    return [r for r in records if r.get("status") == "keep"]


def title(result: Any, records: Sequence[dict[str, Any]]) -> str:
    """``autoresearch: val_bpb 0.998 → 0.981 (−1.7%), 5 kept of 137``."""
    objective = getattr(result, "objective", "objective")
    baseline, best = getattr(result, "baseline", None), getattr(result, "best", None)
    kept = len(kept_records(records))
    counts = f"{kept} kept of {len(records)}"
    if _finite(baseline) and _finite(best):
        dec = _decimals(getattr(result, "sigma", None), baseline)
        change = _pct(best, baseline)
        change = f" ({change})" if change else ""
        return scrub(
            f"autoresearch: {objective} {baseline:.{dec}f} → {best:.{dec}f}{change}, {counts}"
        )
    return scrub(f"autoresearch: {objective}, {counts}")


def _md(text: Any, limit: int = 200) -> str:
    one = " ".join(str(text or "").split())
    one = one if len(one) <= limit else one[: limit - 1] + "…"
    return one.replace("|", "\\|")


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks inside ``text``."""
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def _kept_section(result: Any, kept: list[dict[str, Any]], dec: int) -> list[str]:
    objective = getattr(result, "objective", "objective")
    out = [
        "## Kept experiments",
        "",
        "Each one is its own commit on this branch: review, or revert, them one by one.",
        "",
        f"| # | commit | {objective} | change | noise floor (±σ) | runs | description |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in kept:
        value = r.get("best_after", r.get("objective"))
        before = r.get("best_before")
        change = ""
        if _finite(value) and _finite(before):
            change = f"{value - before:+.{dec}f} ({_pct(value, before)})".replace("-", "−")
        noise = r.get("noise")
        runs = len((r.get("samples") or {}).get(objective) or [])
        out.append(
            f"| {r.get('index')} | `{str(r.get('commit') or '')[:7]}` | "
            f"{f'{value:.{dec}f}' if _finite(value) else '-'} | {change} | "
            f"{f'±{noise:.{dec}f}' if _finite(noise) else '-'} | {runs or '-'} | "
            f"{_md(r.get('description'))} |"
        )
    out.append("")
    for r in kept:
        diff = str(r.get("diff") or "")
        added, removed = r.get("lines_added"), r.get("lines_removed")
        size = f" (+{added} −{removed} lines)" if _finite(added) and _finite(removed) else ""
        out += [
            f"<details><summary>#{r.get('index')} {_md(r.get('description'), 120)}{size}</summary>",
            "",
            f"Decision: {_md(r.get('reason'), 300)}.",
            "",
        ]
        if diff:
            if len(diff) > _MAX_DIFF:
                diff = diff[:_MAX_DIFF] + f"\n… (cut; see commit {str(r.get('commit'))[:12]})"
            fence = _fence(diff)
            out += [f"{fence}diff", diff.rstrip("\n"), fence, ""]
        out += ["</details>", ""]
    return out


def _holdout_lines(result: Any) -> list[str]:
    name = getattr(result, "holdout", None)
    if not name:
        return ["No holdout metric is set in program.md (`holdout:`), so nothing guards "
                "against gains that only fit the objective."]  # fmt: skip
    h0, h1 = getattr(result, "holdout_baseline", None), getattr(result, "holdout_best", None)
    if not (_finite(h0) and _finite(h1)):
        return [f"Holdout `{name}`: no value to compare."]
    goal = getattr(result, "holdout_goal", None) or getattr(result, "goal", "min")
    dec = _decimals(None, h0)
    worse = h1 > h0 if goal == "min" else h1 < h0
    line = f"Holdout `{name}` ({goal}): {h0:.{dec}f} → {h1:.{dec}f} ({_pct(h1, h0) or '±0'})."
    if worse:
        line += (
            " **Warning: the holdout got worse while the objective improved — the gains may "
            "be overfitted to the objective; check before merging.**"
        )
    return [line]


def _guard_lines(records: Sequence[dict[str, Any]], kept: list[dict[str, Any]]) -> list[str]:
    failed: dict[str, int] = {}
    for r in records:
        guards = r.get("guards") or {}
        for name in guards.get("failed") or []:
            failed[str(name)] = failed.get(str(name), 0) + 1
    ok = sum(1 for r in kept if (r.get("guards") or {}).get("passed", True))
    lines = [f"Every kept experiment passed the guard tests ({ok} of {len(kept)})."]
    if failed:
        worst = sorted(failed.items(), key=lambda kv: -kv[1])[:5]
        lines.append(
            "Guards that stopped other experiments: "
            + ", ".join(f"`{_md(n, 120)}` ({c}×)" for n, c in worst)
            + "."
        )
    return lines


def _cost_lines(result: Any, records: Sequence[dict[str, Any]]) -> list[str]:
    cost = getattr(result, "cost", None)
    totals = {"usd": 0.0, "input_tokens": 0, "output_tokens": 0}
    if cost is not None:
        for key in totals:
            value = cost.get(key) if isinstance(cost, dict) else getattr(cost, key, 0)
            totals[key] = value if _finite(value) else 0
    if not any(totals.values()):
        for r in records:
            for key in totals:
                value = (r.get("cost") or {}).get(key)
                totals[key] += value if _finite(value) else 0
    proposers = sorted({str(r.get("proposer")) for r in records if r.get("proposer")})
    who = f" (proposer: {', '.join(proposers)})" if proposers else ""
    if not any(totals.values()):
        return [f"No LLM cost{who}."]
    return [
        f"LLM cost{who}: ${totals['usd']:.2f}, {int(totals['input_tokens']):,} input and "
        f"{int(totals['output_tokens']):,} output tokens."
    ]


def _machine_lines(machine: dict[str, Any] | None) -> list[str]:
    m = machine or {"node": platform.node(), "platform": platform.platform()}
    parts = [f"`{_md(m.get(k), 100)}`" for k in ("node", "platform") if m.get(k)]
    if m.get("python"):
        parts.append(f"Python {m['python']}")
    if m.get("cpu_count"):
        parts.append(f"{m['cpu_count']} CPUs")
    if m.get("gpu"):
        parts.append(f"GPU: {_md(m['gpu'], 200)}")
    return ["Measured on " + ", ".join(parts) + "."]


def _reproduce_lines(result: Any, kept: list[dict[str, Any]], branch: str) -> list[str]:
    example = kept[-1] if kept else {}
    commit = str(example.get("commit") or branch)[:12]
    parent = str(example.get("parent") or "")[:12]
    objective = getattr(result, "objective", "objective")
    compare = (
        [
            f"git checkout {parent}   # the commit it was tried on",
            "pytest -m metric --metrics-save before",
            f"git checkout {commit}",
            "pytest -m metric --metrics-compare before",
        ]
        if parent
        else [f"git checkout {commit}", "pytest -m metric"]
    )
    return [
        f"Check out a kept commit and run the metric tests; the `{objective}` row of the "
        "metrics table is the number the decision used (its median over `runs`):",
        "",
        "```bash",
        f"git fetch origin {shlex.quote(branch)}",
        *compare,
        "```",
    ]


def body(
    result: Any,
    records: Sequence[dict[str, Any]],
    *,
    branch: str,
    base: str,
    machine: dict[str, Any] | None = None,
    record_url: str | None = None,
) -> str:
    """The pull request's Markdown body (also the job's step summary)."""
    objective = getattr(result, "objective", "objective")
    goal = getattr(result, "goal", "min")
    baseline, best = getattr(result, "baseline", None), getattr(result, "best", None)
    sigma = getattr(result, "sigma", None)
    dec = _decimals(sigma, baseline)
    kept = kept_records(records)
    counts: dict[str, int] = {}
    for r in records:
        counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    out = [MARKER, f"## {title(result, records)}", ""]
    if _finite(baseline) and _finite(best):
        arrow = "lower" if goal == "min" else "higher"
        noise = f", noise ±{sigma:.{dec}f}" if _finite(sigma) else ""
        out.append(
            f"`{objective}` ({arrow} is better): baseline {baseline:.{dec}f} → best "
            f"{best:.{dec}f} ({_pct(best, baseline) or '±0'}){noise}."
        )
    by_status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    out.append(
        f"Research branch `{branch}` from `{base}`: {len(records)} experiments ({by_status})."
    )
    if getattr(result, "stop_reason", None):
        out.append(f"Stopped: {result.stop_reason}.")
    out.append("")
    out += _kept_section(result, kept, dec)
    out += ["## Holdout", "", *_holdout_lines(result), ""]
    out += ["## Guards", "", *_guard_lines(records, kept), ""]
    out += ["## Cost", "", *_cost_lines(result, records), ""]
    out += ["## Machine", "", *_machine_lines(machine), ""]
    out += ["## Reproduce one experiment", "", *_reproduce_lines(result, kept, branch), ""]
    record_dir = getattr(result, "record_dir", None)
    if record_dir:  # relative: the runner's absolute paths mean nothing to a reviewer
        record_dir = Path(record_dir)
        record_dir = f"{record_dir.parent.name}/{record_dir.name}"
    where = f"[the run's artifacts]({record_url})" if record_url else "the run's machine"
    out += [
        "## Full record",
        "",
        f"Every experiment (kept or not), its diff, samples, decision and log tail: "
        f"`experiments.jsonl`, `results.tsv`, `report.md` and `progress.png` in "
        f"`{record_dir or '.autoresearch/<tag>'}`, on {where}. Open `report.html` from there "
        "in a browser for the whole run on one page (no network needed): the chart, every "
        "experiment with its diff and log tail, the workers, what was learned.",
        "",
        "_Opened by pytest-autoresearch: a rerun of this research branch updates this pull "
        "request; a new run on another branch supersedes it._",
    ]
    text = scrub("\n".join(out))
    if len(text) > MAX_BODY:
        text = text[: MAX_BODY - 80] + "\n\n… (cut to fit GitHub's limit; see the full record)"
    return text


CHART_POINTS = 200  # Mermaid draws every point: a longer run is thinned evenly


def chart(result: Any, records: Sequence[dict[str, Any]]) -> list[str]:
    """The objective per experiment and the best kept so far, as a Mermaid chart.

    GitHub renders Mermaid in Markdown (job summaries and pull requests alike), so the
    chart needs no image upload. Experiments without a value (crashes) are left out.
    """
    objective = str(getattr(result, "objective", "objective"))
    points = [
        (r.get("index"), r["objective"], r.get("best_after"))
        for r in sorted(records, key=lambda r: r.get("index") or 0)
        if _finite(r.get("objective"))
    ]
    if len(points) < 2:
        return []
    if len(points) > CHART_POINTS:
        step = len(points) / CHART_POINTS
        points = [points[int(i * step)] for i in range(CHART_POINTS - 1)] + [points[-1]]
    baseline = getattr(result, "baseline", None)
    best = [b if _finite(b) else baseline for _, _, b in points]
    values = [v for _, v, _ in points] + [b for b in best if _finite(b)]
    low, high = min(values), max(values)
    pad = (high - low) * 0.05 or abs(high) * 0.01 or 1.0

    def num(x: float) -> str:
        return f"{x:.6g}"

    name = objective.replace('"', "'")
    return [
        "```mermaid",
        "xychart-beta",
        f'    title "{name} per experiment (line: best kept so far)"',
        f'    x-axis "experiment" [{", ".join(str(i) for i, _, _ in points)}]',
        f'    y-axis "{name}" {num(low - pad)} --> {num(high + pad)}',
        f"    bar [{', '.join(num(v) for _, v, _ in points)}]",
        f"    line [{', '.join(num(b) if _finite(b) else num(low) for b in best)}]",
        "```",
    ]
