"""The noise-aware regression gate: the rank test with literal numbers, and end to end."""

from __future__ import annotations

import itertools
import json
import math
from statistics import median

import pytest

from pytest_autoresearch.metrics import gate
from pytest_autoresearch.metrics.baseline import Comparison, RegressionCheck

# -- the rank test ------------------------------------------------------------------------


def test_exact_p_values_match_reference_values() -> None:
    # Reference values from scipy.stats.mannwhitneyu(..., alternative="greater").
    assert gate.mann_whitney_p([4, 5, 6, 7, 8], [1, 2, 3, 4.5, 5.5]) == pytest.approx(
        0.027777777777777776
    )
    assert gate.mann_whitney_p([12, 13, 15, 11, 14], [10, 10.2, 9.8, 10.1, 9.9]) == (
        pytest.approx(1 / 252)  # completely apart: the smallest p for 5 + 5
    )
    assert gate.mann_whitney_p([1, 2, 3], [4, 5, 6]) == pytest.approx(1.0)  # the other way


def test_large_samples_use_the_normal_approximation() -> None:
    # C(24, 12) relabellings is too many to count; scipy's asymptotic method says 0.30139.
    x = [5.0 + 0.1 * i for i in range(12)]
    y = [4.9 + 0.1 * i for i in range(12)]
    assert math.comb(24, 12) > gate.EXACT_LIMIT
    assert gate.mann_whitney_p(x, y) == pytest.approx(0.3013896976116379)
    assert gate.mann_whitney_p(list(range(1, 21)), [v + 5.5 for v in range(20)]) == (
        pytest.approx(0.9852795577939586)
    )


def _brute_force_p(x: list[float], y: list[float]) -> float:
    """P(U >= observed) over every relabelling, counting pairs directly (no ranks)."""

    def u(a: list[float], b: list[float]) -> float:
        return sum(1.0 if i > j else 0.5 if i == j else 0.0 for i in a for j in b)

    pooled = x + y
    observed = u(x, y)
    hits = total = 0
    for idx in itertools.combinations(range(len(pooled)), len(x)):
        a = [pooled[i] for i in idx]
        b = [pooled[i] for i in range(len(pooled)) if i not in idx]
        total += 1
        hits += u(a, b) >= observed - 1e-9
    return hits / total


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([2, 2, 3, 3, 4], [1, 2, 2, 3, 3]),  # many ties
        ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]),  # all equal
        ([3, 1, 2, 5], [2, 2, 7]),
    ],
)
def test_exact_test_handles_ties_like_counting_pairs(x: list[float], y: list[float]) -> None:
    assert gate.mann_whitney_p(x, y) == pytest.approx(_brute_force_p(x, y))


def test_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        gate.mann_whitney_p([], [1.0])


# -- the gate -----------------------------------------------------------------------------


def _check(goal: str, before: list[float], now: list[float], threshold: float = 5.0):
    c = Comparison("m", goal, None, median(before), median(now), tuple(before), tuple(now))
    return RegressionCheck(c, threshold)


def test_single_samples_keep_the_threshold_rule() -> None:
    verdict = _check("min", [10.0], [11.0]).gate()
    assert verdict.method == "threshold" and verdict.failed
    assert verdict.beyond_noise is None
    assert verdict.label == "FAIL (>5%, 1 run)"
    # A side with one sample decides by the threshold alone, however many the other has.
    assert _check("min", [10.0, 10.0, 10.0], [11.0]).gate().method == "threshold"


def test_worse_beyond_threshold_and_noise_fails() -> None:
    check = _check("min", [10.0, 10.1, 9.9, 10.05, 9.95], [11.0, 11.1, 10.9, 11.05, 10.95])
    verdict = check.gate()
    assert verdict.method == "rank" and verdict.failed
    assert verdict.p == pytest.approx(1 / 252)
    assert verdict.label == "FAIL (>5%, p=0.004)"
    assert check.fails() == (
        "m: 10 -> 11 is 10.00% worse (lower is better; allowed 5.00%); "
        "beyond noise: Mann-Whitney p=0.004 (5 vs 5 runs, alpha 0.05)"
    )


