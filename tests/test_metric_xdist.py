"""Under pytest-xdist, values measured on workers reach the summary, the JSON and baselines."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("xdist", reason="pytest-xdist is part of the dev extra")
pytestmark = pytest.mark.all_plugins  # the inner runs use xdist


SUITE = """
import json, os, pathlib
import pytest
from pytest_autoresearch import metric

VALUES = json.loads(pathlib.Path(__file__).with_name("values.json").read_text())

@metric(goal="min", unit="ms", repeat=3)
def test_latency():
    assert os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw")   # really on a worker
    return VALUES["latency"]

@metric(goal={"val_bpb": "min", "mfu": "max"})
def test_train():
    return {"val_bpb": VALUES["val_bpb"], "mfu": 0.4}

@pytest.mark.parametrize("n", [1, 2])
def test_cost(record_metric, n):
    record_metric("cost", n * VALUES["cost"], goal="min")

@metric(goal="max")
def test_broken():
    return float("nan")

def test_guard():
    pass
"""


def set_values(pytester: pytest.Pytester, **values: float) -> None:
    (pytester.path / "values.json").write_text(json.dumps(values), encoding="utf-8")


@pytest.mark.slow
def test_values_from_workers_reach_table_json_junit_and_baseline(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    set_values(pytester, latency=10.0, val_bpb=1.5, cost=3.0)
    result = pytester.runpytest_subprocess(
        "-n", "2", "--metrics-json", "m.json", "--metrics-save", "ci", "--junitxml", "j.xml"
    )
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["*2 workers*"])
    out = result.stdout.str()
    for row in (
        r"latency *10 *10 \.\. 10 \(n=3\) *ms *min",
        "val_bpb *1.5 *min",
        "mfu *0.4 *max",
        r"cost\[1\] *3 *min",
        r"cost\[2\] *6 *min",
        "broken *failed *max",
    ):
        result.stdout.re_match_lines([row])
    assert "broken: metric 'broken' returned nan, which is not finite" in out
    assert "saved baseline 'ci' (5 metrics)" in out

    data = json.loads((pytester.path / "m.json").read_text())
    metrics = {m["name"]: m for m in data["metrics"]}
    assert {n: m["value"] for n, m in metrics.items()} == {
        "latency": 10.0,
        "val_bpb": 1.5,
        "mfu": 0.4,
        "cost[1]": 3.0,
        "cost[2]": 6.0,
        "broken": None,
    }
    assert metrics["latency"]["samples"] == [10.0, 10.0, 10.0]
    assert metrics["latency"]["unit"] == "ms"
    assert "returned nan" in metrics["broken"]["error"]
    assert len(data["tests"]) == 6
    assert {t["nodeid"].split("::")[1]: t["metric"] for t in data["tests"]}["test_guard"] is False

    saved = json.loads((pytester.path / ".autoresearch/baselines/ci.json").read_text())
    assert saved["metrics"] == data["metrics"]

    props = {
        p.get("name"): p.get("value")
        for p in ET.parse(pytester.path / "j.xml").getroot().iter("property")
    }
    assert props["metric:latency"] == "10.0"
    assert props["metric:cost[2]"] == "6.0"

    # Worse numbers, compared on workers again: the gate fails and names each offender.
    set_values(pytester, latency=11.0, val_bpb=1.4, cost=3.0)
    gated = pytester.runpytest_subprocess(
        "-n", "2", "--metrics-compare", "ci", "--metrics-fail", "5", "-k", "not broken"
    )
    gated.assert_outcomes(passed=5)
    assert gated.ret == pytest.ExitCode.TESTS_FAILED
    gated.stdout.fnmatch_lines(
        [
            "*= metric regressions =*",
            "latency: 10 ms -> 11 ms is 10.00% worse (lower is better; allowed 5.00%); beyond*",
            "1 metric(s) got more than 5% worse than baseline 'ci' (--metrics-fail 5)",
        ]
    )
    gated.stdout.re_match_lines([r"val_bpb *1\.4 *min *1\.5 *-6\.67%"])


@pytest.mark.slow
def test_duplicate_names_from_different_workers_fail_the_session(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_a="""
        from pytest_autoresearch import metric

        @metric(goal="min", name="latency")
        def test_one():
            return 1.0
        """,
        test_b="""
        from pytest_autoresearch import metric

        @metric(goal="min", name="latency")
        def test_two():
            return 2.0
        """,
    )
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "loadfile")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["metric name 'latency' is reported by two tests: test_*.py::test_* and test_*.py::test_*"]
    )
