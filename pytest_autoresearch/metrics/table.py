"""The terminal "metrics" section: one row per metric, changes coloured by direction.

API::

    rows(measurements, comparisons, fail_pct=None) -> list[Row]   # plain cells, for tests
    write(tr, measurements, comparisons, baseline=None, problems=(), fail_pct=None) -> None

With ``--metrics-fail P`` (``fail_pct``) a ``gate`` column says, per metric, which of the
two conditions of the noise-aware gate held: ``ok (<=5%)``, ``noise (p=0.400)`` (worse by
more than P but within its noise), ``FAIL (>5%, p=0.029)`` or ``FAIL (>5%, 1 run)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_autoresearch.metrics.baseline import Comparison, gates
from pytest_autoresearch.metrics.metric import Measurement, format_value


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
    measurements: Iterable[Measurement],
    comparisons: Mapping[str, Comparison] | None = None,
    fail_pct: float | None = None,
) -> list[Row]:
    """One Row per measurement; baseline and change cells only when comparing, and the
    gate's verdict when comparing with a ``--metrics-fail`` threshold."""
    verdicts = (
        gates(comparisons.values(), fail_pct)
        if comparisons is not None and fail_pct is not None
        else None
    )
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
            if verdicts is not None:
                g = verdicts.get(m.name)
                cells["gate"] = g.label if g else ""
        out.append(Row(cells, verdict))
    return out


def write(
    tr: Any,
    measurements: Sequence[Measurement],
    comparisons: Mapping[str, Comparison] | None,
    baseline: str | None = None,
    problems: Sequence[str] = (),
    fail_pct: float | None = None,
) -> None:
    """Write the section through pytest's terminal reporter ``tr``."""
    table = rows(measurements, comparisons, fail_pct)
    columns = ["name", "value", "spread", "unit", "goal"]
    if not any(r.cells["spread"] for r in table):
        columns.remove("spread")
    if comparisons is not None:
        columns += ["baseline", "change"]
        if fail_pct is not None:
            columns.append("gate")
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
        # Colour only the change (and a failed gate), so the rest stays readable.
        at = columns.index("change")
        before = columns[:at]
        tr.write(line(row.cells, before).ljust(sum(widths[c] + 2 for c in before)))
        colour = "green" if row.verdict == "better" else "red"
        after = columns[at + 1 :]
        if not after:
            tr.write_line(row.cells["change"], **{colour: True})
            continue
        tr.write(row.cells["change"].ljust(widths["change"] + 2), **{colour: True})
        gate_cell = row.cells.get("gate", "")
        tr.write_line(gate_cell, red=gate_cell.startswith("FAIL"))
    for m in measurements:
        if m.value is None and m.error:
            tr.write_line(f"{m.name}: {m.error}", red=True)
    for problem in problems:
        tr.write_line(problem, red=True)
