"""Saved baselines and regression checks (``--metrics-save/-compare/-fail``).

A baseline is a metrics JSON document stored as ``<rootdir>/.autoresearch/baselines/<NAME>.json``.

API::

    check_name(name) -> str                     # raises BaselineError
    save(root, name, data) -> Path / load(root, name) -> dict / saved(root) -> list[str]
    compare(current, baseline_data) -> list[Comparison]   # with both sides' samples
    RegressionCheck(comparison, threshold).fails() -> str | None
    RegressionCheck(comparison, threshold).gate() -> gate.GateResult   # threshold and noise
    regressions(comparisons, threshold) -> list[str]
    gates(comparisons, threshold) -> dict[str, gate.GateResult]

The gate is noise-aware (see gate.py): with repeated samples on both sides, a metric fails
only when it is worse by more than the threshold *and* beyond its noise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_autoresearch.metrics import gate as gate_mod
from pytest_autoresearch.metrics import json_file as metrics_json
from pytest_autoresearch.metrics.metric import Measurement, format_value

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class BaselineError(Exception):
    """A baseline that cannot be saved or loaded; the message says what to do."""


def check_name(name: str) -> str:
    """Return ``name`` if it is a safe file name for a baseline, else raise BaselineError."""
    if not NAME_RE.match(name) or ".." in name:
        raise BaselineError(
            f"invalid baseline name {name!r}: use letters, digits, '.', '_' or '-' "
            "(no '/', no '..', at most 100 characters), e.g. main or before-refactor"
        )
    return name


def baseline_dir(root: Path) -> Path:
    """Where baselines live for the project at ``root`` (pytest's rootdir)."""
    return Path(root) / ".autoresearch" / "baselines"


def saved(root: Path) -> list[str]:
    """Names of the baselines saved under ``root``, sorted."""
    folder = baseline_dir(root)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if NAME_RE.match(p.stem))


def save(root: Path, name: str, data: dict[str, Any]) -> Path:
    """Store ``data`` (a metrics JSON document) as baseline ``name``; returns the file."""
    path = baseline_dir(root) / f"{check_name(name)}.json"
    metrics_json.write(path, data)
    return path


def load(root: Path, name: str) -> dict[str, Any]:
    """Load baseline ``name``; a missing one raises BaselineError listing those saved."""
    path = baseline_dir(root) / f"{check_name(name)}.json"
    if not path.exists():
        names = saved(root)
        listing = ", ".join(names) if names else "none yet"
        raise BaselineError(
            f"no baseline named {name!r} in {baseline_dir(root)} (saved: {listing}); "
            f"save one first with: pytest --metrics-save {name}"
        )
    try:
        return metrics_json.read(path)
    except metrics_json.MetricsJSONError as exc:
        raise BaselineError(
            f"baseline {name!r} cannot be used: {exc}. Save it again with --metrics-save {name}"
        ) from None


def percent_change(baseline: float, current: float) -> float:
    """Signed change in percent of the baseline's size (inf when the baseline is 0)."""
    if baseline == current:
        return 0.0
    if baseline == 0:
        return math.copysign(math.inf, current - baseline)
    return (current - baseline) / abs(baseline) * 100.0


@dataclass(frozen=True)
class Comparison:
    """One metric now against its baseline value."""

    name: str
    goal: str
    unit: str | None
    baseline: float
    current: float
    baseline_samples: tuple[float, ...] = ()  # empty: only the value is known
    current_samples: tuple[float, ...] = ()

    @property
    def change_pct(self) -> float:
        """Signed change in percent (+ means the number went up)."""
        return percent_change(self.baseline, self.current)

    @property
    def worse_pct(self) -> float:
        """How much worse in the metric's own direction, in percent (negative = better)."""
        change = self.change_pct
        return change if self.goal == "min" else -change

    @property
    def verdict(self) -> str:
        """'better', 'worse' or 'same'."""
        worse = self.worse_pct
        return "worse" if worse > 0 else "better" if worse < 0 else "same"


def compare(current: Iterable[Measurement], baseline_data: dict[str, Any]) -> list[Comparison]:
    """Pair each metric that has a value now with its value in the baseline, in run order."""
    before = {m.name: m for m in metrics_json.measurements(baseline_data) if m.value is not None}
    out = []
    for m in current:
        value = m.value
        if value is None or m.name not in before:
            continue
        old = before[m.name]
        out.append(
            Comparison(
                m.name, m.goal, m.unit, old.value, value, tuple(old.samples), tuple(m.samples)
            )
        )
    return out


@dataclass(frozen=True)
class RegressionCheck:
    """Fails when a metric got worse than ``threshold`` percent in its own direction and,
    with repeated samples on both sides, beyond its noise (gate.py)."""

    comparison: Comparison
    threshold: float

    def gate(self) -> gate_mod.GateResult:
        """The verdict with its reason: over the threshold, and beyond the noise or not."""
        c = self.comparison
        baseline_samples = c.baseline_samples or (c.baseline,)
        current_samples = c.current_samples or (c.current,)
        return gate_mod.check(
            c.name, c.goal, baseline_samples, current_samples, self.threshold, c.worse_pct
        )

    def fails(self) -> str | None:
        """A message naming the metric and how much worse it got, or None when it is fine."""
        c = self.comparison
        if not c.worse_pct > self.threshold:
            return None
        verdict = self.gate()
        if not verdict.failed:
            return None
        unit = f" {c.unit}" if c.unit else ""
        direction = "lower" if c.goal == "min" else "higher"
        detail = verdict.detail()
        return (
            f"{c.name}: {format_value(c.baseline)}{unit} -> {format_value(c.current)}{unit} is "
            f"{_pct(abs(c.worse_pct))} worse ({direction} is better; "
            f"allowed {_pct(self.threshold)})" + (f"; {detail}" if detail else "")
        )


def regressions(comparisons: Iterable[Comparison], threshold: float) -> list[str]:
    """Every failing check's message."""
    checks = (RegressionCheck(c, threshold) for c in comparisons)
    return [msg for check in checks if (msg := check.fails())]


def gates(comparisons: Iterable[Comparison], threshold: float) -> dict[str, gate_mod.GateResult]:
    """Each compared metric's gate verdict by name (the table's ``gate`` column)."""
    return {c.name: RegressionCheck(c, threshold).gate() for c in comparisons}


def _pct(value: float) -> str:
    return "inf%" if math.isinf(value) else f"{value:.2f}%"
