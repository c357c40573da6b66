"""@metric and record_metric: declaration errors, captured returns, bad values, names, markers."""

from __future__ import annotations

import json
import math

import pytest

from pytest_autoresearch import Measurement, metric
from pytest_autoresearch.metrics.metric import MetricError, check_value, spec_of


def run_json(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict]:
    """Run pytest in-process with --metrics-json and return the result and the document."""
    path = pytester.path / "metrics.json"
    result = pytester.runpytest("--metrics-json", str(path), *args)
    return result, json.loads(path.read_text())


def by_name(data: dict) -> dict[str, dict]:
    return {m["name"]: m for m in data["metrics"]}


# -- declaring a metric --------------------------------------------------------------------


def test_goal_is_required() -> None:
    with pytest.raises(MetricError, match=r"needs a goal: @metric\(goal='min'\)"):
        metric()
    with pytest.raises(MetricError, match=r"@metric on 'test_x' needs a goal"):

        @metric
        def test_x() -> float:
            return 1.0


@pytest.mark.parametrize(
    ("goal", "hint"),
    [("minimize", "did you mean 'min'"), ("higher", "did you mean 'max'"), ("up?", "got 'up?'")],
)
def test_bad_goal_names_the_choices(goal: str, hint: str) -> None:
    with pytest.raises(MetricError, match="goal must be 'min'.*or 'max'") as info:
        metric(goal=goal)
    assert hint in str(info.value)


def test_bad_goal_inside_a_dict_names_the_metric() -> None:
    with pytest.raises(MetricError, match="goal for 'mfu'.*got 'big'"):
        metric(goal={"val_bpb": "min", "mfu": "big"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"goal": "min", "repeat": 0}, "repeat=...) must be a whole number of runs, 1 or more"),
        ({"goal": "min", "repeat": 2.5}, "got 2.5"),
        ({"goal": {"a": "min"}, "name": "x"}, "the dict keys are the names; drop name="),
        ({"goal": {}}, "declares no metrics"),
        ({"goal": "min", "name": "two words"}, "without spaces, got 'two words'"),
        ({"goal": {"a": "min"}, "unit": {"b": "ms"}}, "names 'b', which have no goal"),
    ],
)
def test_bad_declarations_say_what_to_change(kwargs: dict, message: str) -> None:
    with pytest.raises(MetricError) as info:
        metric(**kwargs)(lambda: 1.0)
    assert message in str(info.value)


def test_decorator_keeps_the_function_and_tags_it() -> None:
    @metric(goal="max", unit={"tok_s": "tok/s"}.get("tok_s"))
    def test_tokens_per_second(tmp_path: object) -> float:
        """Docstring stays."""
        return 3.0

    spec = spec_of(test_tokens_per_second)
    assert spec is not None
    assert spec.goals == {"tokens_per_second": "max"}
    assert spec.units == {"tokens_per_second": "tok/s"}
    assert test_tokens_per_second.__name__ == "test_tokens_per_second"
    assert test_tokens_per_second.__doc__ == "Docstring stays."
    # Called directly, outside a metric test run, it is the plain function.
    assert test_tokens_per_second(None) == 3.0


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "returned None: a metric test must return its value"),
        (math.nan, "returned nan, which is not finite"),
        (math.inf, "returned inf, which is not finite"),
        (-math.inf, "returned -inf, which is not finite"),
        (True, "returned True, a bool, not a measurement"),
        ("1.5", "returned '1.5', a str, not a number"),
        ([1.0, 2.0], "returned a list ([1.0, 2.0]), not a number"),
    ],
)
def test_check_value_rejects(value: object, problem: str) -> None:
    with pytest.raises(MetricError) as info:
        check_value("latency", value)
    assert str(info.value).startswith("metric 'latency' ")
    assert problem in str(info.value)


def test_check_value_accepts_ints_and_number_like_objects() -> None:
    class Scalar:  # like a 0-d tensor: converts with float()
        def __float__(self) -> float:
            return 2.5

    assert check_value("x", 3) == 3.0
    assert check_value("x", Scalar()) == 2.5


