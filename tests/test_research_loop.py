"""End to end: the research loop on a real git repo with real pytest subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from toyproject import default_sigint, git, make_toy, model_source, read_jsonl, read_tsv, step

pytestmark = pytest.mark.slow

RECORD = Path(".autoresearch") / "t1"
SLOW_WHILE_FLAG = "import os, time\nif os.path.exists('slow.flag'):\n    time.sleep(30)\n"


def run_loop(pytester: pytest.Pytester, n: int, *extra: str, proposer: str = "scripted"):
    return pytester.runpytest_subprocess(
        "--autoresearch",
        "-n",
        str(n),
        "--autoresearch-tag",
        "t1",
        "--autoresearch-proposer",
        proposer,
        "-p",
        "no:randomly",
        *extra,
        timeout=240,
    )


LOOP_ARGS = [
    "--autoresearch",
    "-n",
    "3",
    "--autoresearch-tag",
    "t1",
    "--autoresearch-proposer",
    "scripted",
]


def wait_for_experiment(root: Path, proc: subprocess.Popen, index: int) -> Path:
    """Wait until experiment ``index`` of the run in ``proc`` is under way; the journal's path."""
    jsonl = root / RECORD / "experiments.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if jsonl.exists() and any(
            e["event"] == "start" and e["index"] == index for e in read_jsonl(jsonl)
        ):
            time.sleep(1.5)  # well inside the experiment's evaluation
            return jsonl
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"experiment {index} never started")


def experiments(root: Path) -> list[dict]:
    return [
        e for e in read_jsonl(root / RECORD / "experiments.jsonl") if e["event"] == "experiment"
    ]


