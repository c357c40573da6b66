"""Baselines: save, compare, the --metrics-fail gate; regression checks with literal numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pytest_autoresearch.metrics import baseline
from pytest_autoresearch.metrics.baseline import BaselineError, Comparison, RegressionCheck
from pytest_autoresearch.metrics.metric import Measurement

# -- pure parts ----------------------------------------------------------------------------


def test_percent_change() -> None:
    assert baseline.percent_change(10.0, 11.0) == pytest.approx(10.0)
    assert baseline.percent_change(-10.0, -11.0) == pytest.approx(-10.0)  # size of the baseline
    assert baseline.percent_change(0.0, 0.0) == 0.0
    assert baseline.percent_change(0.0, 1.0) == math.inf
    assert baseline.percent_change(0.0, -1.0) == -math.inf


@pytest.mark.parametrize(
    ("goal", "before", "now", "verdict", "worse"),
    [
        ("min", 10.0, 11.0, "worse", 10.0),
        ("min", 10.0, 9.0, "better", -10.0),
        ("max", 10.0, 9.0, "worse", 10.0),
        ("max", 10.0, 12.0, "better", -20.0),
        ("max", 3.0, 3.0, "same", 0.0),
    ],
)
def test_comparison_direction(
    goal: str, before: float, now: float, verdict: str, worse: float
) -> None:
    c = Comparison("m", goal, None, before, now)
    assert c.verdict == verdict
    assert c.worse_pct == pytest.approx(worse)


def test_regression_check_fails_only_beyond_the_threshold_in_its_direction() -> None:
    latency = Comparison("latency", "min", "ms", 10.0, 10.6)
    assert RegressionCheck(latency, 5.0).fails() == (
        "latency: 10 ms -> 10.6 ms is 6.00% worse (lower is better; allowed 5.00%)"
    )
    assert RegressionCheck(latency, 6.0).fails() is None  # exactly at the limit passes
    faster = Comparison("latency", "min", "ms", 10.0, 1.0)
    assert RegressionCheck(faster, 0.0).fails() is None  # improvements never fail
    mfu = Comparison("mfu", "max", None, 0.40, 0.30)
    assert RegressionCheck(mfu, 10.0).fails() == (
        "mfu: 0.4 -> 0.3 is 25.00% worse (higher is better; allowed 10.00%)"
    )
    from_zero = Comparison("errors", "min", None, 0.0, 2.0)
    assert "inf% worse" in RegressionCheck(from_zero, 1000.0).fails()


def test_compare_pairs_metrics_with_values_only() -> None:
    data = {
        "version": 1,
        "metrics": [
            Measurement("a", "min", samples=[1.0]).as_dict(),
            Measurement("b", "max", samples=[2.0], outcome="failed").as_dict(),
            Measurement("gone", "min", samples=[5.0]).as_dict(),
        ],
    }
    now = [
        Measurement("a", "min", samples=[2.0]),
        Measurement("b", "max", samples=[3.0]),  # no baseline value to compare with
        Measurement("c", "min", samples=[1.0]),  # new metric
        Measurement("d", "min", outcome="failed"),
    ]
    (only,) = baseline.compare(now, data)
    assert (only.name, only.baseline, only.current) == ("a", 1.0, 2.0)
    assert baseline.regressions([only], 50.0) == [
        "a: 1 -> 2 is 100.00% worse (lower is better; allowed 50.00%)"
    ]


def test_compare_carries_both_sides_samples_to_the_gate() -> None:
    data = {"version": 1, "metrics": [Measurement("t", "min", samples=[3.0, 1.0, 2.0]).as_dict()]}
    (c,) = baseline.compare([Measurement("t", "min", samples=[2.2, 2.4, 2.3])], data)
    assert c.baseline_samples == (3.0, 1.0, 2.0) and c.current_samples == (2.2, 2.4, 2.3)
    # Medians 2 -> 2.3 is 15% worse, but the baseline spread 1..3: within its noise.
    assert baseline.regressions([c], 5.0) == []
    assert baseline.gates([c], 5.0)["t"].label.startswith("noise (p=")
    # Without the samples (an old baseline with values only) the threshold decides.
    bare = Comparison("t", "min", None, 2.0, 2.3)
    assert baseline.regressions([bare], 5.0) == [
        "t: 2 -> 2.3 is 15.00% worse (lower is better; allowed 5.00%)"
    ]


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", "", ".hidden", "x" * 101, "a b"])
def test_baseline_names_are_checked(name: str) -> None:
    with pytest.raises(BaselineError, match="invalid baseline name"):
        baseline.check_name(name)


def test_save_load_and_missing(tmp_path: Path) -> None:
    data = {"version": 1, "metrics": [Measurement("a", "min", samples=[1.0]).as_dict()]}
    path = baseline.save(tmp_path, "main", data)
    assert path == tmp_path / ".autoresearch" / "baselines" / "main.json"
    assert baseline.load(tmp_path, "main") == data
    baseline.save(tmp_path, "before-refactor", data)
    assert baseline.saved(tmp_path) == ["before-refactor", "main"]
    with pytest.raises(BaselineError) as info:
        baseline.load(tmp_path, "nightly")
    assert str(info.value) == (
        f"no baseline named 'nightly' in {tmp_path / '.autoresearch' / 'baselines'} "
        "(saved: before-refactor, main); save one first with: pytest --metrics-save nightly"
    )
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(BaselineError, match="baseline 'main' cannot be used: .*not valid JSON"):
        baseline.load(tmp_path, "main")


# -- through pytest ------------------------------------------------------------------------

SUITE = """
import json, pathlib
from pytest_autoresearch import metric

