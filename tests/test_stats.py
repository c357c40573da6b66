"""stats: small pure statistics, checked against literal numbers and textbook tables."""

from __future__ import annotations

import math

import pytest

from pytest_autoresearch.metrics.stats import (
    mad_sigma,
    mean,
    median,
    noise_sigma,
    pooled_noise,
    spread,
    stdev,
    t_cdf,
    t_quantile,
)


def test_centre_and_spread_of_literal_numbers() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert mean([1.0, 2.0, 6.0]) == 3.0
    assert stdev([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) == pytest.approx(2.138089935)
    assert stdev([5.0]) == 0.0
    assert spread([1.5, -0.5, 1.0]) == 2.0
    assert spread([1.0]) == 0.0
    # One wild value barely moves the robust sigma.
    assert mad_sigma([1.0, 1.1, 0.9, 1.0, 50.0]) == pytest.approx(1.4826 * 0.1)


def test_bad_input_is_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="no values"):
        median([])
    with pytest.raises(ValueError, match="finite"):
        mean([1.0, float("nan")])
    with pytest.raises(ValueError, match="at least 2 runs"):
        noise_sigma([1.0])


def test_pooled_noise_ignores_differences_between_groups() -> None:
    # Two code versions 10 apart, each with spread 1: the noise is 1, not 5.
    est = pooled_noise([[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]])
    assert est.sigma == pytest.approx(1.0)
    assert (est.df, est.groups) == (4, 2)
    # Single runs carry no noise information and are skipped.
    assert pooled_noise([[0.0, 2.0], [5.0]]).df == 1


def test_prior_is_a_floor_and_identical_runs_give_zero() -> None:
    assert noise_sigma([1.0, 1.0, 1.0]) == 0.0
    assert noise_sigma([1.0, 1.0, 1.0], prior=0.01) == 0.01
    assert noise_sigma([1.0, 3.0], prior=0.01) == pytest.approx(math.sqrt(2))
    assert noise_sigma([1.0, 1.0 + 1e-12]) > 0.0
    with pytest.raises(ValueError, match="prior"):
        pooled_noise([[1.0, 2.0]], prior=-1.0)


@pytest.mark.parametrize(
    ("p", "df", "table"),
    [
        (0.975, 1, 12.706),
        (0.975, 2, 4.303),
        (0.99, 2, 6.965),
        (0.95, 5, 2.015),
        (0.975, 10, 2.228),
        (0.995, 30, 2.750),
        (0.975, math.inf, 1.960),
    ],
)
def test_t_quantile_matches_the_printed_tables(p: float, df: float, table: float) -> None:
    assert t_quantile(p, df) == pytest.approx(table, abs=1e-3)


def test_t_cdf_and_quantile_agree_and_are_symmetric() -> None:
    for df in (1, 3, 7.5, 40):
        for p in (0.6, 0.9, 0.999):
            t = t_quantile(p, df)
            assert t_cdf(t, df) == pytest.approx(p, abs=1e-9)
            assert t_quantile(1 - p, df) == pytest.approx(-t)
    assert t_cdf(0.0, 4) == 0.5
    with pytest.raises(ValueError, match="between 0 and 1"):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_cdf(1.0, 0)
