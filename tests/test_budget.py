"""--autoresearch-time-budget: parsing durations, and the "may one more start" rule."""

from __future__ import annotations

import argparse

import pytest

from pytest_autoresearch.program.budget import duration_option, parse_duration, time_left_allows


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("45m", 2700), ("5h30m", 19800), ("1h0m30s", 3630), ("600", 600), ("2.5", 2.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "30m5h", "h", "-5", "0", "5m5m", "1h 2q"])
def test_bad_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"duration such as 90s|more than 0"):
        duration_option(text)


def test_next_experiment_starts_only_if_it_is_expected_to_fit() -> None:
    assert time_left_allows(0.0, [], 60.0)  # nothing measured yet: the first may start
    assert not time_left_allows(61.0, [], 60.0)  # out of time
    assert time_left_allows(100.0, [30.0, 40.0], 150.0)  # 50 s left, the longest took 40
    assert not time_left_allows(100.0, [30.0, 60.0], 150.0)  # the longest took 60
    # Only the recent ones count: an early slow experiment does not stop the run for good.
    assert time_left_allows(100.0, [500.0, 10, 10, 10, 10, 10], 150.0)


def test_the_option_and_its_ini_key(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nautoresearch_time_budget = 2h\n")
    pytester.makeconftest(
        """
        from pytest_autoresearch.publish import pr_enabled
        from pytest_autoresearch.program.options import option

        def pytest_report_header(config):
            return (f"budget={option(config, 'time_budget')} remote={option(config, 'remote')}"
                    f" pr={pr_enabled(config)}")
        """
    )
    out = pytester.runpytest("-p", "autoresearch")
    out.stdout.fnmatch_lines(["budget=7200.0 remote=origin pr=False"])
    out = pytester.runpytest(
        "-p", "autoresearch", "--autoresearch-time-budget", "90s", "--autoresearch-pr",
        "--autoresearch-remote", "upstream",
    )  # fmt: skip
    out.stdout.fnmatch_lines(["budget=90.0 remote=upstream pr=True"])
    pytester.makeini("[pytest]\nautoresearch_pr = true\nautoresearch_remote = fork\n")
    out = pytester.runpytest("-p", "autoresearch")
    out.stdout.fnmatch_lines(["budget=None remote=fork pr=True"])
    bad = pytester.runpytest("-p", "autoresearch", "--autoresearch-time-budget", "soon")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*expected a duration such as 90s, 45m, 5h30m*got 'soon'*"])
