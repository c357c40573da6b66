"""Small, pure statistics for noisy measurements (no numpy).

API
---
median(xs) -> float                     the middle value (mean of the two middle ones)
mean(xs) -> float
stdev(xs) -> float                      sample standard deviation (n - 1); 0.0 below 2 values
spread(xs) -> float                     max - min; 0.0 for fewer than 2 values
mad_sigma(xs) -> float                  1.4826 * median absolute deviation (robust sigma)
NoiseEstimate(sigma, df, groups)        a pooled noise estimate and the evidence behind it
pooled_noise(groups, prior=None) -> NoiseEstimate
    sigma pooled over groups of repeated runs of the same code (each group keeps its own
    mean), df = sum(len(g) - 1); ``prior`` is a lower bound on sigma (a known resolution)
noise_sigma(samples, prior=None) -> float   pooled_noise([samples], prior).sigma
t_quantile(p, df) -> float              Student's t quantile (df may be float('inf'))
t_cdf(t, df) -> float

Every "sample" here is one value per evaluation run: the noise that matters for the keep
rule is how much one whole evaluation varies when the code does not change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

__all__ = [
    "NoiseEstimate",
    "mad_sigma",
    "mean",
    "median",
    "noise_sigma",
    "pooled_noise",
    "spread",
    "stdev",
    "t_cdf",
    "t_quantile",
]


def _finite(xs: Iterable[float]) -> list[float]:
    values = [float(x) for x in xs]
    for x in values:
        if not math.isfinite(x):
            raise ValueError(f"expected finite numbers, got {x!r}")
    return values


def median(xs: Sequence[float]) -> float:
    """The middle value; the mean of the two middle values for an even count."""
    values = sorted(_finite(xs))
    if not values:
        raise ValueError("median of no values: measure at least once")
    mid = len(values) // 2
    if len(values) % 2:
        return values[mid]
    return (values[mid - 1] + values[mid]) / 2


def mean(xs: Sequence[float]) -> float:
    """The arithmetic mean."""
    values = _finite(xs)
    if not values:
        raise ValueError("mean of no values: measure at least once")
    return math.fsum(values) / len(values)


def stdev(xs: Sequence[float]) -> float:
    """Sample standard deviation (n - 1 in the denominator); 0.0 for fewer than two values."""
    values = _finite(xs)
    if len(values) < 2:
        return 0.0
    m = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((x - m) ** 2 for x in values) / (len(values) - 1))


def spread(xs: Sequence[float]) -> float:
    """Range of the values (max - min); 0.0 for fewer than two values."""
    values = _finite(xs)
    return max(values) - min(values) if len(values) >= 2 else 0.0


def mad_sigma(xs: Sequence[float]) -> float:
    """Median absolute deviation scaled to estimate sigma for normal data (robust to outliers)."""
    values = _finite(xs)
    if len(values) < 2:
        return 0.0
    m = median(values)
    return 1.4826 * median([abs(x - m) for x in values])


@dataclass(frozen=True)
class NoiseEstimate:
    """Sigma of one evaluation's value, and how much evidence (degrees of freedom) backs it."""

    sigma: float
    df: int  # sum over groups of (runs - 1); the t-quantile uses it
    groups: int  # how many groups contributed (groups with at least two runs)


def pooled_noise(groups: Iterable[Sequence[float]], prior: float | None = None) -> NoiseEstimate:
    """Pool the within-group variance of repeated runs; ``prior`` is a floor on sigma.

    Each group is several runs of the same code (the baseline, a confirmed candidate), so
    differences between groups (real improvements) do not inflate the estimate.
    """
    ss = 0.0
    df = 0
    used = 0
    for group in groups:
        values = _finite(group)
        if len(values) < 2:
            continue
        m = math.fsum(values) / len(values)
        ss += math.fsum((x - m) ** 2 for x in values)
        df += len(values) - 1
        used += 1
    sigma = math.sqrt(ss / df) if df else 0.0
    if prior is not None:
        if not (math.isfinite(prior) and prior >= 0):
            raise ValueError(f"prior sigma must be a finite number >= 0, got {prior!r}")
        sigma = max(sigma, prior)
    return NoiseEstimate(sigma=sigma, df=df, groups=used)


def noise_sigma(samples: Sequence[float], prior: float | None = None) -> float:
    """Sigma of repeated runs of one code version (never 0 for distinct values)."""
    if len(samples) < 2 and prior is None:
        raise ValueError(
            f"need at least 2 runs to estimate noise, got {len(samples)}; "
            "measure the baseline more than once (baseline_runs >= 2)"
        )
    return pooled_noise([samples], prior).sigma


# -- Student's t, without scipy --------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for num in (
            m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    # The continued fraction converges fast only on one side of the mean; use symmetry.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(df):
        return NormalDist().cdf(t)
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


@lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (Student's t, ``df`` degrees of freedom)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be strictly between 0 and 1, got {p}")
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(df):
        return NormalDist().inv_cdf(p)
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    hi = 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    lo = 0.0
    for _ in range(200):  # bisection: slow but exact enough, and cached
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2.0