VALUES = json.loads(pathlib.Path(__file__).with_name("values.json").read_text())

@metric(goal="min", unit="ms")
def test_latency():
    return VALUES["latency"]

@metric(goal="max")
def test_accuracy():
    return VALUES["accuracy"]
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_gated_suite=SUITE)  # not test_gate: tests/test_gate.py is imported
    set_values(pytester, latency=10.0, accuracy=0.80)
    return pytester


def set_values(pytester: pytest.Pytester, **values: float) -> None:
    (pytester.path / "values.json").write_text(json.dumps(values), encoding="utf-8")


def test_save_writes_a_metrics_document(project: pytest.Pytester) -> None:
    result = project.runpytest("--metrics-save", "main")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["saved baseline 'main' (2 metrics) to .autoresearch/baselines/main.json"]
    )
    saved = json.loads((project.path / ".autoresearch/baselines/main.json").read_text())
    assert saved["version"] == 1
    assert {m["name"]: m["value"] for m in saved["metrics"]} == {"latency": 10.0, "accuracy": 0.8}
    assert len(saved["tests"]) == 2


def test_compare_shows_baseline_and_coloured_change(project: pytest.Pytester) -> None:
    project.runpytest("--metrics-save", "main").assert_outcomes(passed=2)
    set_values(project, latency=12.0, accuracy=0.88)  # latency worse, accuracy better
    result = project.runpytest("--metrics-compare", "main", "--color=yes")
    result.assert_outcomes(passed=2)
    assert result.ret == 0  # comparing alone never fails
    out = result.stdout.str()
    assert "metrics (compared with baseline 'main')" in out
    lines = [ln for ln in out.splitlines() if ln.startswith(("name", "latency", "accuracy"))]
    assert lines[0].split() == ["name", "value", "unit", "goal", "baseline", "change"]
    assert lines[1].split()[:5] == ["latency", "12", "ms", "min", "10"]
    assert lines[1].endswith("\x1b[31m+20.00%\x1b[0m")  # worse: red
    assert lines[2].split()[:4] == ["accuracy", "0.88", "max", "0.8"]
    assert lines[2].endswith("\x1b[32m+10.00%\x1b[0m")  # better: green


def test_gate_fails_on_a_regression_and_lists_each_offender(project: pytest.Pytester) -> None:
    project.runpytest("--metrics-save", "main").assert_outcomes(passed=2)
    set_values(project, latency=11.0, accuracy=0.70)  # both worse than 5%
    result = project.runpytest("--metrics-compare", "main", "--metrics-fail", "5%")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*= metric regressions =*",
            "latency: 10 ms -> 11 ms is 10.00% worse (lower is better; allowed 5.00%)",
            "accuracy: 0.8 -> 0.7 is 12.50% worse (higher is better; allowed 5.00%)",
            "2 metric(s) got more than 5% worse than baseline 'main' (--metrics-fail 5)",
        ]
    )


def test_gate_passes_within_the_threshold_and_on_improvement(project: pytest.Pytester) -> None:
    project.runpytest("--metrics-save", "main").assert_outcomes(passed=2)
    set_values(project, latency=10.4, accuracy=0.99)  # 4% worse, and much better
    result = project.runpytest("--metrics-compare", "main", "--metrics-fail", "5")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["no metric got more than 5% worse than baseline 'main'"])
    assert "regressions" not in result.stdout.str()
    # Same numbers, stricter gate: now it fails.
    strict = project.runpytest("--metrics-compare", "main", "--metrics-fail", "1")
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    strict.stdout.fnmatch_lines(["latency: 10 ms -> 10.4 ms is 4.00% worse*"])


def test_compare_and_save_the_same_name_moves_the_baseline(project: pytest.Pytester) -> None:
    project.runpytest("--metrics-save", "main")
    set_values(project, latency=8.0, accuracy=0.80)
    project.runpytest("--metrics-compare", "main", "--metrics-save", "main").stdout.fnmatch_lines(
        ["latency *8 *ms *min *10 *-20.00%"]
    )
    again = project.runpytest("--metrics-compare", "main")
    again.stdout.fnmatch_lines(["latency *8 *ms *min *8 *+0.00%"])


def test_compare_with_a_missing_baseline_lists_the_saved_ones(project: pytest.Pytester) -> None:
    project.runpytest("--metrics-save", "main")
    result = project.runpytest("--metrics-compare", "nightly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*no baseline named 'nightly' in *baselines (saved: main); save one first with: "
            "pytest --metrics-save nightly*"
        ]
    )


def test_compare_with_a_corrupt_baseline_says_how_to_fix_it(project: pytest.Pytester) -> None:
    folder = project.path / ".autoresearch" / "baselines"
    folder.mkdir(parents=True)
    (folder / "main.json").write_text('{"version": 1, "metr', encoding="utf-8")
    result = project.runpytest("--metrics-compare", "main")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*baseline 'main' cannot be used: *not valid JSON*Save it again with --metrics-save main*"]
    )


def test_new_and_failed_metrics_do_not_trip_the_gate(project: pytest.Pytester) -> None:
    project.runpytest("--metrics-save", "main")
    project.makepyfile(
        test_new="""
        from pytest_autoresearch import metric

        @metric(goal="min")
        def test_brand_new():
            return 100.0
        """
    )
    result = project.runpytest("--metrics-compare", "main", "--metrics-fail", "0")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["brand_new *100 *min *- *new"])
