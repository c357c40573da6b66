"""The keep rule: pure functions over numbers (see docs/keep-rule.md for the why).

API
---
Decision(action, reason, improvement, new_best, floor, sigma, df, runs, remeasure,
         simplification, deterministic)
    action: "keep" | "discard" | "confirm" (run the candidate once more, then call again
    with all its runs). On "keep": measure the kept commit ``remeasure`` more times
    (fresh evaluations of the committed tree, 0 for a metric with no noise) and carry
    forward ``after_keep(decision, runs, fresh)``.
keep_decision(*, goal, best, sigma, candidate, df=2, best_runs=1, min_delta=0.0,
              lines_added=0, lines_removed=0, failed_guards=(), violations=(),
              max_runs=MAX_RUNS, confirmed=False, alpha=ALPHA, anchor=None) -> Decision
    ``candidate``: one objective value per evaluation run of this candidate (1, 2, ... up to
    ``max_runs`` while confirming). ``sigma``/``df``: stats.pooled_noise over the session's
    noise groups, *not* this candidate's runs (they are pooled in here). The noise groups
    are: the baseline's runs; ``noise_groups(runs)`` of every finished candidate that was
    not kept; ``after_keep(...).noise_groups`` of every keep. ``best``/``best_runs``: the
    value carried forward and the runs behind it (the baseline's mean and its run count,
    then ``after_keep``'s). ``anchor``: the best as of the last keep that was *not* a
    simplification (the baseline's mean until then); None means ``best``. ``confirmed=True``
    says no more runs will come: decide now. Guards and constraints may be checked by the
    caller first, or passed in as ``failed_guards`` / ``violations`` (any entry: discard).
    ``lines_added``/``lines_removed``: from ``code_lines_changed(diff)``.
after_keep(decision, runs, fresh) -> Carried(best, best_runs, noise_groups)
    ``runs``: the kept candidate's runs (those the decision saw); ``fresh``: the
    ``decision.remeasure`` runs of the kept commit (fewer if some failed; may be empty).
    Set best/best_runs from it, add its ``noise_groups`` to the session's, and when
    ``not decision.simplification`` set the anchor to the new best.
noise_groups(runs) -> list[list[float]]  a finished candidate's runs fit to pool as noise
code_lines_changed(diff_text) -> (added, removed)
    Lines of a unified diff (``git diff``) that change code: blank lines never count, nor
    comment-only lines in Python files (from ``diff_lines``).
center(values) -> float                 the value the rule compares: the mean of the runs
noise_sigma(values) -> float            stats.noise_sigma, re-exported for the loop
constraint_violations(constraints, metrics) -> list[str]
    ``constraints``: objects with ``.metric``, ``.text`` and ``.holds(value)``
    (program.Constraint); ``metrics``: {name: value or None}.
BASELINE_RUNS: how many runs the baseline should have (program.md's default).
baseline_runs_left(values, wanted=BASELINE_RUNS) -> int
    How many more baseline runs to measure after ``values``: stops early (0) once three
    runs agree exactly, since a deterministic metric learns nothing from more.

The rule, in short (docs/keep-rule.md has the why and the figures): a one-sided Student-t
test of the candidate's mean against the best, looking after 1, 3 and 8 runs (``LOOKS``).
Each look may keep, spending its share of the false-keep budget ``alpha`` (1% per
experiment): 0.05% after one run, 0.1% after three, the rest after eight; the shares add
up to alpha, whatever else happens. A look may also discard: the first run must be
``SCREEN`` standard errors better to go on, and the bar rises by ``FUTILITY_STEP`` per run,
so most changes that are no better cost one run. A kept commit is measured afresh
``REMEASURE_RUNS`` times and the next best is the mean of those and of the confirmation
runs, never the lucky first run. A simplification (fewer code lines, blank lines and
comments aside) is kept when its mean is no worse than the best *and* than the anchor,
so a chain of simplifications cannot drift away from the last real gain. When every run
so far has agreed exactly the metric is deterministic: a candidate is kept once a second
run reproduces it exactly, and one that does not is tested on its own spread.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pytest_autoresearch.metrics.stats import mean, noise_sigma, t_quantile
from pytest_autoresearch.research.diff_lines import code_lines_changed

__all__ = [
    "ALPHA",
    "ALPHA_EARLY",
    "ALPHA_FIRST_RUN",
    "BASELINE_RUNS",
    "FUTILITY_STEP",
    "LOOKS",
    "MAX_RUNS",
    "REMEASURE_RUNS",
    "SCREEN",
    "SIMPLIFY_SCREEN",
    "Carried",
    "Decision",
    "after_keep",
    "baseline_runs_left",
    "center",
    "code_lines_changed",
    "constraint_violations",
    "keep_decision",
    "noise_groups",
    "noise_sigma",
]

ALPHA = 0.01  # false keeps per experiment on a pure-noise objective, at most
ALPHA_FIRST_RUN = 0.0005  # the part of ALPHA spent on keeping after a single run
ALPHA_EARLY = 0.001  # ... after the middle looks (a clear gain stops early); the last: the rest
LOOKS = (1, 3, 8)  # the rule looks after these runs; each may keep (its share) or discard
MAX_RUNS = LOOKS[-1]  # runs of one candidate at most (the last look spends the rest of ALPHA)
SCREEN = 0.8  # a first run this many standard errors better is confirmed
FUTILITY_STEP = 0.3  # ... and each further run must be this much further above the best
SIMPLIFY_SCREEN = -1.0  # a simpler candidate is confirmed while no worse than this (in se)
REMEASURE_RUNS = 6  # fresh runs of a kept commit (2 fewer after a full confirmation)
DETERMINISTIC_AFTER = 3  # this many identical baseline runs: the metric has no noise
BASELINE_RUNS = 8  # the baseline is the first best: measure it this often (program.md default)


@dataclass(frozen=True)
class Decision:
    """What to do with a candidate, and one line saying why."""

    action: str  # "keep" | "discard" | "confirm"
    reason: str
    improvement: float | None  # positive = better, objective units (candidate mean vs best)
    new_best: float | None  # when kept: the value to carry forward if no fresh run comes
    floor: float | None = None  # the improvement this look needed, objective units
    sigma: float | None = None  # noise of one run used for the decision (candidate pooled in)
    df: int | None = None  # degrees of freedom behind sigma
    runs: int = 0  # candidate runs behind the decision
    remeasure: int = 0  # when kept: fresh runs of the kept commit to measure (after_keep)
    simplification: bool = False  # kept for being simpler, not better: the anchor stays
    deterministic: bool = False  # every run so far agreed exactly (no noise to test against)


@dataclass(frozen=True)
class Carried:
    """The best after a keep: its value, the runs behind it, and a group for the noise."""

    best: float
    best_runs: int
    noise_groups: list[list[float]]  # add these to the session's noise groups


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
    anchor: float | None = None,
) -> Decision:
    """Keep, discard, or run the candidate once more (see the module docstring)."""
    _check_args(goal, best, sigma, df, best_runs, min_delta, max_runs, alpha, anchor)
    runs = len(candidate)
    values = [float(x) for x in candidate]
    if failed_guards:
        shown = ", ".join(failed_guards[:3]) + (" ..." if len(failed_guards) > 3 else "")
        return Decision("discard", f"guard failed: {shown}", None, None, runs=runs)
    if not values or not all(math.isfinite(x) for x in values):
        return Decision("discard", "no finite objective value", None, None, runs=runs)
    m = math.fsum(values) / runs
    sign = 1.0 if goal == "min" else -1.0
    d = sign * (best - m)
    d_anchor = d if anchor is None else sign * (anchor - m)
    if violations:
        shown = "; ".join(violations[:3]) + (" ..." if len(violations) > 3 else "")
        return Decision("discard", f"constraint violated: {shown}", d, None, runs=runs)
    shrink = lines_removed - lines_added
    final = runs >= max_runs or (confirmed and runs > 1)
    if sigma == 0.0:
        return _deterministic(values, d, d_anchor, min_delta, shrink, final, alpha)
    return _noisy(
        values, d, d_anchor, min_delta, shrink, final, alpha,
        sigma=sigma, df=df, best_runs=best_runs, max_runs=max_runs,
    )  # fmt: skip


def _noisy(
    values: list[float],
    d: float,
    d_anchor: float,
    min_delta: float,
    shrink: int,
    final: bool,
    alpha: float,
    *,
    sigma: float,
    df: int,
    best_runs: int,
    max_runs: int,
) -> Decision:
    """The best's value is noisy: test the candidate's mean at the looks, pooling the noise."""
    runs = len(values)
    m = math.fsum(values) / runs
    looks = _looks(max_runs)
    if not final and runs not in looks:
        # Inside a block of runs: no look, so nothing selects on these runs (see noise_groups).
        return Decision(
            "confirm", f"confirming: run {runs} of {min(n for n in looks if n > runs)}", d,
            None, runs=runs,
        )  # fmt: skip
    s, df_all = _pooled_noise(values, sigma, df, max_runs)
    se = s * math.sqrt(1.0 / runs + 1.0 / best_runs)
    # Each look may keep, spending its share of alpha; the shares add up to alpha.
    a = _alpha_at(runs, looks, final, alpha)
    floor = min_delta + t_quantile(1.0 - a, df_all) * se
    # Left out of the value carried forward: the first run, which the screen picked for luck.
    new_best = m if runs == 1 else mean(values[1:])

    def make(action: str, reason: str, simpler: bool = False) -> Decision:
        kept = action == "keep"
        return Decision(
            action, reason, d, new_best if kept else None, floor, s, df_all, runs,
            remeasure=_fresh_runs(runs) if kept else 0, simplification=kept and simpler,
        )  # fmt: skip

    where = f"{runs} run{'s' if runs > 1 else ''}, noise ±{_num(s)}"
    if d > floor:
        return make("keep", f"improved {_num(d)} > floor {_num(floor)} ({where})")
    if final:
        if shrink > 0 and d >= 0.0 and d_anchor >= 0.0:
            return make("keep", _simpler(shrink, d, d_anchor, where), simpler=True)
        return make("discard", _not_enough(d, floor, where))
    # Not kept and not the last look: go on only while clearly promising. The bar rises
    # with the runs, so a change that is no better is usually dropped after one run.
    bar = min_delta + (SCREEN + FUTILITY_STEP * (runs - 1)) * se
    simpler = shrink > 0 and d >= SIMPLIFY_SCREEN * se and d_anchor >= SIMPLIFY_SCREEN * se
    if d >= bar or simpler:
        what = f"{shrink} fewer lines, looks equal" if simpler and d < bar else "promising"
        return make(
            "confirm", f"{what}: improved {_num(d)}, floor {_num(floor)}; confirming ({where})"
        )
    return make("discard", _not_enough(d, floor, where))


def _pooled_noise(values: list[float], sigma: float, df: int, max_runs: int) -> tuple[float, int]:
    """(noise, its degrees of freedom): the session's sigma pooled with the candidate's runs.

    The spread inside each block of runs between two looks is noise that no stop has
    selected on (it is independent of the block means the looks test): pool it.
    """
    blocks = noise_groups(values, max_runs)
    ss = math.fsum(math.fsum((x - mean(b)) ** 2 for x in b) for b in blocks)
    df_all = df + sum(len(b) - 1 for b in blocks)
    return math.sqrt((sigma * sigma * df + ss) / df_all), df_all


def _deterministic(
    values: list[float],
    d: float,
    d_anchor: float,
    min_delta: float,
    shrink: int,
    final: bool,
    alpha: float,
) -> Decision:
    """The session's runs have all agreed exactly: the best's value has no noise.

    One run can still be a lucky draw of a candidate that *is* noisy (a new source of
    randomness), so a candidate is kept only when a second run reproduces it exactly; one
    that does not is tested on its own spread against the exact best.
    """
    runs = len(values)
    m = math.fsum(values) / runs
    better = d > min_delta
    simpler = shrink > 0 and d >= 0.0 and d_anchor >= 0.0
    where = f"{runs} run{'s' if runs > 1 else ''}"

    def make(action: str, reason: str, **kw: Any) -> Decision:
        kept = action == "keep"
        noisy = "s" in kw  # kept on a t-test: its runs won a test, so measure it afresh
        return Decision(
            action, reason, d, (mean(values[1:]) if noisy else m) if kept else None,
            kw.get("floor", min_delta), kw.get("s", 0.0), kw.get("df", 0), runs,
            remeasure=REMEASURE_RUNS if kept and noisy else 0,
            simplification=kept and not better, deterministic=True,
        )  # fmt: skip

    if max(values) == min(values):
        if not (better or simpler):
            return make("discard", _not_enough(d, min_delta, f"{where}, no noise"))
        if runs == 1 and not final:
            what = "improved " + _num(d) if better else f"{shrink} fewer lines, equal"
            return make("confirm", f"{what} (no noise so far); confirming it reproduces")
        if better:
            return make("keep", f"improved {_num(d)} > min_delta {_num(min_delta)} "
                        f"(reproduced exactly, {where}, no noise)")  # fmt: skip
        return make("keep", f"simplification: {shrink} fewer lines, equal ({where}, no noise)")
    # The candidate is noisy and the best is not: a one-sample t-test on the candidate's own
    # runs after the first (the first was picked for looking good), kept only at the end.
    rest = values[1:] if len(set(values[1:])) > 1 else values
    s = _stdev(rest)
    df_c = len(rest) - 1
    se = s / math.sqrt(runs)
    floor = min_delta + t_quantile(1.0 - _alpha_at(runs, [runs], True, alpha), df_c) * se
    where = f"{where}, noise ±{_num(s)} from this candidate alone: the best's runs agreed"
    info = {"floor": floor, "s": s, "df": df_c}
    if final:
        if d > floor:
            return make("keep", f"improved {_num(d)} > floor {_num(floor)} ({where})", **info)
        return make("discard", _not_enough(d, floor, where), **info)
    if d > min_delta:
        return make("confirm", f"not reproducible: improved {_num(d)}; confirming ({where})",
                    **info)  # fmt: skip
    return make("discard", _not_enough(d, floor, where), **info)


def after_keep(decision: Decision, runs: Sequence[float], fresh: Sequence[float]) -> Carried:
    """The best to carry forward after ``decision`` kept a candidate with ``runs``.

    ``fresh``: runs of the kept commit measured right after the keep
    (``decision.remeasure`` of them; fewer if some failed, even none). The new best is the
    mean of the candidate's runs after the first plus the fresh runs. The first run is left
    out because the screen picked it for looking good; the confirmation runs that passed
    the final look flatter the commit a little (the winner's curse), and the fresh runs,
    which no test selected, dilute that to a few hundredths of a sigma (measured in
    benchmarks/keep_rule.py) while giving the next comparisons a best with many runs.
    """
    if decision.action != "keep":
        raise ValueError(f"after_keep needs a keep decision, got {decision.action!r}")
    new = [float(x) for x in fresh]
    groups = noise_groups(runs)
    if len(new) >= 2:
        groups.append(new)
    pool = [float(x) for x in runs[1:]] + new
    if pool:
        return Carried(math.fsum(pool) / len(pool), len(pool), groups)
    assert decision.new_best is not None  # kept after one run and no fresh run came
    return Carried(decision.new_best, 1, groups)


def baseline_runs_left(values: Sequence[float], wanted: int = BASELINE_RUNS) -> int:
    """More baseline runs to measure: ``wanted`` in all, or none once 3 runs agree exactly.

    Identical runs mean the metric is deterministic (a fixed budget of steps, a fixed
    seed): more runs cost time and teach nothing. Two runs may agree by chance on a coarse
    metric, so three are asked for.
    """
    done = len(values)
    if done >= DETERMINISTIC_AFTER and max(values) == min(values):
        return 0
    return max(0, wanted - done)


def center(values: Sequence[float]) -> float:
    """The value the keep rule compares for a set of runs: their mean (the t-test's)."""
    return mean(values)


def noise_groups(candidate: Sequence[float], max_runs: int = MAX_RUNS) -> list[list[float]]:
    """The blocks of a candidate's runs between two looks, those with 2+ runs: pool each.

    A look decides on the mean of all runs so far, so it selects runs for being good (a
    run that passes a look is luckier than a typical one) and the spread of the runs
    around the candidate's mean is inflated. The spread *inside* a block of runs taken
    between two looks is independent of the block's mean (for normal noise), which is all
    a look sees: it is noise that no stop selected on.
    """
    values = [float(x) for x in candidate]
    edges = [0, *_looks(max_runs)]
    out = []
    for lo, hi in zip(edges, edges[1:], strict=False):
        if hi <= len(values) and hi - lo >= 2:
            out.append(values[lo:hi])
    return out


def _alpha_at(runs: int, looks: list[int], final: bool, alpha: float) -> float:
    """The part of alpha this look may spend on keeping; the parts add up to alpha."""
    if len(looks) == 1:
        return alpha
    middle = len(looks) - 2  # looks between the first and the last
    if final:
        return alpha - ALPHA_FIRST_RUN - middle * ALPHA_EARLY
    return ALPHA_FIRST_RUN if runs == 1 else ALPHA_EARLY


def _looks(max_runs: int) -> list[int]:
    return [n for n in LOOKS if n < max_runs] + [max_runs]


def _stdev(values: Sequence[float]) -> float:
    m = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((x - m) ** 2 for x in values) / (len(values) - 1))


def _simpler(shrink: int, d: float, d_anchor: float, where: str) -> str:
    return (
        f"simplification: {shrink} fewer lines, no worse than the best ({_num(d)}) "
        f"nor the last real gain ({_num(d_anchor)}) ({where})"
    )


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
    anchor: float | None,
) -> None:
    problems: list[Any] = []
    if goal not in ("min", "max"):
        problems.append(f"goal must be 'min' or 'max', got {goal!r}")
    if not math.isfinite(best):
        problems.append(f"best must be a finite number, got {best!r}")
    if anchor is not None and not math.isfinite(anchor):
        problems.append(f"anchor must be a finite number or None, got {anchor!r}")
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
    least = ALPHA_FIRST_RUN + (len(LOOKS) - 2) * ALPHA_EARLY
    if not least < alpha < 0.5:
        problems.append(f"alpha must be between {least} and 0.5, got {alpha!r}")
    if problems:
        raise ValueError("; ".join(problems))


def _fresh_runs(runs: int) -> int:
    """Fresh runs after a keep: fewer when many confirmation runs are already behind it."""
    return max(REMEASURE_RUNS - (runs - 1) // 3, REMEASURE_RUNS - 2)
