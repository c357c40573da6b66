"""End to end: what the LLM researcher sees and keeps, and an API that fails safely.

One toy run through the real loop (`pytest --autoresearch` subprocesses on a real git repo)
with the real anthropic SDK streaming from the loopback server, killed with SIGKILL in
experiment 3 and resumed. It shows, in order: a stream cut in the middle is retried; the
model views a `context:` file; NOTES.md written in experiment 1 reaches the prompt of
experiment 3, before and after the kill; a later prompt holds the diff of an earlier keep
and the log tail of an earlier crash; twenty 529s in a row cost no experiment of `-n`; a
`create` cut at max_tokens is never written.
"""

from __future__ import annotations

import json
import signal

import pytest

try:
    from llm_server import Cut, api_error, edit, message, result_text, text, tool_results
    from test_llm_loop import RECORD, assert_key_nowhere, experiments, run_loop, server, set_x
    from toyproject import git, make_toy, read_jsonl
except ImportError:  # tests/ became a package
    from tests.llm_server import Cut, api_error, edit, message, result_text, text, tool_results
    from tests.test_llm_loop import (
        RECORD,
        assert_key_nowhere,
        experiments,
        run_loop,
        server,
        set_x,
    )
    from tests.toyproject import git, make_toy, read_jsonl

from pytest_autoresearch.research.faults import FAULT_ENV

pytestmark = pytest.mark.slow
__all__ = ["server"]  # the fixture, shared with test_llm_loop

CONTEXT_PROGRAM = """\
---
editable: ["toy/model.py"]
objective: loss
guards: ["tests/test_guard.py"]
context: ["tests/test_metric.py"]
timeout: 20
baseline_runs: 2
---
# What to try
Move X toward the value that minimises the loss; `tests/test_metric.py` says how.
"""


def prompt_of(server, experiment: int) -> list[str]:
    """The first user message of every exchange of ``experiment`` (one per attempt)."""
    found = []
    for req in server.posts():
        first = req.body["messages"][0]["content"][0].get("text", "")
        if first.startswith(f"Experiment {experiment} of ") and len(req.body["messages"]) == 1:
            found.append(first)
    return found


def test_notes_context_diffs_logs_survive_a_kill_and_an_overload(pytester, server, monkeypatch):
    root = make_toy(pytester.path, [])
    (root / "program.md").write_text(CONTEXT_PROGRAM)
    git(root, "commit", "-qam", "context")
    notes = "X = 5 was better than 10; try 3 next.\n"
    server.add(
        # Experiment 1: the first stream is cut in the middle, then sent again.
        Cut(message(edit("view", "tests/test_metric.py")), events=2),
        message(edit("view", "tests/test_metric.py")),
        message(edit("create", "NOTES.md", file_text=notes), set_x("10.0", "5.0")),
        message(text("Description: move X to 5")),
        # Experiment 2: a crash (no repair asked for: --autoresearch-repair-attempts 0).
        message(set_x("5.0", "1 / 0")),
        message(text("Description: divide by zero")),
        # Experiment 3: proposed, then the run is killed (SIGKILL) after the proposal.
        message(set_x("5.0", "4.0")),
        message(text("Description: move X to 4")),
    )
    monkeypatch.setenv(FAULT_ENV, "after-proposal:3")
    killed = run_loop(pytester, 3, "--autoresearch-repair-attempts", "0")
    out = killed.stdout.str() + killed.stderr.str()
    assert killed.ret == -signal.SIGKILL, out
    assert [r["status"] for r in experiments(root)] == ["keep", "crash"]

    # The cut stream was sent again: the same request twice, then the exchange went on.
    posts = server.posts()
    assert posts[0].body == posts[1].body and posts[0].body["stream"] is True
    # The model viewed the context file (read-only) and got its text.
    (viewed,) = tool_results(posts[2])
    assert not viewed.get("is_error") and "abs(model.X - 3.0)" in result_text(viewed)
    # NOTES.md lives in the record, never in the checkout or on the branch.
    assert (root / RECORD / "NOTES.md").read_text() == notes
    assert not (root / "NOTES.md").exists()
    # Experiment 3's prompt: the notes, experiment 1's kept diff, experiment 2's crash log.
    (before,) = prompt_of(server, 3)
    assert notes.strip() in before
    assert "### #1 kept: move X to 5" in before and "+X = 5.0" in before
    assert "### #2 crash: divide by zero" in before and "ZeroDivisionError" in before

    # Resume: twenty 529s in a row, then a create cut at max_tokens, then a real edit.
    monkeypatch.delenv(FAULT_ENV)
    server.add(
        *[api_error(529, "overloaded_error", "Overloaded") for _ in range(20)],
        message(
            edit("create", "toy/model.py", file_text="# half a file\nX = 3"),
            stop_reason="max_tokens",
        ),
        message(set_x("5.0", "3.0")),
        message(text("Description: move X to 3")),
    )
    resumed = run_loop(pytester, 3, "--autoresearch-repair-attempts", "0")
    out = resumed.stdout.str() + resumed.stderr.str()
    assert resumed.ret == 0, out
    recs = experiments(root)
    # The overload cost no experiment: 3 of -n 3, none an error.
    assert [r["status"] for r in recs] == ["keep", "crash", "keep"], out
    assert out.count("proposer unavailable (the Anthropic API kept answering overloaded") == 4
    assert "proposer available again after 4 failure(s)" in out
    starts = [e for e in read_jsonl(root / RECORD / "experiments.jsonl") if e["event"] == "start"]
    assert [e["index"] for e in starts].count(3) == 2  # the killed run's and the resumed one's
    # After the kill, experiment 3 was told its notes again.
    after = prompt_of(server, 3)[-1]
    assert notes.strip() in after and "ZeroDivisionError" in after
    # The truncated create was answered with an error and never written.
    cut_answer = next(
        b
        for r in server.posts()
        for b in tool_results(r)
        if "cut off at the output token limit" in result_text(b)
    )
    assert cut_answer["is_error"] is True
    assert "half a file" not in recs[2]["diff"] and "+X = 3.0" in recs[2]["diff"]
    # report.md carries the notes.
    report = (root / RECORD / "report.md").read_text()
    assert "## The model's notes (NOTES.md)" in report and notes.strip() in report
    assert json.dumps(recs)  # records stay JSON
    assert_key_nowhere(root, out)
