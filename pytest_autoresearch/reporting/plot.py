"""progress.png: every experiment as a dot, the running best as a step line.

API::

    plot_progress(path, records, *, objective, goal, baseline) -> str | None
        draws the plot; returns None when drawn, else why not (matplotlib missing)

matplotlib is imported lazily, with the Agg backend, only to draw the plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_autoresearch.reporting.text import finite, one_line

__all__ = ["PLOT_NAME", "plot_progress"]

PLOT_NAME = "progress.png"


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
    pts = [(r["index"], r["objective"]) for r in records if finite(r.get("objective"))]
    if not pts and not finite(baseline):
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
            r["index"] for r in records if r.get("status") == status and finite(r.get("objective"))
        ]
        ys = [
            r["objective"]
            for r in records
            if r.get("status") == status and finite(r.get("objective"))
        ]
        if xs:
            size, alpha = (60, 1.0) if status == "keep" else (22, 0.6)
            ax.scatter(xs, ys, s=size, c=colour, alpha=alpha, label=status, zorder=3)
    _draw_best(ax, records, baseline)
    kept = [r for r in records if r.get("status") == "keep" and finite(r.get("objective"))]
    for n, r in enumerate(kept):
        ax.annotate(
            f"#{r['index']} " + one_line(str(r.get("description", "")), 28),
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
    novalue = sum(1 for r in records if not finite(r.get("objective")))
    extra = f" ({novalue} without a value, not shown)" if novalue else ""
    ax.set_title(f"{objective}: {len(kept)} kept of {len(records)} experiments{extra}")
    ax.margins(x=0.08)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=9)


def _draw_best(ax: Any, records: Sequence[dict[str, Any]], baseline: Any) -> None:
    """The running best: flat until a keep, then the kept (confirmed) value."""
    last = max((r["index"] for r in records), default=0)
    steps_x, steps_y = [0], [baseline if finite(baseline) else None]
    for r in sorted(records, key=lambda r: r["index"]):
        if r.get("status") == "keep" and finite(r.get("best_after")):
            steps_x.append(r["index"])
            steps_y.append(r["best_after"])
    if steps_y[0] is None:
        steps_x, steps_y = steps_x[1:], steps_y[1:]
    if steps_x:
        steps_x.append(max(last, steps_x[-1]))
        steps_y.append(steps_y[-1])
        ax.step(steps_x, steps_y, where="post", color="#1f77b4", lw=2, label="best", zorder=2)