def test_measurement_value_is_the_median_and_round_trips() -> None:
    m = Measurement("val_bpb", "min", "bits/byte", [1.0, 3.0, 2.0], "t.py::test", 0.5)
    assert m.value == 2.0
    assert Measurement.from_dict(m.as_dict()) == m
    failed = Measurement("val_bpb", "min", samples=[1.0], outcome="failed", error="boom")
    assert failed.value is None
    assert failed.as_dict()["value"] is None


# -- through pytest ------------------------------------------------------------------------


def test_return_value_is_captured_without_warning(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_autoresearch import metric

        @pytest.fixture
        def size():
            return 40

        @metric(goal="min", unit="ms")
        def test_render_latency(size, tmp_path):
            assert tmp_path.is_dir()   # fixtures resolve through the wrapper
            return size + 2

        @metric(goal="max", name="throughput")
        def test_named():
            return 7

        class TestGroup:
            @metric(goal="min")
            def test_in_class(self):
                return 0.5
        """
    )
    result, data = run_json(pytester, "-W", "error::pytest.PytestReturnNotNoneWarning")
    result.assert_outcomes(passed=3)
    assert "PytestReturnNotNoneWarning" not in result.stdout.str()
    metrics = by_name(data)
    assert set(metrics) == {"render_latency", "throughput", "in_class"}
    assert metrics["render_latency"]["value"] == 42.0
    assert metrics["render_latency"]["unit"] == "ms"
    assert metrics["render_latency"]["goal"] == "min"
    assert (
        metrics["render_latency"]["nodeid"]
        == "test_return_value_is_captured_without_warning.py::test_render_latency"
    )
    assert metrics["throughput"]["goal"] == "max"
    assert metrics["in_class"]["nodeid"].endswith("::TestGroup::test_in_class")


def test_several_metrics_from_one_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_autoresearch import metric

        CALLS = []

        @metric(goal={"val_bpb": "min", "mfu": "max"}, unit={"val_bpb": "bits/byte"})
        def test_train():
            CALLS.append(1)
            assert len(CALLS) == 1   # one run gives both values
            return {"val_bpb": 1.02, "mfu": 0.38}
        """
    )
    result, data = run_json(pytester)
    result.assert_outcomes(passed=1)
    metrics = by_name(data)
    assert metrics["val_bpb"] | {"duration": 0} == {
        "name": "val_bpb",
        "value": 1.02,
        "samples": [1.02],
        "unit": "bits/byte",
        "goal": "min",
        "nodeid": "test_several_metrics_from_one_run.py::test_train",
        "duration": 0,
        "outcome": "passed",
        "error": None,
    }
    assert metrics["mfu"]["value"] == 0.38
    assert metrics["mfu"]["goal"] == "max"
    assert metrics["mfu"]["unit"] is None


