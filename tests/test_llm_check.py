"""End to end: the check tool and a test's training log, through the real loop.

One toy run (`pytest --autoresearch` on a real git repo) with the real anthropic SDK
streaming from the loopback server. In experiment 1 the model breaks the guard and calls
`check`: the guard's failure comes back before any evaluation, the smoke test's writes are
gone and the proposal is back in the checkout; fixed, the next check passes and the change
is kept. The metric test attaches its training log with `record_artifact`: the record
keeps its bounded, scrubbed tail, and experiment 2's prompt shows it.
"""

from __future__ import annotations

import itertools
import json

import pytest

try:
    from llm_server import message, result_text, text, tool_results
    from test_llm_loop import RECORD, assert_key_nowhere, experiments, run_loop, server, set_x
    from test_llm_notebook import prompt_of
    from toyproject import git, make_toy, read_jsonl
except ImportError:  # tests/ became a package
    from tests.llm_server import message, result_text, text, tool_results
    from tests.test_llm_loop import (
        RECORD,
        assert_key_nowhere,
        experiments,
        run_loop,
        server,
        set_x,
    )
    from tests.test_llm_notebook import prompt_of
    from tests.toyproject import git, make_toy, read_jsonl

pytestmark = pytest.mark.slow
__all__ = ["server"]  # the fixture, shared with test_llm_loop

PROGRAM = """\
---
editable: ["toy/model.py"]
objective: loss
guards: ["tests/test_guard.py"]
smoke: ["tests/test_smoke.py"]
check_timeout: 30
timeout: 20
baseline_runs: 2
---
# What to try
Move X toward the value that minimises the loss.
"""

# The metric test attaches a long training log: 4,000 lines, a key-shaped string at the end.
METRIC_TEST = """
from pytest_autoresearch import metric

import toy.model as model

LEAK = "sk-ant-api03-" + "Q" * 30


@metric(goal="min")
def test_loss(record_artifact):
    loss = abs(model.X - 3.0)
    lines = [f"step {i:4d} loss {loss + 1.0 / (i + 1):.4f}" for i in range(4000)]
    record_artifact("train_log", "\\n".join(lines) + f"\\ndone, token {LEAK}\\n")
    return loss
"""

# Run by the check only: it writes into the checkout, which the check must undo.
SMOKE_TEST = """
from pathlib import Path

import toy.model as model


def test_model_imports():
    Path("smoke_out.txt").write_text("written by the smoke test")
    assert isinstance(model.X, float)
"""

_ids = itertools.count(1)


def check_call() -> dict:
    return {"type": "tool_use", "id": f"toolu_check_{next(_ids)}", "name": "check", "input": {}}


