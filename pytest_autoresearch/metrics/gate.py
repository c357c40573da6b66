"""The noise-aware regression gate behind ``--metrics-fail P`` (pure: numbers in, verdict out).

A metric fails the gate when it got worse than the baseline by more than ``P`` percent
(medians, in the metric's own direction) **and**, when both sides have repeated samples,
the difference is beyond its noise:

- **Rank test** (like asv's): a one-sided Mann-Whitney U test that the current samples are
  worse than the baseline's. Exact (every relabelling of the pooled samples, ties as
  half-wins) up to ``EXACT_LIMIT`` relabellings, else the normal approximation with the tie
  correction. Beyond noise when ``p <= ALPHA`` (0.05).
- **Too few samples for that** (2+2 or 2+3 runs: the smallest p the test can give is above
  0.05): beyond noise only when the two sets do not overlap at all -- every current sample
  worse than every baseline sample, which is the strongest result the rank test can give.
- **A single sample on either side**: no noise to measure; the threshold alone decides
  (the gate as it always was).

API::

    mann_whitney_p(worse, better) -> float       # one-sided p that ``worse`` is larger
    check(name, goal, baseline_samples, current_samples, threshold, ...) -> GateResult
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ALPHA", "GateResult", "check", "mann_whitney_p"]

ALPHA = 0.05
EXACT_LIMIT = 20_000  # C(16, 8) = 12,870: exact up to about 8 + 8 runs, in milliseconds


def _midranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..N of ``values``, tied values sharing the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def mann_whitney_p(worse: Sequence[float], better: Sequence[float]) -> float:
    """One-sided Mann-Whitney p-value for "``worse`` tends to be larger than ``better``".

    Small samples are exact (a permutation test on the rank sum, so ties are handled);
    larger ones use the normal approximation with tie and continuity corrections.
    """
    n, m = len(worse), len(better)
    if n == 0 or m == 0:
        raise ValueError("the rank test needs at least one sample on each side")
    pooled = [*worse, *better]
    ranks = _midranks(pooled)
    observed = sum(ranks[:n])
    total = math.comb(n + m, n)
    if total <= EXACT_LIMIT:
        # Count relabellings whose rank sum is at least the observed one (with a tolerance:
        # midranks are halves, so sums are exact in binary floating point anyway).
        hits = sum(1 for c in itertools.combinations(ranks, n) if sum(c) >= observed - 1e-9)
        return hits / total
    big_n = n + m
    u = observed - n * (n + 1) / 2
    mean = n * m / 2
    ties = _tie_counts(pooled)
    var = n * m / 12 * ((big_n + 1) - sum(t**3 - t for t in ties) / (big_n * (big_n - 1)))
    if var <= 0:
        return 1.0  # every value equal: no evidence either way
    z = (u - mean - 0.5) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2))


def _tie_counts(values: Sequence[float]) -> list[int]:
    counts: dict[float, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return [c for c in counts.values() if c > 1]


@dataclass(frozen=True)
class GateResult:
    """One metric's verdict: over the threshold? beyond the noise? and so, failed?"""

    name: str
    goal: str
    worse_pct: float  # in the metric's own direction; negative = better
    threshold: float
    method: str  # "threshold" (a single sample on a side), "rank" or "ranges"
    p: float | None = None  # the rank test's p-value (method "rank" and "ranges")
    runs: tuple[int, int] = (1, 1)  # (baseline, current) samples

    @property
    def over_threshold(self) -> bool:
        return self.worse_pct > self.threshold

    @property
    def beyond_noise(self) -> bool | None:
        """True/False when the noise could be judged, None for single samples."""
        if self.method == "threshold":
            return None
        if self.method == "ranges":
            return self.p is not None and self.p <= min_p(*self.runs) + 1e-12
        return self.p is not None and self.p <= ALPHA

    @property
    def failed(self) -> bool:
        return self.over_threshold and self.beyond_noise is not False

    @property
    def label(self) -> str:
        """The table's ``gate`` cell: which of the two conditions held."""
        limit = f"{self.threshold:g}%"
        if not self.over_threshold:
            return f"ok (<={limit})"
        if self.method == "threshold":
            return f"FAIL (>{limit}, 1 run)"
        if self.failed:
            return f"FAIL (>{limit}, {self._evidence()})"
        return f"noise ({self._evidence()})"

    def _evidence(self) -> str:
        if self.method == "ranges":
            return "ranges apart" if self.beyond_noise else "ranges overlap"
        return f"p={self.p:.3f}" if self.p is not None else "p=?"

    def detail(self) -> str:
        """Why the noise verdict is what it is, for the failure message ('' for 1 run)."""
        if self.method == "threshold":
            return ""
        b, c = self.runs
        if self.method == "ranges":
            return (
                f"beyond noise: every one of {c} runs is worse than all {b} baseline runs"
                if self.beyond_noise
                else f"within noise: the {c} runs overlap the {b} baseline runs"
            )
        verdict = "beyond noise" if self.beyond_noise else "within noise"
        return f"{verdict}: Mann-Whitney p={self.p:.3f} ({c} vs {b} runs, alpha {ALPHA:g})"


def min_p(n: int, m: int) -> float:
    """The smallest one-sided p-value the exact rank test can give for n and m samples."""
    return 1 / math.comb(n + m, n)


def check(
    name: str,
    goal: str,
    baseline_samples: Sequence[float],
    current_samples: Sequence[float],
    threshold: float,
    worse_pct: float,
) -> GateResult:
    """Judge one metric; ``worse_pct`` is the medians' change in the metric's direction."""
    base = [float(x) for x in baseline_samples if math.isfinite(x)]
    now = [float(x) for x in current_samples if math.isfinite(x)]
    runs = (len(base), len(now))
    if len(base) < 2 or len(now) < 2:
        return GateResult(name, goal, worse_pct, threshold, "threshold", None, runs)
    if worse_pct <= threshold:
        # Under the threshold nothing fails; the rank test is not needed to say so.
        return GateResult(name, goal, worse_pct, threshold, "rank", None, runs)
    sign = 1.0 if goal == "min" else -1.0  # "worse" = larger after flipping a max metric
    p = mann_whitney_p([sign * x for x in now], [sign * x for x in base])
    method = "rank" if min_p(len(now), len(base)) <= ALPHA else "ranges"
    return GateResult(name, goal, worse_pct, threshold, method, p, runs)
