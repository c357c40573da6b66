"""The page's chart as inline SVG: no library, colours from the page's CSS (light and dark).

API
---
chart(records, *, metric, goal, baseline, sigma=None, title, dec, holdout=False) -> str
    every experiment's value (and each further sample as a small dot), the kept frontier as a
    step line, the noise band around it (objective only), the baseline; each dot links to its
    row (``#e<index>``) and says what it is in a ``<title>`` (hover, or a long press on a phone)

Records and titles arrive scrubbed (run_view reads them so); here text is only escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

__all__ = ["chart"]

W, H = 720, 260  # the viewBox; the SVG scales to its box
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 14, 30


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values between lo and hi (1, 2 or 5 times a power of ten apart)."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _value(rec: dict[str, Any], metric: str, holdout: bool) -> Any:
    return (rec.get("metrics") or {}).get(metric) if holdout else rec.get("objective")


def _frontier(
    records: Sequence[dict[str, Any]], metric: str, holdout: bool, baseline: Any
) -> list[tuple[int, float, float | None]]:
    """(from experiment, best value, noise) at each change of the best, baseline first."""
    steps: list[tuple[int, float, float | None]] = []
    if _finite(baseline):
        steps.append((0, float(baseline), None))
    for r in records:
        if r.get("status") != "keep":
            continue
        v = (r.get("metrics") or {}).get(metric) if holdout else r.get("best_after")
        if _finite(v):
            noise = r.get("noise") if _finite(r.get("noise")) else None
            steps.append((int(r.get("index", 0)), float(v), noise))
    return steps


def _extent(values: list[float], pinned: list[float]) -> tuple[float, float]:
    """The y range: the pinned values (baseline, frontier) and the middle 96% of the rest, so
    one wild crash does not flatten everything else (it is drawn at the edge)."""
    vals = sorted(values)
    if len(vals) >= 25:
        k = len(vals) // 50
        vals = vals[k : len(vals) - k]
    allv = vals + pinned
    if not allv:
        return 0.0, 1.0
    lo, hi = min(allv), max(allv)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 1.0
    return lo - pad, hi + pad


def chart(
    records: Sequence[dict[str, Any]],
    *,
    metric: str,
    goal: str,
    baseline: Any,
    sigma: Any = None,
    title: str,
    dec: int = 4,
    holdout: bool = False,
    width: int = W,
) -> str:
    """One inline SVG chart ``width`` wide (in the viewBox's units; text stays 11 of them),
    an empty string when there is nothing to draw."""
    pts = [(int(r.get("index", 0)), r) for r in records if _finite(_value(r, metric, holdout))]
    steps = _frontier(records, metric, holdout, baseline)
    if not pts and not steps:
        return ""
    samples = [] if holdout else _samples(records, metric)
    values = [float(_value(r, metric, holdout)) for _, r in pts] + [v for _, v in samples]
    lo, hi = _extent(values, [v for _, v, _ in steps])
    last = max([i for i, _ in pts] + [s[0] for s in steps] + [1])
    sx = (width - LEFT - RIGHT) / max(1, last)
    sy = (H - TOP - BOTTOM) / (hi - lo)

    def x(i: float) -> float:
        return LEFT + i * sx

    def y(v: float) -> float:
        return TOP + (hi - min(max(v, lo), hi)) * sy

    out = [
        f'<svg class="chart" viewBox="0 0 {width} {H}" role="img" '
        f'aria-label="{escape(title)}" preserveAspectRatio="xMidYMid meet">',
        f"<title>{escape(title)}</title>",
    ]
    out += _axes(lo, hi, last, x, y, goal, dec, width)
    out += _band(steps, last, x, y, sigma) if not holdout else []
    out += _steps(steps, last, x, y)
    out += [f'<circle class="sample" cx="{x(i):.1f}" cy="{y(v):.1f}" r="1.6"/>' for i, v in samples]
    for i, r in pts:
        out.append(_dot(i, r, float(_value(r, metric, holdout)), x, y, lo, hi, dec))
    out.append("</svg>")
    return "".join(out)


def _samples(records: Sequence[dict[str, Any]], metric: str) -> list[tuple[int, float]]:
    """Every further sample (confirmation runs, repeats) beside the experiment's value."""
    out = []
    for r in records:
        runs = (r.get("samples") or {}).get(metric) if isinstance(r.get("samples"), dict) else None
        if isinstance(runs, list) and len(runs) > 1:
            out += [(int(r.get("index", 0)), float(v)) for v in runs if _finite(v)]
    return out


def _axes(
    lo: float, hi: float, last: int, x: Any, y: Any, goal: str, dec: int, width: int
) -> list[str]:
    right = width - RIGHT
    out = [f'<line class="axis" x1="{LEFT}" y1="{H - BOTTOM}" x2="{right}" y2="{H - BOTTOM}"/>']
    for t in _nice_ticks(lo, hi):
        out.append(
            f'<line class="grid" x1="{LEFT}" y1="{y(t):.1f}" x2="{right}" y2="{y(t):.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y(t) + 4:.1f}" text-anchor="end">'
            f"{t:.{min(dec, 6)}g}</text>"
        )
    for t in _nice_ticks(0, last, 6 if width >= W else 3):
        if t == int(t):
            out.append(
                f'<text class="tick" x="{x(t):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">'
                f"{int(t)}</text>"
            )
    better = "lower is better" if goal == "min" else "higher is better"
    out.append(f'<text class="tick" x="{right}" y="{TOP - 3}" text-anchor="end">{better}</text>')
    return out


def _band(
    steps: list[tuple[int, float, float | None]], last: int, x: Any, y: Any, sigma: Any
) -> list[str]:
    """The noise floor around the best: ±noise at each keep (the baseline's sigma first)."""
    out = []
    for n, (i, v, noise) in enumerate(steps):
        s = noise if noise is not None else sigma
        if not _finite(s) or s <= 0:
            continue
        end = steps[n + 1][0] if n + 1 < len(steps) else last
        top, bottom = y(v + s), y(v - s)
        out.append(
            f'<rect class="band" x="{x(i):.1f}" y="{min(top, bottom):.1f}" '
            f'width="{max(0.5, x(end) - x(i)):.1f}" height="{abs(bottom - top):.1f}"/>'
        )
    return out


def _steps(steps: list[tuple[int, float, float | None]], last: int, x: Any, y: Any) -> list[str]:
    if not steps:
        return []
    d = f"M{x(steps[0][0]):.1f},{y(steps[0][1]):.1f}"
    for i, v, _ in steps[1:]:
        d += f"H{x(i):.1f}V{y(v):.1f}"
    d += f"H{x(max(last, steps[-1][0])):.1f}"
    return [f'<path class="frontier" d="{d}"/>']


def _dot(
    i: int, r: dict[str, Any], v: float, x: Any, y: Any, lo: float, hi: float, dec: int
) -> str:
    status = str(r.get("status", "?"))
    kind = status if status in ("keep", "discard", "stale", "crash") else "other"
    clipped = not lo <= v <= hi
    label = f"#{i} {status} {v:.{dec}f}" + (" (off the chart)" if clipped else "")
    label += " " + " ".join(str(r.get("description", "")).split())[:120]
    radius = 4.5 if status == "keep" else 3
    shape = (
        f'<rect class="pt {kind} clip" x="{x(i) - 3:.1f}" y="{y(v) - 3:.1f}" width="6" height="6"/>'
        if clipped
        else f'<circle class="pt {kind}" cx="{x(i):.1f}" cy="{y(v):.1f}" r="{radius}"/>'
    )
    return f'<a href="#e{i}"><title>{escape(label)}</title>{shape}</a>'