def test_check_reports_a_failing_guard_before_any_evaluation(pytester, server):
    root = make_toy(pytester.path, [])
    (root / "program.md").write_text(PROGRAM)
    (root / "tests" / "test_metric.py").write_text(METRIC_TEST)
    (root / "tests" / "test_smoke.py").write_text(SMOKE_TEST)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "check and artifacts")
    seen: list[dict] = []

    def observe(answer):
        def respond(req):
            (result,) = tool_results(req)[-1:]
            seen.append(
                {
                    "result": result_text(result),
                    "is_error": result.get("is_error", False),
                    "smoke_out": (root / "smoke_out.txt").exists(),
                    "model": (root / "toy" / "model.py").read_text(),
                }
            )
            return answer

        return respond

    server.add(
        # Experiment 1: a change that breaks the guard (X < 100), checked at once.
        message(set_x("10.0", "200.0"), check_call()),
        observe(message(set_x("200.0", "3.0"), check_call())),
        observe(message(text("The guard wants X < 100.\nDescription: move X to 3"))),
        # Experiment 2: worse, discarded; its prompt shows experiment 1's training log.
        message(set_x("3.0", "4.0")),
        message(text("Description: move X to 4")),
    )
    result = run_loop(pytester, 2, "--autoresearch-repair-attempts", "0")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == 0, out
    recs = experiments(root)
    assert [r["status"] for r in recs] == ["keep", "discard"], out

    # The check tool was offered with the editor, and the rules say what it is for.
    first = server.posts()[0].body
    assert [t["name"] for t in first["tools"]] == ["str_replace_based_edit_tool", "check"]
    assert "The check tool:" in first["system"][0]["text"]
    # The first check failed on the guard, with its output, before any evaluation ran.
    failed, passed = seen
    assert failed["result"].startswith("check FAILED: tests/test_guard.py::test_x_is_sane failed")
    assert "assert 200.0 < 100" in failed["result"] and not failed["is_error"]
    assert "[1] check: FAILED, tests/test_guard.py::test_x_is_sane failed" in out
    # It wrote nothing to the checkout: the smoke test's file is gone, the proposal is back.
    assert not failed["smoke_out"] and "X = 200.0" in failed["model"]
    assert passed["result"].startswith("check passed: 2 passed in ")
    assert not passed["smoke_out"] and "X = 3.0" in passed["model"]
    # Counted in the record and the report; the check is not an evaluation.
    assert recs[0]["checks"]["calls"] == 2 and recs[0]["checks"]["passed"] == 1
    assert recs[0]["checks"]["seconds"] > 0
    assert [e["confirm"] for e in recs[0]["evaluations"]] == [False, True]  # no check among them
    report = (root / RECORD / "report.md").read_text()
    assert "checks before evaluation: 2 in 1 experiment(s), 1 passed, 1 failed" in report
    best = report.split("## Training signals of the best (experiment 1)")[1]
    assert "train_log from `tests/test_metric.py::test_loss`, its last 40 lines:" in best
    assert "step 3999 loss" in best and "step 3959 loss" not in best

    # The training log: the tail of it, the cut counted, the key-shaped string scrubbed.
    (log,) = recs[0]["artifacts"]
    assert log["name"] == "train_log" and log["test"] == "tests/test_metric.py::test_loss"
    assert len(log["text"]) <= 8000 and log["cut"] > 60_000
    assert "step 3999 loss 0.000" in log["text"] and "step    0 loss" not in log["text"]
    assert "sk-ant-api03-QQQQ" not in json.dumps(recs) and "[REDACTED]" in log["text"]
    # Experiment 1's prompt shows the baseline's log (journaled with the baseline, resumable);
    # experiment 2's shows experiment 1's as well, newest last.
    (base,) = [
        e for e in read_jsonl(root / RECORD / "experiments.jsonl") if e["event"] == "baseline"
    ]
    assert [a["name"] for a in base["artifacts"]] == ["train_log"]
    (state,) = prompt_of(server, 1)
    assert (
        "### baseline (the code as it was): train_log (from tests/test_metric.py::test_loss)"
        in state
    )
    assert "step 3999 loss 7.0003" in state and "[REDACTED]" in state and "QQQQ" not in state
    (state,) = prompt_of(server, 2)
    assert state.index("### baseline (the code") < state.index("### #1 keep: train_log")
    assert "## Training signals of recent experiments (their tests' artifacts)" in state
    assert "### #1 keep: train_log (from tests/test_metric.py::test_loss) -- its last" in state
    assert "step 3999 loss 0.000" in state and "step 3900 loss" not in state
    assert_key_nowhere(root, out)


def test_with_worktree_workers_the_check_may_write_where_it_runs(tmp_path):
    """Worktree workers' evaluations see the user's checkout read-only (they run in their
    own); the check runs in that checkout, so it gets a launcher that lets a test write
    where it runs, as an evaluation's test may, sharing the evaluations' cache guard."""
    from pytest_autoresearch.program.options import ExecutorSettings
    from pytest_autoresearch.program.program_md import load_program
    from pytest_autoresearch.research.session import Plan, _check_launcher
    from pytest_autoresearch.sandbox.evaluate import evaluate
    from pytest_autoresearch.sandbox.isolation import NamespaceLauncher, for_research

    root = make_toy(tmp_path / "toy", [])
    (root / "program.md").write_text(PROGRAM)
    (root / "tests" / "test_smoke.py").write_text(SMOKE_TEST)
    record = root / ".autoresearch" / "t1"
    program = load_program(root / "program.md", root)
    two = ExecutorSettings(workers=2, ray=None, gpus_per_worker=1, workers_from="default")
    plan = Plan(root, program, [], "t1", record, 1, None, "x", two, None)
    theirs = for_research(root, record, checkout_readonly=True)
    mine = _check_launcher(plan, theirs)
    smoke = ["tests/test_smoke.py"]
    if isinstance(theirs, NamespaceLauncher):  # where the system can make it read-only
        ev = evaluate(root, [], smoke, 60, launcher=theirs, tmp_root=tmp_path / "tmp")
        assert [t.outcome for t in ev.tests] == ["failed"], ev.log_tail
        assert "Read-only file system" in (ev.tests[0].message or "")
    ev = evaluate(root, [], smoke, 60, launcher=mine, tmp_root=tmp_path / "tmp")
    assert [t.outcome for t in ev.tests] == ["passed"] and ev.returncode == 0, ev.log_tail
    assert (root / "smoke_out.txt").exists()  # (the loop's check removes it afterwards)
    one = ExecutorSettings(workers=1, ray=None, gpus_per_worker=1, workers_from="default")
    single = Plan(root, program, [], "t1", record, 1, None, "x", one, None)
    assert _check_launcher(single, theirs) is theirs