def test_worse_beyond_threshold_but_within_noise_passes() -> None:
    # The medians differ by 10%, but the samples are all over the place on both sides.
    before = [10.0, 4.0, 16.0, 7.0, 13.0]
    now = [11.0, 5.0, 15.0, 8.0, 12.5]
    check = _check("min", before, now)
    verdict = check.gate()
    assert verdict.over_threshold and verdict.beyond_noise is False and not verdict.failed
    assert verdict.label.startswith("noise (p=0.")
    assert check.fails() is None


def test_max_goal_counts_a_fall_as_worse() -> None:
    check = _check("max", [0.80, 0.81, 0.79, 0.80], [0.70, 0.71, 0.69, 0.70])
    assert check.gate().failed
    assert _check("max", [0.70, 0.71, 0.69], [0.80, 0.81, 0.79]).fails() is None  # better


def test_too_few_runs_for_the_rank_test_need_separate_ranges() -> None:
    # 2 + 2 runs: the smallest p is 1/6, so the gate asks for ranges that do not overlap.
    apart = _check("min", [10.0, 10.2], [11.0, 11.2]).gate()
    assert apart.method == "ranges" and apart.failed and apart.label == "FAIL (>5%, ranges apart)"
    touching = _check("min", [10.0, 11.0], [11.0, 11.2]).gate()
    assert touching.method == "ranges" and not touching.failed
    assert touching.label == "noise (ranges overlap)"


def test_under_the_threshold_never_fails_and_says_so() -> None:
    verdict = _check("min", [10.0, 10.0, 10.0], [10.4, 10.4, 10.4]).gate()
    assert not verdict.failed and verdict.label == "ok (<=5%)"


# -- end to end: repeat=N on both sides ---------------------------------------------------

SUITE = """
import json, pathlib
from pytest_autoresearch import metric

SAMPLES = json.loads(pathlib.Path(__file__).with_name("samples.json").read_text())
_it = iter(SAMPLES)

@metric(goal="min", unit="ms", repeat=5)
def test_latency():
    return next(_it)
"""


def _samples(pytester: pytest.Pytester, values: list[float]) -> None:
    (pytester.path / "samples.json").write_text(json.dumps(values), encoding="utf-8")


def test_gate_column_and_exit_status_with_repeated_samples(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_lat=SUITE)
    _samples(pytester, [10.0, 4.0, 16.0, 7.0, 13.0])
    pytester.runpytest("--metrics-save", "main").assert_outcomes(passed=1)

    # 10% worse median, but within the noise: passes, and the table says why.
    _samples(pytester, [11.0, 5.0, 15.0, 8.0, 12.5])
    noisy = pytester.runpytest("--metrics-compare", "main", "--metrics-fail", "5")
    assert noisy.ret == 0, noisy.stdout.str()
    noisy.stdout.fnmatch_lines(
        [
            "name *value *spread *unit *goal *baseline *change *gate",
            "latency *11 *5 .. 15 (n=5) *ms *min *10 *+10.00% *noise (p=0.*)",
        ]
    )

    # The same median shift with tight samples: beyond the noise, so it fails.
    _samples(pytester, [10.0, 10.1, 9.9, 10.05, 9.95])
    pytester.runpytest("--metrics-save", "tight").assert_outcomes(passed=1)
    _samples(pytester, [11.0, 11.1, 10.9, 11.05, 10.95])
    tight = pytester.runpytest("--metrics-compare", "tight", "--metrics-fail", "5")
    assert tight.ret == pytest.ExitCode.TESTS_FAILED
    tight.stdout.fnmatch_lines(
        [
            "latency *11 *10.9 .. 11.1 (n=5) *ms *min *10 *+10.00% *FAIL (>5%, p=0.004)",
            "*= metric regressions =*",
            "latency: 10 ms -> 11 ms is 10.00% worse (lower is better; allowed 5.00%); "
            "beyond noise: Mann-Whitney p=0.004 (5 vs 5 runs, alpha 0.05)",
        ]
    )
