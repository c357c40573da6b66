"""The terminal "metrics" section: one row per metric, changes coloured by direction.

API::

    rows(measurements, comparisons) -> list[Row]      # plain cells, for tests and other reporters
    write(tr, measurements, comparisons, baseline=None, problems=()) -> None
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_autoresearch.baseline import Comparison
from pytest_autoresearch.metric import Measurement, format_value


@dataclass(frozen=True)
class Row:
    """The cells of one metric's line; ``verdict`` picks the colour of the change."""

    cells: dict[str, str]
    verdict: str  # better | worse | same | failed | ""


def fmt(value: float | None) -> str:
    """A number in at most 6 significant digits (what people read in a table)."""
    return "-" if value is None else format_value(value)


def fmt_pct(value: float) -> str:
    """A signed percentage such as +2.35% or -inf%."""
    if math.isinf(value):
        return "+inf%" if value > 0 else "-inf%"
    return f"{value:+.2f}%"


def spread(samples: Sequence[float]) -> str:
    """'min .. max (n=N)' for repeated samples, '' for one."""
    if len(samples) < 2:
        return ""
    return f"{fmt(min(samples))} .. {fmt(max(samples))} (n={len(samples)})"


def rows(
    measurements: Iterable[Measurement], comparisons: Mapping[str, Comparison] | None = None
) -> list[Row]:
    """One Row per measurement; baseline and change cells only when comparing."""
    out = []
    for m in measurements:
        failed = m.value is None
        cells = {
            "name": m.name,
            "value": m.outcome if failed else fmt(m.value),
            "spread": "" if failed else spread(m.samples),
            "unit": m.unit or "",
            "goal": m.goal,
        }
        verdict = "failed" if failed else ""
        if comparisons is not None:
            c = comparisons.get(m.name)
            cells["baseline"] = fmt(c.baseline) if c else "-"
            cells["change"] = fmt_pct(c.change_pct) if c else "new" if not failed else ""
            if c:
                verdict = c.verdict
        out.append(Row(cells, verdict))
    return out


def write(
    tr: Any,
    measurements: Sequence[Measurement],
    comparisons: Mapping[str, Comparison] | None,
    baseline: str | None = None,
    problems: Sequence[str] = (),
) -> None:
    """Write the section through pytest's terminal reporter ``tr``."""
    table = rows(measurements, comparisons)
    columns = ["name", "value", "spread", "unit", "goal"]
    if not any(r.cells["spread"] for r in table):
        columns.remove("spread")
    if comparisons is not None:
        columns += ["baseline", "change"]
    title = "metrics" if baseline is None else f"metrics (compared with baseline {baseline!r})"
    tr.write_sep("=", title)
    headers = {c: c for c in columns}
    widths = {c: max([len(c), *(len(r.cells[c]) for r in table)]) for c in columns}

    def line(cells: Mapping[str, str], cols: list[str]) -> str:
        return "  ".join(cells[c].ljust(widths[c]) for c in cols).rstrip()

    if table:
        tr.write_line(line(headers, columns))
    for row in table:
        if row.verdict not in ("better", "worse"):
            tr.write_line(line(row.cells, columns), red=row.verdict == "failed")
            continue
        # Colour only the change, so the rest of the row stays readable.
        tr.write(line(row.cells, columns[:-1]).ljust(sum(widths[c] + 2 for c in columns[:-1])))
        colour = "green" if row.verdict == "better" else "red"
        tr.write_line(row.cells["change"], **{colour: True})
    for m in measurements:
        if m.value is None and m.error:
            tr.write_line(f"{m.name}: {m.error}", red=True)
    for problem in problems:
        tr.write_line(problem, red=True)