def test_keeps_improvements_and_discards_the_rest(pytester: pytest.Pytester) -> None:
    root = make_toy(
        pytester.path,
        [
            step("move X to 5", 5.0),  # loss 7 -> 2: keep
            step("move X to 20", 20.0),  # worse: discard
            step("move X to 3", 3.0),  # loss 0: keep
        ],
    )
    user_head = git(root, "rev-parse", "main")
    result = run_loop(pytester, 3)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["*proposer: scripted*", "*[[]1/3[]] keep*move X to 5*", "*discard*move X to 20*"]
    )
    rows = read_tsv(root / RECORD / "results.tsv")
    assert rows[0][:4] == ["commit", "loss", "status", "description"]
    assert [r[2] for r in rows[1:]] == ["keep", "discard", "keep"]
    assert float(rows[3][1]) == 0.0
    # The user's branch is untouched and checked out again; the research branch has 2 commits.
    assert git(root, "rev-parse", "main") == user_head
    assert git(root, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(root, "status", "--porcelain", "--untracked-files=no") == ""
    log = git(root, "log", "--format=%s", "main..autoresearch/t1").splitlines()
    assert log == ["move X to 3", "move X to 5"]
    assert "X = 3.0" in git(root, "show", "autoresearch/t1:toy/model.py")
    # The record and the report are complete.
    recs = experiments(root)
    assert [r["index"] for r in recs] == [1, 2, 3]
    assert recs[0]["best_before"] == 7.0 and recs[0]["best_after"] == 2.0
    assert "-X = 10.0" in recs[0]["diff"] and "+X = 5.0" in recs[0]["diff"]
    assert (root / RECORD / "report.md").read_text().count("move X to") >= 3


def test_out_of_scope_crash_hang_and_nan_are_outcomes(pytester: pytest.Pytester) -> None:
    root = make_toy(
        pytester.path,
        [
            step("edit the test", files={"tests/test_metric.py": "def test_loss():\n    pass\n"}),
            step("crash", 4.0, extra='raise RuntimeError("boom in the candidate")\n'),
            step("hang", 4.0, extra="import time\ntime.sleep(120)\n"),
            step("nan", float("nan")),
            step("move X to 4", 4.0),
        ],
        timeout=15,
    )
    result = run_loop(pytester, 5, "--autoresearch-repair-attempts", "0")
    assert result.ret == 0, result.stdout.str()
    recs = experiments(root)
    assert [r["status"] for r in recs] == ["rejected", "crash", "crash", "crash", "keep"]
    assert "tests/test_metric.py" in recs[0]["reason"]
    assert "boom in the candidate" in (recs[1]["reason"] + recs[1]["log_tail"])
    assert "timed out" in recs[2]["reason"]
    assert recs[2]["durations"]["total"] < 15 + 30  # the timeout, plus kill grace and git
    assert "nan" in recs[3]["reason"].lower()
    # Nothing leaked into the research branch and the test file is intact.
    assert git(root, "log", "--format=%s", "main..autoresearch/t1").splitlines() == ["move X to 4"]
    assert "pass" not in (root / "tests" / "test_metric.py").read_text()


def test_a_crash_is_repaired_within_the_experiment(pytester: pytest.Pytester) -> None:
    broken = step("move X to 4", 4.0, extra="raise ValueError('typo')\n")
    broken["repair"] = {"toy/model.py": model_source(4.0)}
    root = make_toy(pytester.path, [broken])
    result = run_loop(pytester, 1)
    assert result.ret == 0, result.stdout.str()
    (rec,) = experiments(root)
    assert rec["status"] == "keep"
    assert rec["attempts"][0]["status"] == "crash" and "typo" in rec["attempts"][0]["log_tail"]


def test_refuses_a_dirty_tree_and_changes_nothing(pytester: pytest.Pytester) -> None:
    root = make_toy(pytester.path, [step("x", 4.0)])
    (root / "toy" / "model.py").write_text(model_source(7.0))
    result = run_loop(pytester, 1)
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*uncommitted*"]) if result.stderr.lines else None
    out = result.stdout.str() + result.stderr.str()
    assert "commit" in out.lower() and "stash" in out.lower()
    assert (root / "toy" / "model.py").read_text() == model_source(7.0)
    assert "autoresearch/t1" not in git(root, "branch", "--list")


def test_missing_objective_metric_stops_before_anything_changes(pytester: pytest.Pytester) -> None:
    root = make_toy(pytester.path, [step("x", 4.0)])
    program = (root / "program.md").read_text().replace("objective: loss", "objective: lossy")
    (root / "program.md").write_text(program)
    git(root, "commit", "-qam", "typo in objective")
    result = run_loop(pytester, 1)
    assert result.ret != 0
    out = result.stdout.str() + result.stderr.str()
    assert "lossy" in out and "loss" in out
    assert git(root, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(root, "status", "--porcelain", "--untracked-files=no") == ""


def test_resumes_after_kill_9_without_losing_or_duplicating(pytester: pytest.Pytester) -> None:
    root = make_toy(
        pytester.path,
        [
            step("move X to 5", 5.0),
            step("slow", 4.0, extra=SLOW_WHILE_FLAG),
            step("move X to 4", 4.0),
        ],
        timeout=60,
    )
    (root / "slow.flag").write_text("")
    cmd = [sys.executable, "-m", "pytest", *LOOP_ARGS]
    proc = subprocess.Popen(
        cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    jsonl = wait_for_experiment(root, proc, 2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [r["index"] for r in experiments(root)] == [1]
    (root / "slow.flag").unlink()  # the rerun of experiment 2 is quick
    result = run_loop(pytester, 3)
    assert result.ret == 0, result.stdout.str()
    recs = experiments(root)
    assert [r["index"] for r in recs] == [1, 2, 3]
    events = [e["event"] for e in read_jsonl(jsonl)]
    assert "interrupted" in events and events.count("baseline") == 1
    assert len(read_tsv(root / RECORD / "results.tsv")) == 1 + 3
    assert git(root, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(root, "status", "--porcelain", "--untracked-files=no") == ""


def test_ctrl_c_restores_the_tree_and_completes_the_record(pytester: pytest.Pytester) -> None:
    root = make_toy(
        pytester.path,
        [step("move X to 5", 5.0), step("slow", 4.0, extra=SLOW_WHILE_FLAG)],
        timeout=60,
    )
    (root / "slow.flag").write_text("")
    cmd = [sys.executable, "-m", "pytest", *LOOP_ARGS]
    proc = subprocess.Popen(
        cmd,
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint,  # Ctrl-C reaches it even when the suite runs in the background
    )
    jsonl = wait_for_experiment(root, proc, 2)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "autoresearch summary" in out and "interrupted (Ctrl-C)" in out
    events = read_jsonl(jsonl)
    assert [e["index"] for e in events if e["event"] == "experiment"] == [1]
    assert events[-1]["event"] == "end" and "interrupted" in events[-1]["reason"]
    assert git(root, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(root, "status", "--porcelain", "--untracked-files=no") == ""
    assert (root / RECORD / "report.md").exists()
    assert "X = 5.0" in git(root, "show", "autoresearch/t1:toy/model.py")


def test_time_budget_stops_before_an_experiment_that_would_not_fit(
    pytester: pytest.Pytester,
) -> None:
    slow = "import time\ntime.sleep(4)\n"
    root = make_toy(
        pytester.path,
        [step("move X to 5", 5.0, extra=slow), step("move X to 4", 4.0, extra=slow)],
        timeout=30,
    )
    # Ten experiments of 8 s and more (two runs of a deterministic keep) cannot fit in 20 s:
    # the run stops on its own, before an experiment that would overrun, and exits 0.
    result = run_loop(pytester, 10, "--autoresearch-time-budget", "20s")
    out = result.stdout.str()
    assert result.ret == 0, out
    recs = experiments(root)
    assert len(recs) < 3
    end = read_jsonl(root / RECORD / "experiments.jsonl")[-1]
    assert end["event"] == "end" and end["reason"].startswith("time budget"), end
    assert "autoresearch summary" in out and "time budget" in out
    assert git(root, "rev-parse", "--abbrev-ref", "HEAD") == "main"
