"""record_artifact: a test's text artifacts in the metrics JSON, bounded; the loop's side
(the channel bounds and scrubs them again); the notebook section; the check's verdict; the
notebook budget and the check keys in program.md."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_autoresearch.metrics import artifacts
from pytest_autoresearch.proposers import prompt
from pytest_autoresearch.proposers.base import PastExperiment
from pytest_autoresearch.research import checks
from pytest_autoresearch.sandbox.channel import ARTIFACT_CHARS, artifacts_of
from pytest_autoresearch.sandbox.evaluate import TestResult

try:
    from llm_server import make_ctx, make_project
except ImportError:  # tests/ became a package
    from tests.llm_server import make_ctx, make_project

SUITE = """
import pytest
from pytest_autoresearch import metric


@metric(goal="min")
def test_loss(record_artifact):
    log = "\\n".join(f"step {i} loss {1 / (i + 1):.5f}" for i in range(5000))
    record_artifact("train_log", log)
    record_artifact("curve", "0.9 0.5 0.3")
    record_artifact("curve", "0.9 0.5 0.2")  # the same name again replaces it
    return 0.2


def test_guard(record_artifact):
    record_artifact("notes", b"bytes are decoded")
    assert False, "guard broke"


def test_bad_name(record_artifact):
    record_artifact("two\\nlines", "x")


def test_not_text(record_artifact):
    record_artifact("curve", [0.9, 0.5])


def test_too_many(record_artifact):
    for i in range(5):
        record_artifact(f"a{i}", "x")
