"""The metrics table, --metrics-json, junitxml properties, --help, option and ini validation."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_autoresearch.metrics import json_file as metrics_json

SUITE = """
import pytest
from pytest_autoresearch import metric

def test_pass():
    pass

def test_fail():
    assert 1 == 2, "guard broke"

@pytest.mark.skip(reason="not today")
def test_skip():
    pass

@pytest.fixture
def bad():
    raise RuntimeError("setup boom")

def test_setup_error(bad):
    pass

@pytest.fixture
def bad_teardown():
    yield
    raise RuntimeError("teardown boom")

def test_teardown_error(bad_teardown):
    pass

@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False

@metric(goal="min", unit="s")
def test_speed():
    return 0.5

@metric(goal="max")
def test_broken_metric():
    return float("nan")
"""


def test_table_lists_every_metric(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_autoresearch import metric

        @metric(goal="min", unit="ms")
        def test_render_latency():
            return 12.3456789

        @metric(goal={"val_bpb": "min", "mfu": "max"}, unit={"val_bpb": "bits/byte"})
        def test_train():
            return {"val_bpb": 1.02, "mfu": 0.38}

        @metric(goal="max", unit="req/s")
        def test_broken():
            return None
        """
    )
    result = pytester.runpytest("--color=yes")
    result.stdout.fnmatch_lines(
        [
            "*= metrics =*",
            "name *value *unit *goal",
            "render_latency *12.3457 *ms *min",
            "val_bpb *1.02 *bits/byte *min",
            "mfu *0.38 *max",
            "*broken *failed *req/s *max*",
            "*broken: metric 'broken' returned None*",
        ]
    )
    out = result.stdout.str()
    # A failed metric is shown in red; good ones are not coloured without a baseline.
    assert "\x1b[31mbroken " in out
    assert "\x1b[32mrender_latency" not in out
    assert "spread" not in out  # no repeats, no spread column