def test_every_bad_return_value_fails_its_test_with_a_clear_message(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import math
        from pytest_autoresearch import metric

        @metric(goal="min")
        def test_none():
            x = 1.0      # forgot the return

        @metric(goal="min")
        def test_nan():
            return math.nan

        @metric(goal="max")
        def test_posinf():
            return math.inf

        @metric(goal="max")
        def test_neginf():
            return -math.inf

        @metric(goal="max")
        def test_flag():
            return True

        @metric(goal="min")
        def test_text():
            return "0.5"

        @metric(goal={"val_bpb": "min", "mfu": "max"})
        def test_missing_key():
            return {"val_bpb": 1.0}

        @metric(goal={"bpb": "min"})
        def test_extra_key():
            return {"bpb": 1.0, "loss": 2.0}

        @metric(goal={"a": "min", "b": "max"})
        def test_not_a_dict():
            return 1.0

        @metric(goal="min")
        def test_good():
            return 1.0
        """
    )
    result, data = run_json(pytester)
    result.assert_outcomes(passed=1, failed=9)
    expected = {
        "none": "metric 'none' returned None: a metric test must return its value",
        "nan": "metric 'nan' returned nan, which is not finite",
        "posinf": "metric 'posinf' returned inf, which is not finite",
        "neginf": "metric 'neginf' returned -inf, which is not finite",
        "flag": "metric 'flag' returned True, a bool, not a measurement",
        "text": "metric 'text' returned '0.5', a str, not a number",
        "mfu": "metric 'mfu' is declared but missing from the dict",
        "bpb": "returned key(s) 'loss' with no goal",
        "a": "metrics a, b returned 1.0 (a float): a test with goal={...} must return a dict",
    }
    metrics = by_name(data)
    for name, message in expected.items():
        assert metrics[name]["outcome"] == "failed", name
        assert metrics[name]["value"] is None, name
        assert message in metrics[name]["error"], name
        # The same words reach the user in the failure report.
        result.stdout.fnmatch_lines([f"E * {message}*"])
    assert metrics["good"]["value"] == 1.0
    # val_bpb itself was fine, but its test failed, so no value is kept from that run.
    assert metrics["val_bpb"]["value"] is None
    assert metrics["val_bpb"]["samples"] == [1.0]
    assert metrics["val_bpb"]["error"] == "metric 'mfu' is declared but missing from the dict"
    assert "PytestReturnNotNoneWarning" not in result.stdout.str()


def test_repeat_keeps_every_sample_and_reports_the_median(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_autoresearch import metric

        VALUES = iter([5.0, 1.0, 3.0, 2.0, 4.0])

        @metric(goal="min", unit="ms", repeat=5)
        def test_latency():
            return next(VALUES)
        """
    )
    result, data = run_json(pytester)
    result.assert_outcomes(passed=1)
    (m,) = data["metrics"]
    assert m["samples"] == [5.0, 1.0, 3.0, 2.0, 4.0]
    assert m["value"] == 3.0
    result.stdout.fnmatch_lines(
        ["name *value*spread*unit*goal", "latency *3 *1 .. 5 (n=5) *ms *min"]
    )


def test_an_exception_in_the_body_fails_the_metric(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_autoresearch import metric

        @metric(goal="min", repeat=3)
        def test_crashes_on_second_run():
            test_crashes_on_second_run.calls = getattr(test_crashes_on_second_run, "calls", 0) + 1
            if test_crashes_on_second_run.calls == 2:
                raise RuntimeError("out of memory")
            return 1.0

        @pytest.fixture
        def broken():
            raise OSError("no dataset")

        @metric(goal="max")
        def test_setup_fails(broken):
            return 1.0
        """
    )
    result, data = run_json(pytester)
    result.assert_outcomes(failed=1, errors=1)
    metrics = by_name(data)
    crashed = metrics["crashes_on_second_run"]
    assert crashed["outcome"] == "failed"
    assert crashed["value"] is None
    assert crashed["samples"] == [1.0]
    assert "RuntimeError: out of memory" in crashed["error"]
    assert metrics["setup_fails"]["outcome"] == "error"
    assert "OSError: no dataset" in metrics["setup_fails"]["error"]


def test_printed_numbers_never_count(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_autoresearch import metric

        @metric(goal="min")
        def test_val_bpb():
            print("val_bpb: 0.001")
            print('{"name": "val_bpb", "value": 0.001}')
            return 1.25

        @metric(goal="min")
        def test_only_prints():
            print("only_prints: 0.5")
        """
    )
    result, data = run_json(pytester, "-s")
    result.assert_outcomes(passed=1, failed=1)
    metrics = by_name(data)
    assert metrics["val_bpb"]["value"] == 1.25
    assert metrics["only_prints"]["value"] is None
    assert "returned None" in metrics["only_prints"]["error"]