"""


def test_artifacts_reach_the_metrics_json_bounded_with_clear_errors(pytester):
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("-p", "no:randomly", "--metrics-json", "m.json")
    result.assert_outcomes(passed=1, failed=4)
    result.stdout.fnmatch_lines(
        [
            "*record_artifact(name, text): the name must be a short one-line string*",
            "*record_artifact('curve', text): text must be a str, got a list; format it first*",
            "*this test already attached 4 artifacts (a0, a1, a2, a3); join them*",
        ]
    )
    data = json.loads((pytester.path / "m.json").read_text())
    found = {(a["nodeid"].split("::")[1], a["name"]): a for a in data["artifacts"]}
    assert set(found) == {
        ("test_loss", "train_log"), ("test_loss", "curve"), ("test_guard", "notes"),
        ("test_too_many", "a0"), ("test_too_many", "a1"), ("test_too_many", "a2"),
        ("test_too_many", "a3"),
    }  # fmt: skip
    log = found[("test_loss", "train_log")]
    assert len(log["text"]) <= artifacts.MAX_CHARS and log["cut"] > 50_000
    assert log["text"].startswith("step ") and log["text"].endswith("step 4999 loss 0.00020")
    assert found[("test_loss", "curve")]["text"] == "0.9 0.5 0.2"
    assert found[("test_guard", "notes")]["text"] == "bytes are decoded"  # failed test too
    assert [m["name"] for m in data["metrics"]] == ["loss"]  # an artifact is no metric


def test_an_artifact_asked_for_late_in_a_suite_without_metrics_is_kept(pytester):
    pytester.makepyfile(
        test_plain="""
        def test_plain(request):
            request.getfixturevalue("record_artifact")("log", "late but kept")
        """
    )
    pytester.runpytest("-p", "no:randomly", "--metrics-json", "m.json").assert_outcomes(passed=1)
    data = json.loads((pytester.path / "m.json").read_text())
    assert [(a["name"], a["text"]) for a in data["artifacts"]] == [("log", "late but kept")]


def test_the_loop_bounds_and_scrubs_what_the_worker_sent():
    key = "sk-ant-api03-" + "K" * 30
    data = {
        "artifacts": [
            {"name": "log", "nodeid": "t.py::a", "text": "x" * 20_000 + f"\nkey {key}", "cut": 5},
            {"name": "env", "nodeid": "t.py::b", "text": "token=hunter2hunter2"},
            "junk",
            {"name": "no text", "text": 3},
            *({"name": f"n{i}", "text": "y"} for i in range(10)),
        ]
    }
    got = artifacts_of(data, ["hunter2hunter2"])
    assert [a["name"] for a in got] == ["log", "env", "n0", "n1"]  # at most 4, junk skipped
    log = got[0]
    assert log["cut"] == 5 + len("x" * 20_000 + "\nkey " + key) - ARTIFACT_CHARS
    assert len(log["text"]) <= ARTIFACT_CHARS
    assert key not in log["text"] and log["text"].endswith("key [REDACTED]")
    assert "hunter2" not in got[1]["text"] and got[1]["test"] == "t.py::b"
    assert artifacts_of({"metrics": []}) == [] and artifacts_of(None) == []


def exp(i: int, status: str, arts: list[dict]) -> PastExperiment:
    return PastExperiment(i, f"idea {i}", status, 0.5, 0.0, "why", artifacts=tuple(arts))


def test_the_notebook_shows_the_newest_artifacts_and_names_what_does_not_fit(tmp_path):
    root = make_project(tmp_path / "proj")
    log = "\n".join(f"step {i} loss {i}" for i in range(100))
    history = [
        exp(1, "keep", [{"name": "train_log", "test": "t.py::a", "text": "old run", "cut": 0}]),
        exp(2, "discard", [{"name": "train_log", "test": "t.py::a", "text": log, "cut": 0}]),
        exp(3, "crash", [{"name": "curve", "test": "", "text": "z" * 900 + "\nend", "cut": 10}]),
        exp(4, "discard", [{"name": "train_log", "test": "t.py::a", "text": log, "cut": 0}]),
    ]
    state = prompt.state_message(make_ctx(root, history=history, experiment=5))
    assert "## Training signals of recent experiments (their tests' artifacts)" in state
    # The three newest with artifacts, oldest first; each its last 30 lines.
    assert "old run" not in state
    assert state.index("### #2 discard: train_log") < state.index("### #4 discard: train_log")
    assert "### #2 discard: train_log (from t.py::a) -- its last 30 lines" in state
    assert "step 99 loss 99" in state and "step 69 loss" not in state
    assert "### #3 crash: curve -- its last 2 lines" in state and "z" * 300 + "..." in state
    # A small budget: the newest first, what does not fit is named, never dropped silently.
    small = prompt.state_message(make_ctx(root, history=history, experiment=5), 2400)
    assert "### #4 discard: train_log" in small and "### #2 discard" not in small
    assert "#2 train_log not shown to save space; the record holds them" in small


def test_the_baselines_artifacts_stand_in_until_experiments_have_their_own(tmp_path):
    root = make_project(tmp_path / "proj")
    base = ({"name": "train_log", "test": "t.py::a", "text": "step 9 loss 4.2", "cut": 0},)
    first = dataclasses.replace(make_ctx(root, history=[], experiment=1), baseline_artifacts=base)
    state = prompt.state_message(first)
    assert "### baseline (the code as it was): train_log (from t.py::a)" in state
    assert "step 9 loss 4.2" in state
    # Three experiments with training signals of their own: the baseline's make way.
    history = [
        exp(i, "discard", [{"name": "train_log", "test": "t.py::a", "text": f"run {i}"}])
        for i in (1, 2, 3)
    ]
    later = dataclasses.replace(
        make_ctx(root, history=history, experiment=4), baseline_artifacts=base
    )
    state = prompt.state_message(later)
    assert "### #1 discard: train_log" in state and "step 9 loss 4.2" not in state


def _ev(status="ok", returncode=0, tests=(), tail="", reason=""):
    return SimpleNamespace(
        status=status, returncode=returncode, tests=list(tests), log_tail=tail, reason=reason
    )


def test_the_check_verdict():
    ok = TestResult("t.py::a", "passed", 0.1, None)
    bad = TestResult("t.py::b", "failed", 0.1, "E   assert 200.0 < 100\nE    +  where 200.0 = X")
    worse = TestResult("t.py::c", "error", 0.1, "E   RuntimeError: boom")
    passed = checks.verdict(_ev(tests=[ok, ok], tail="2 passed"), 30, 1.25)
    assert passed.passed and passed.summary == "2 passed in 1.2s" and passed.output == "2 passed"
    failed = checks.verdict(_ev(returncode=1, tests=[ok, bad, worse]), 30, 1.0)
    assert not failed.passed
    assert failed.summary == "t.py::b failed: assert 200.0 < 100 (and 1 more failed)"
    collect = "E   ModuleNotFoundError: No module named 'torchh'\n1 error in 0.2s"
    broken = checks.verdict(_ev(returncode=2, tail=collect), 30, 1.0)
    assert (
        broken.summary == "pytest exited with code 2: ModuleNotFoundError: No module named 'torchh'"
    )
    assert checks.verdict(_ev(returncode=5), 30, 1.0).summary == "no tests were collected"
    slow = checks.verdict(_ev(status="timeout", returncode=-9, tail="x\n" * 100), 30, 30.0)
    assert slow.summary == "the tests took longer than the check's 30s limit"
    assert len(slow.output.splitlines()) == checks.OUTPUT_LINES
    # What runs, and for how long.
    program = SimpleNamespace(guards=("tests/g.py",), smoke=("tests/s.py", "tests/g.py"))
    assert checks.check_args(program) == ["tests/g.py", "tests/s.py"]
    assert checks.time_limit(SimpleNamespace(check_timeout=None), 600) == checks.CHECK_TIMEOUT
    assert checks.time_limit(SimpleNamespace(check_timeout=300), 40) == 40
    loop = SimpleNamespace(s=SimpleNamespace(check=None), program=program)
    assert checks.check_for(loop, {"index": 1}) is None  # no check offered by the session


PROGRAM = """---
editable: [train.py]
objective: loss
guards: [tests/test_metric.py]
{extra}
---
Tune LR.
"""


def _parse(root: Path, extra: str):
    from pytest_autoresearch.program.program_md import parse_program

    return parse_program(PROGRAM.format(extra=extra), root / "program.md", root)


def test_program_keys_for_the_llm_and_the_notebook_budget_order(tmp_path):
    from pytest_autoresearch.program.model import ProgramError
    from pytest_autoresearch.proposers.llm import LLMProposer

    root = make_project(tmp_path / "proj")
    program = _parse(root, "smoke: [tests/test_metric.py::test_loss]\ncheck_timeout: 45\n"
                           "notebook_tokens: 3000")  # fmt: skip
    assert program.smoke == ("tests/test_metric.py::test_loss",)
    assert program.check_timeout == 45.0 and program.notebook_tokens == 3000
    plain = _parse(root, "")
    assert (plain.smoke, plain.check_timeout, plain.notebook_tokens) == ((), None, None)
    for extra, says in [
        ("smoke: [tests/nope.py]", "the smoke test path 'tests/nope.py' does not exist"),
        ("smoke: [-x]", "smoke test '-x' is an option, not a test"),
        ("check_timeout: 0", "check_timeout must be a number of seconds > 0"),
        ("notebook_tokens: 10", "notebook_tokens must be a whole number >= 500"),
    ]:
        with pytest.raises(ProgramError, match=says):
            _parse(root, extra)
    # The option (command line or ini) wins, then program.md, then the default.
    ctx = make_ctx(root)
    ctx.program = program
    assert LLMProposer(model="m", history_tokens=5000)._budget(ctx) == 5000
    assert LLMProposer(model="m")._budget(ctx) == 3000
    ctx.program = plain
    assert LLMProposer(model="m")._budget(ctx) == prompt.HISTORY_TOKENS