def test_no_metrics_no_table(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert "= metrics =" not in result.stdout.str()


def test_json_document_matches_the_contract(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    out = pytester.path / "deep" / "dir" / "metrics.json"  # parents are created
    result = pytester.runpytest("--metrics-json", "deep/dir/metrics.json")
    result.assert_outcomes(passed=3, failed=2, skipped=1, errors=2, xfailed=1)
    data = json.loads(out.read_text())

    assert set(data) >= {
        "version",
        "created",
        "machine",
        "commit",
        "exitstatus",
        "duration",
        "metrics",
        "tests",
    }
    assert data["version"] == metrics_json.VERSION == 1
    assert set(data["machine"]) >= {"node", "platform", "python", "cpu_count"}
    assert data["commit"] is None  # pytester's folder is not a git repository
    assert data["exitstatus"] == 1
    assert data["duration"] > 0
    assert data["created"].endswith("+00:00")

    speed, broken = data["metrics"]
    assert set(speed) == {
        "name",
        "value",
        "samples",
        "unit",
        "goal",
        "nodeid",
        "duration",
        "outcome",
        "error",
    }
    assert (speed["name"], speed["value"], speed["samples"]) == ("speed", 0.5, [0.5])
    assert (speed["unit"], speed["goal"], speed["outcome"], speed["error"]) == (
        "s",
        "min",
        "passed",
        None,
    )
    assert speed["nodeid"] == "test_suite.py::test_speed"
    assert speed["duration"] >= 0
    assert (broken["value"], broken["outcome"]) == (None, "failed")
    assert "returned nan" in broken["error"]

    tests = {t["nodeid"].split("::")[1]: t for t in data["tests"]}
    outcomes = {name: t["outcome"] for name, t in tests.items()}
    assert outcomes == {
        "test_pass": "passed",
        "test_fail": "failed",
        "test_skip": "skipped",
        "test_setup_error": "error",
        "test_teardown_error": "error",
        "test_xfail": "xfailed",
        "test_speed": "passed",
        "test_broken_metric": "failed",
    }
    assert {name for name, t in tests.items() if t["metric"]} == {
        "test_speed",
        "test_broken_metric",
    }
    assert tests["test_pass"]["message"] is None
    assert "guard broke" in tests["test_fail"]["message"]
    assert "RuntimeError: setup boom" in tests["test_setup_error"]["message"]
    assert "RuntimeError: teardown boom" in tests["test_teardown_error"]["message"]
    assert "not today" in tests["test_skip"]["message"]
    assert len(tests["test_fail"]["message"]) <= 1000


def test_json_records_the_git_commit(pytester: pytest.Pytester) -> None:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=pytester.path, check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q", "-b", "trunk")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "T")
    pytester.makepyfile(
        "from pytest_autoresearch import metric\n\n"
        "@metric(goal='min')\ndef test_x():\n    return 1.0\n"
    )
    git("add", "-A")
    git("commit", "-q", "-m", "init")
    pytester.runpytest("--metrics-json", "m.json", "-p", "no:cacheprovider")
    commit = json.loads((pytester.path / "m.json").read_text())["commit"]
    assert commit == {"id": git("rev-parse", "HEAD"), "branch": "trunk", "dirty": False}

    test_file = pytester.path / "test_json_records_the_git_commit.py"
    test_file.write_text(test_file.read_text() + "\n# edited\n", encoding="utf-8")
    pytester.runpytest("--metrics-json", "m.json", "-p", "no:cacheprovider")
    assert json.loads((pytester.path / "m.json").read_text())["commit"]["dirty"] is True


def test_json_replaces_an_old_file_atomically(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "from pytest_autoresearch import metric\n\n"
        "@metric(goal='max')\ndef test_x():\n    return 2\n"
    )
    out = pytester.path / "out"
    out.mkdir()
    (out / "m.json").write_text("{ half a file", encoding="utf-8")
    pytester.runpytest("--metrics-json", "out/m.json").assert_outcomes(passed=1)
    assert metrics_json.read(out / "m.json")["metrics"][0]["value"] == 2.0
    assert sorted(p.name for p in out.iterdir()) == ["m.json"]  # no temp file left behind


def test_json_write_failure_is_reported_and_fails_the_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    (pytester.path / "afile").write_text("", encoding="utf-8")
    result = pytester.runpytest("--metrics-json", "afile/m.json")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["could not write */afile/m.json: File exists"])


def test_read_rejects_what_it_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(metrics_json.MetricsJSONError, match="no such file"):
        metrics_json.read(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "metrics": [', encoding="utf-8")
    with pytest.raises(metrics_json.MetricsJSONError, match=r"not valid JSON \(line 1"):
        metrics_json.read(bad)
    bad.write_text('{"version": 99, "metrics": []}', encoding="utf-8")
    with pytest.raises(metrics_json.MetricsJSONError, match="version 99, .* reads version 1"):
        metrics_json.read(bad)
    bad.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(metrics_json.MetricsJSONError, match="not a pytest-autoresearch"):
        metrics_json.read(bad)


def test_metric_values_are_junitxml_properties(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_autoresearch import metric

        @metric(goal={"val_bpb": "min", "mfu": "max"})
        def test_train(record_property):
            record_property("seed", 7)   # the user's own properties stay
            return {"val_bpb": 1.02, "mfu": 0.38}

        def test_plain():
            pass
        """
    )
    pytester.runpytest("--junitxml", "junit.xml").assert_outcomes(passed=2)
    root = ET.parse(pytester.path / "junit.xml").getroot()
    cases = {case.get("name"): case for case in root.iter("testcase")}
    props = {p.get("name"): p.get("value") for p in cases["test_train"].iter("property")}
    assert props == {"seed": "7", "metric:val_bpb": "1.02", "metric:mfu": "0.38"}
    assert list(cases["test_plain"].iter("property")) == []


def test_help_lists_the_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "autoresearch (metric tests and the research loop):",
            "*--metrics-json=PATH *write every metric and test outcome, the machine and the",
            "*--metrics-save=NAME *save this run's metrics as baseline NAME in",
            "*--metrics-compare=NAME",
            "*compare metrics with saved baseline NAME*",
            "*--metrics-fail=PCT *with --metrics-compare: fail the session when any metric",
            "*got more than PCT percent worse in its own direction*",
        ]
    )
    result.stdout.fnmatch_lines(["*metrics_json (string):*", "*default for --metrics-json*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metrics-fail", "abc"], "expected a percentage such as 5 or 2.5%, got 'abc'"),
        (["--metrics-fail", "-3"], "must be 0% or more, got '-3'"),
        (["--metrics-json", "."], "'.' is a directory; give a file path such as"),
        (["--metrics-save", "../up"], "invalid baseline name '../up': use letters, digits"),
        (["--metrics-compare", "a/b"], "invalid baseline name 'a/b'"),
        (["--metrics-fail", "5"], "--metrics-fail needs a baseline to compare with"),
        (["--autoresearch", "--metrics-json", "x.json"], "--metrics-json apply to ordinary"),
    ],
)
def test_bad_options_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()
    assert not (pytester.path / ".autoresearch").exists()  # nothing written


def test_ini_keys_mirror_the_options(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(
        """
        [tool.pytest.ini_options]
        metrics_json = "reports/m.json"
        metrics_save = "nightly"
        metrics_fail = 5
        """
    )
    pytester.makepyfile(
        "from pytest_autoresearch import metric\n\n"
        "@metric(goal='min')\ndef test_x():\n    return 3\n"
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    # metrics_fail without a baseline to compare with is ignored when it comes from the ini.
    assert result.ret == 0
    assert (
        json.loads((pytester.path / "reports" / "m.json").read_text())["metrics"][0]["value"] == 3
    )
    assert (pytester.path / ".autoresearch" / "baselines" / "nightly.json").exists()
    # The command line wins over the ini.
    pytester.runpytest("--metrics-json", "cli.json").assert_outcomes(passed=1)
    assert (pytester.path / "cli.json").exists()


def test_bad_ini_value_names_the_key(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmetrics_fail = lots\nmetrics_compare = x\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*ini key metrics_fail = 'lots': expected a percentage such as 5 or 2.5%, got 'lots'*"]
    )
