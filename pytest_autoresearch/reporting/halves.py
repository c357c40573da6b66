"""What each half of the hybrid proposer contributed, read from the journal's records.

A record of a hybrid run says which half made it (``made_by``: "llm" or "optuna") and, for
the tuning of an earlier change, which experiment it built on (``builds_on``). A keep that
tuned an LLM idea counts for Optuna (it made the kept experiment) and is listed as an LLM
idea made to pay: the LLM alone had lost it.

API::

    halves_lines(records, dec) -> list[str]       the terminal's line ([] for other runs)
    halves_markdown(records, dec) -> list[str]    report.md's section ([] for other runs)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["halves_lines", "halves_markdown"]

HALVES = ("llm", "optuna")


def _stats(records: Sequence[dict[str, Any]]) -> dict[str, tuple[int, int, float]]:
    out = {}
    for half in HALVES:
        mine = [r for r in records if r.get("made_by") == half]
        kept = [r for r in mine if r.get("status") == "keep"]
        gain = sum(r.get("improvement") or 0.0 for r in kept)
        out[half] = (len(mine), len(kept), gain)
    return out


def _tuned_ideas(records: Sequence[dict[str, Any]]) -> list[tuple[int, int, float]]:
    """(the LLM's experiment, the kept tuning of it, its improvement)."""
    by_index = {r.get("index"): r for r in records}
    out = []
    for r in records:
        src = by_index.get(r.get("builds_on"))
        if r.get("status") == "keep" and src is not None and src.get("made_by") == "llm":
            out.append((src["index"], r["index"], r.get("improvement") or 0.0))
    return out


def halves_lines(records: Sequence[dict[str, Any]], dec: int = 4) -> list[str]:
    if not any(r.get("made_by") in HALVES for r in records):
        return []
    s = _stats(records)
    (n1, k1, g1), (n2, k2, g2) = s["llm"], s["optuna"]
    line = (
        f"hybrid: llm made {n1} experiment(s), {k1} kept ({g1:+.{dec}f}); "
        f"optuna made {n2}, {k2} kept ({g2:+.{dec}f})"
    )
    tuned = _tuned_ideas(records)
    if tuned:
        shown = ", ".join(f"#{a} -> #{b} {g:+.{dec}f}" for a, b, g in tuned[:6])
        more = f" and {len(tuned) - 6} more" if len(tuned) > 6 else ""
        line += f"; {len(tuned)} tuned an LLM idea into a keep ({shown}{more})"
    return [line]


def halves_markdown(records: Sequence[dict[str, Any]], dec: int = 4) -> list[str]:
    if not any(r.get("made_by") in HALVES for r in records):
        return []
    s = _stats(records)
    out = [
        "## What each half of the hybrid contributed",
        "",
        "The LLM proposes changes of structure; Optuna tunes numbers (on the best, or on a "
        "short-listed change re-applied on top of the best). Improvement: the sum over the "
        "half's kept experiments.",
        "",
        "| half | experiments | kept | improvement |",
        "|---|---:|---:|---:|",
    ]
    for half in HALVES:
        n, k, g = s[half]
        out.append(f"| {half} | {n} | {k} | {g:+.{dec}f} |")
    out.append("")
    for half in HALVES:  # which half made each experiment (the journal's made_by)
        mine = [f"#{r.get('index')}" for r in records if r.get("made_by") == half]
        out.append(f"- made by {half}: {', '.join(mine) or 'none'}")
    tuned = _tuned_ideas(records)
    if tuned:
        out += ["", "LLM ideas kept only once Optuna tuned their numbers:", ""]
        by_index = {r.get("index"): r for r in records}
        for a, b, g in tuned:
            first = by_index[a]
            value = first.get("improvement")
            was = f"{value:+.{dec}f}" if isinstance(value, (int, float)) else "no value"
            desc = str(first.get("description") or "")[:100].replace("|", "\\|")
            out.append(f"- #{a} {desc}: {was} as proposed, kept as #{b} ({g:+.{dec}f})")
    return out + [""]