def test_record_metric_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        def test_throughput(record_metric):
            assert record_metric("req_per_s", 1234, goal="max", unit="req/s") == 1234.0
            record_metric("req_per_s", 1200.0, goal="max")   # a second sample
            assert 1 + 1 == 2

        def test_needs_goal(record_metric):
            record_metric("latency", 1.0)

        def test_bad_value(record_metric):
            record_metric("latency_ms", float("nan"), goal="min")

        def test_conflicting_goal(record_metric):
            record_metric("x", 1.0, goal="min")
            record_metric("x", 2.0, goal="max")

        @pytest.mark.parametrize("n", [1, 2])
        def test_sizes(record_metric, n):
            record_metric("cost", n * 10.0, goal="min")
        """
    )
    result, data = run_json(pytester)
    result.assert_outcomes(passed=3, failed=3)
    metrics = by_name(data)
    assert metrics["req_per_s"]["samples"] == [1234.0, 1200.0]
    assert metrics["req_per_s"]["value"] == 1217.0
    assert metrics["req_per_s"]["unit"] == "req/s"
    assert metrics["cost[1]"]["value"] == 10.0
    assert metrics["cost[2]"]["value"] == 20.0
    assert metrics["latency_ms"]["outcome"] == "failed"
    assert (
        "metric 'latency_ms' was given nan, which is not finite" in metrics["latency_ms"]["error"]
    )
    result.stdout.fnmatch_lines(
        [
            "*record_metric('latency', ...) needs goal='min' or goal='max'*",
            "*metric 'x' was already recorded in this test with goal='min'*",
        ]
    )
    tests = {t["nodeid"].split("::")[1]: t for t in data["tests"]}
    assert all(t["metric"] for t in tests.values())


def test_parametrized_names_get_the_param_id(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_autoresearch import metric

        @pytest.mark.parametrize("size", ["small", "large"])
        @metric(goal="min", unit="ms")
        def test_latency(size):
            return {"small": 1.0, "large": 9.0}[size]

        @metric(goal={"loss": "min"})
        @pytest.mark.parametrize("depth", [2, 4])
        def test_train(depth):
            return {"loss": 1.0 / depth}
        """
    )
    result, data = run_json(pytester)
    result.assert_outcomes(passed=4)
    metrics = by_name(data)
    assert metrics["latency[small]"]["value"] == 1.0
    assert metrics["latency[large]"]["value"] == 9.0
    assert metrics["loss[2]"]["value"] == 0.5
    assert metrics["loss[4]"]["value"] == 0.25


def test_duplicate_names_across_tests_fail_the_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_autoresearch import metric

        @metric(goal="min", name="latency")
        def test_a():
            return 1.0

        @metric(goal="min")
        def test_latency():
            return 2.0

        # Two variants of one metric where only one can run (CPU vs GPU) are fine.
        @metric(goal="min", name="val_bpb")
        def test_cpu():
            return 1.1

        @pytest.mark.skip(reason="no CUDA")
        @metric(goal="min", name="val_bpb")
        def test_gpu():
            return 0.9
        """
    )
    result, data = run_json(pytester)
    result.assert_outcomes(passed=3, skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "metric name 'latency' is reported by two tests: "
            "test_duplicate_names_across_tests_fail_the_session.py::test_a and "
            "test_duplicate_names_across_tests_fail_the_session.py::test_latency; give one "
            "another name*",
        ]
    )
    assert by_name(data)["val_bpb"]["value"] == 1.1
    assert data["exitstatus"] == 1


def test_metric_marker_selects_with_m_and_k(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_autoresearch import metric

        @metric(goal="min")
        def test_latency():
            return 1.0

        def test_fixture_form(record_metric):
            record_metric("rps", 5.0, goal="max")

        def test_plain():
            pass
        """
    )
    only = pytester.runpytest("-m", "metric", "-v")
    only.assert_outcomes(passed=2)
    only.stdout.fnmatch_lines(["*test_latency PASSED*", "*test_fixture_form PASSED*"])
    assert "test_plain" not in only.stdout.str()

    none = pytester.runpytest("-m", "not metric", "-v")
    none.assert_outcomes(passed=1)
    assert "= metrics =" not in none.stdout.str()  # no metric ran: no table

    k = pytester.runpytest("-k", "latency", "-m", "metric", "--strict-markers")
    k.assert_outcomes(passed=1)
    k.stdout.fnmatch_lines(["latency *1 *min"])

    markers = pytester.runpytest("--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.metric: a metric test*"])


def test_plugin_disabled_leaves_metric_tests_as_plain_functions(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_autoresearch import metric

        @metric(goal="min")
        def test_latency():
            return 1.0
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:autoresearch")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*PytestReturnNotNoneWarning*"])
    assert "= metrics =" not in result.stdout.str()
