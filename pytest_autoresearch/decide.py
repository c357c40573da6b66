"""The keep rule: pure functions over numbers (see docs/keep-rule.md for the why).

API
---
Decision(action, reason, improvement, new_best, floor, sigma, df, runs)
    action: "keep" | "discard" | "confirm" (run the candidate once more, then call again
    with all its runs). When kept, carry ``new_best`` forward with ``best_runs = runs - 1``
    (``1`` when kept after a single run).
keep_decision(*, goal, best, sigma, candidate, df=2, best_runs=1, min_delta=0.0,
              lines_added=0, lines_removed=0, failed_guards=(), violations=(),
              max_runs=MAX_RUNS, confirmed=False, alpha=ALPHA) -> Decision
    ``candidate``: one objective value per evaluation run of this candidate (1, then 2, 3
    while confirming). ``sigma``/``df``: the session's pooled noise, stats.pooled_noise over
    the baseline runs and ``noise_runs(c)`` of every earlier candidate with 3+ runs, *not*
    this candidate's runs: they are pooled in here. ``best``: the value carried forward from
    the baseline (mean of its runs) or the last keep; ``best_runs``: how many runs are
    behind it (the defaults, df=2 and best_runs=1, are the cautious values for a 3-run
    baseline). ``confirmed=True`` says no more runs will come: decide now. Guards and
    constraints may be checked by the caller first, or passed in as
    ``failed_guards`` / ``violations`` (any entry means discard, with the reason).
noise_runs(candidate) -> list[float]    the runs fit to pool into the noise estimate
center(values) -> float                 the value the rule compares: the mean of the runs
noise_sigma(values) -> float            stats.noise_sigma, re-exported for the loop
constraint_violations(constraints, metrics) -> list[str]
    ``constraints``: objects with ``.metric``, ``.text`` and ``.holds(value)``
    (program.Constraint); ``metrics``: {name: value or None}.

The rule, in short: the mean improvement must clear ``min_delta`` plus a one-sided
Student-t critical value times the standard error of (candidate mean - best). The
false-keep budget ``alpha`` (1% per experiment) is split: 0.2% may be spent keeping after
the first run, the rest after two confirmation runs. A first run at least one standard
error better is confirmed; the value carried forward is the mean of the confirmation runs,
never the lucky first one. Fewer lines and no worse than half a standard error is kept as
a simplification.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pytest_autoresearch.stats import mean, noise_sigma, t_quantile

__all__ = [
    "ALPHA",
    "ALPHA_FIRST_RUN",
    "CONFIRM_AT",
    "MAX_RUNS",
    "SIMPLIFY_TOLERANCE",
    "Decision",
    "center",
    "constraint_violations",
    "keep_decision",
    "noise_runs",
    "noise_sigma",
]

ALPHA = 0.01  # false keeps per experiment on a pure-noise objective, at most
ALPHA_FIRST_RUN = 0.002  # the part of ALPHA spent on keeping after a single run
MAX_RUNS = 3  # a promising first run is confirmed by two more
CONFIRM_AT = 1.0  # a first run this many standard errors better is confirmed
SIMPLIFY_TOLERANCE = 0.5  # fewer lines is kept when no worse than this many standard errors


@dataclass(frozen=True)
class Decision:
    """What to do with a candidate, and one line saying why."""

    action: str  # "keep" | "discard" | "confirm"
    reason: str
    improvement: float | None  # positive = better, objective units (candidate mean vs best)
    new_best: float | None  # the value to carry forward when kept: the mean of all runs
    floor: float | None = None  # the improvement this stage needed, objective units
    sigma: float | None = None  # noise of one run used for the decision (candidate pooled in)
    df: int | None = None  # degrees of freedom behind sigma
    runs: int = 0  # candidate runs behind the decision (becomes best_runs when kept)


class _ConstraintLike(Protocol):
    metric: str
    text: str

    def holds(self, value: float) -> bool: ...


def _num(x: float) -> str:
    return f"{x:.4g}"


def constraint_violations(
    constraints: Iterable[_ConstraintLike], metrics: Mapping[str, float | None]
) -> list[str]:
    """One message per constraint that does not hold (a missing value does not hold)."""
    out = []
    for c in constraints:
        value = metrics.get(c.metric)
        if value is None or not math.isfinite(value):
            out.append(f"{c.text} (no value for {c.metric})")
        elif not c.holds(value):
            out.append(f"{c.text} ({c.metric} = {_num(value)})")
    return out


def keep_decision(
    *,
    goal: str,
    best: float,
    sigma: float,
    candidate: Sequence[float],
    df: int = 2,
    best_runs: int = 1,
    min_delta: float = 0.0,
    lines_added: int = 0,
    lines_removed: int = 0,
    failed_guards: Sequence[str] = (),
    violations: Sequence[str] = (),
    max_runs: int = MAX_RUNS,
    confirmed: bool = False,
    alpha: float = ALPHA,
) -> Decision:
    """Keep, discard, or run the candidate once more (see the module docstring)."""
    _check_args(goal, best, sigma, df, best_runs, min_delta, max_runs, alpha)
    runs = len(candidate)
    values = [float(x) for x in candidate]
    if failed_guards:
        shown = ", ".join(failed_guards[:3]) + (" ..." if len(failed_guards) > 3 else "")
        return Decision("discard", f"guard failed: {shown}", None, None, runs=runs)
    if not values or not all(math.isfinite(x) for x in values):
        return Decision("discard", "no finite objective value", None, None, runs=runs)
    m = math.fsum(values) / runs
    d = (best - m) if goal == "min" else (m - best)
    if violations:
        shown = "; ".join(violations[:3]) + (" ..." if len(violations) > 3 else "")
        return Decision("discard", f"constraint violated: {shown}", d, None, runs=runs)

    # Pool this candidate's own runs (same code, its own mean) into the noise estimate: the
    # sample variance is independent of the mean, so the t-test stays exact.
    ss = sigma * sigma * df + math.fsum((x - m) ** 2 for x in values)
    df_all = df + runs - 1
    s = math.sqrt(ss / df_all)
    se = s * math.sqrt(1.0 / runs + 1.0 / best_runs)
    first, final = runs == 1, runs >= max_runs or (confirmed and runs > 1)
    # Two looks may keep: after the first run and after the last; alpha is split between them.
    a = alpha if max_runs <= 1 else (ALPHA_FIRST_RUN if first else alpha - ALPHA_FIRST_RUN)
    crit = t_quantile(1.0 - a, df_all)
    floor = min_delta + crit * se
    shrink = lines_removed - lines_added
    # The value carried forward leaves out the first run, which the screen picked for luck.
    confirmed = values[1:] or values
    new_best = math.fsum(confirmed) / len(confirmed)

    def make(action: str, reason: str) -> Decision:
        kept = action == "keep"
        return Decision(action, reason, d, new_best if kept else None, floor, s, df_all, runs)

    where = f"{runs} run{'s' if runs > 1 else ''}, noise ±{_num(s)}"
    if se == 0.0:
        # Identical runs everywhere: the metric is deterministic, so any change is real.
        if d > min_delta:
            return make("keep", f"improved {_num(d)} > min_delta {_num(min_delta)} (no noise)")
        if shrink > 0 and d >= 0.0:
            return make("keep", f"simplification: {shrink} fewer lines, equal (no noise)")
        return make("discard", _not_enough(d, floor, where))
    if (first or final) and d > floor:
        return make("keep", f"improved {_num(d)} > floor {_num(floor)} ({where})")
    if not final:
        # Only the first look screens. Runs after it are never selected on their own value,
        # which keeps them fit for estimating the noise (see noise_runs).
        go = not first or d >= (-se if shrink > 0 else min_delta + CONFIRM_AT * se)
        if go:
            what = f"{shrink} fewer lines, looks equal" if shrink > 0 else "promising"
            return make(
                "confirm", f"{what}: improved {_num(d)}, floor {_num(floor)}; confirming ({where})"
            )
        return make("discard", _not_enough(d, floor, where))
    if shrink > 0 and d >= -SIMPLIFY_TOLERANCE * se:
        return make(
            "keep",
            f"simplification: {shrink} fewer lines, equal within noise "
            f"({_num(d)} >= -{_num(SIMPLIFY_TOLERANCE * se)}, {where})",
        )
    return make("discard", _not_enough(d, floor, where))


def center(values: Sequence[float]) -> float:
    """The value the keep rule compares for a set of runs: their mean (the t-test's)."""
    return mean(values)


def noise_runs(candidate: Sequence[float]) -> list[float]:
    """The runs of a candidate fit to pool into the session's noise estimate (all but the first).

    The first run was picked by the screen for looking good, so it is further from the
    candidate's true value than a typical run; pooling it would inflate sigma. Pool the
    result only when it has two or more runs (stats.pooled_noise skips shorter groups).
    """
    return [float(x) for x in candidate[1:]]


def _not_enough(d: float, floor: float, where: str) -> str:
    if d <= 0:
        return f"no better: {'worse by ' + _num(-d) if d < 0 else 'equal'} ({where})"
    return f"within noise: improved {_num(d)} <= floor {_num(floor)} ({where})"


def _check_args(
    goal: str,
    best: float,
    sigma: float,
    df: int,
    best_runs: int,
    min_delta: float,
    max_runs: int,
    alpha: float,
) -> None:
    problems: list[Any] = []
    if goal not in ("min", "max"):
        problems.append(f"goal must be 'min' or 'max', got {goal!r}")
    if not math.isfinite(best):
        problems.append(f"best must be a finite number, got {best!r}")
    if not (math.isfinite(sigma) and sigma >= 0):
        problems.append(f"sigma must be a finite number >= 0, got {sigma!r}")
    if df < 1:
        problems.append(f"df must be >= 1 (measure the baseline at least twice), got {df!r}")
    if best_runs < 1:
        problems.append(f"best_runs must be >= 1, got {best_runs!r}")
    if not (math.isfinite(min_delta) and min_delta >= 0):
        problems.append(f"min_delta must be >= 0, got {min_delta!r}")
    if max_runs < 1:
        problems.append(f"max_runs must be >= 1, got {max_runs!r}")
    if not ALPHA_FIRST_RUN < alpha < 0.5:
        problems.append(f"alpha must be between {ALPHA_FIRST_RUN} and 0.5, got {alpha!r}")
    if problems:
        raise ValueError("; ".join(problems))
