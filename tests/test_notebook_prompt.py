"""The lab notebook in the prompt, NOTES.md through the editor, what is said at the start."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pytest_autoresearch.proposers import prompt
from pytest_autoresearch.proposers.base import PastExperiment
from pytest_autoresearch.proposers.editor import NOTES_BYTES, FileEditor
from pytest_autoresearch.proposers.llm import LLMProposer, _context_matcher

try:
    from llm_server import make_ctx, make_program, make_project
except ImportError:  # tests/ became a package
    from tests.llm_server import make_ctx, make_program, make_project


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_project(tmp_path / "proj")


def exp(i: int, status: str, delta: float | None = None, **kw) -> PastExperiment:
    objective = None if status == "crash" else 0.5 - (delta or 0.0)
    kw.setdefault("metrics", {"loss": objective, "steps": 24.0, "tok_per_s": 1.5e5})
    return PastExperiment(i, f"idea {i}", status, objective, delta, "why", **kw)


def diff(old: str, new: str) -> str:
    return f"--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-LR = {old}\n+LR = {new}\n"


def test_the_notebook_shows_metrics_diffs_near_misses_and_crash_logs(root):
    history = [
        exp(1, "keep", 0.05, diff=diff("0.01", "0.02")),
        exp(2, "discard", -0.004, diff=diff("0.02", "0.021")),  # within the noise: near-miss
        exp(3, "discard", -0.5, diff=diff("0.02", "9")),  # far worse: no diff shown
        exp(4, "crash", log_tail="Traceback\n  File train.py\nZeroDivisionError: division by 0"),
    ]
    state = prompt.state_message(make_ctx(root, history=history, experiment=5))
    assert "Experiment 5 of 10. Phase: exploit (see Strategy)." in state
    assert "#1 keep +0.05 (= 0.45, steps 24, tok_per_s 150000): idea 1" in state
    assert "### #1 kept: idea 1" in state and "+LR = 0.02" in state
    assert "### #2 near-miss, discarded: idea 2" in state and "+LR = 0.021" in state
    assert "+LR = 9" not in state
    assert "## Recent failures (the end of their logs)" in state
    assert "### #4 crash: idea 4" in state and "ZeroDivisionError: division by 0" in state
    assert "## Your notes (NOTES.md)\n(empty: write what you learn to NOTES.md)" in state


def test_200_experiments_fit_the_budget_and_nothing_is_dropped_silently(root):
    history = [
        exp(i, "keep" if i % 25 == 0 else "discard", 0.01 if i % 25 == 0 else -0.3,
            diff=diff("0.01", f"0.0{i}") * 8)
        for i in range(1, 201)
    ]  # fmt: skip
    ctx = make_ctx(root, history=history, experiment=201)
    small = prompt.state_message(ctx, 3000)
    assert prompt.estimate_tokens(small) < 3000 + 400  # the fixed lines around it
    assert "older experiments between #1 and #" in small and "omitted to save space" in small
    assert "not shown to save space; their commits hold them" in small
    full = prompt.state_message(ctx)
    assert prompt.estimate_tokens(full) <= prompt.HISTORY_TOKENS + 400
    assert all(f"#{i} " in full for i in range(1, 201))  # the default shows every line


def test_notes_are_a_file_in_the_record_bounded_and_not_an_edit(root):
    ctx = make_ctx(root)
    notes = Path(ctx.state_dir) / "NOTES.md"
    editor = FileEditor(root, ctx.program.is_editable, notes=notes)
    answer, error = editor.execute({"command": "view", "path": "NOTES.md"})
    assert not error and "empty" in answer
    answer, error = editor.execute({"command": "create", "path": "NOTES.md", "file_text": "a\n"})
    assert not error and notes.read_text() == "a\n" and not (root / "NOTES.md").exists()
    editor.execute(
        {"command": "str_replace", "path": "NOTES.md", "old_str": "a", "new_str": "LR 0.02 wins"}
    )
    assert notes.read_text() == "LR 0.02 wins\n"
    assert editor.writes == 0 and editor.notes_writes == 2 and editor.changed == []
    big = "x" * (NOTES_BYTES + 1)
    answer, error = editor.execute({"command": "create", "path": "NOTES.md", "file_text": big})
    assert error and "NOTES.md is full: shorten it" in answer
    assert "LR 0.02 wins" in prompt.state_message(ctx)


def test_context_globs_are_viewable_and_the_start_names_what_is_refused(root):
    (root / "data").mkdir()
    (root / "data" / "split.py").write_text("SPLIT = 0.9\n")
    program = make_program(
        root,
        context=("./prepare.py",),
        instructions="Read `prepare.py` and `data/split.py`; edit train.py.",
    )
    assert _context_matcher(program)("prepare.py")
    editor = FileEditor(root, program.is_editable, _context_matcher(program))
    answer, error = editor.execute({"command": "view", "path": "prepare.py"})
    assert not error and "DATA = 'fixed'" in answer
    line = LLMProposer(model="m").preflight(root, program)
    assert "1 editable file(s) and 1 context file(s)" in line
    assert "program.md names data/split.py but the model may not view it" in line
    assert "prepare.py" not in line.splitlines()[-1]


def test_the_rules_state_the_keep_rule_and_the_strategy(root):
    text = prompt.system_prompt(make_ctx(root))
    assert "How the harness decides" in text and "min_delta" in text
    assert "explore" in text and "combine near-misses" in text and "NOTES.md" in text
    early = prompt.state_message(dataclasses.replace(make_ctx(root), experiment=2, total=200))
    assert early.startswith("Experiment 2 of 200. Phase: explore")


def test_the_example_lets_the_model_read_its_harness_and_tests():
    from pytest_autoresearch.program.program_md import load_program

    example = Path(__file__).resolve().parent.parent / "example_project"
    program = load_program(example / "program.md", example)
    editor = FileEditor(example, program.is_editable, _context_matcher(program))
    for rel in ("nanochat/prepare.py", "nanochat/corpus.py", "nanochat/graph.py",
                "tests/test_guards.py"):  # fmt: skip
        answer, error = editor.execute({"command": "view", "path": rel, "view_range": [1, 3]})
        assert not error, answer
    answer, error = editor.execute({"command": "create", "path": "nanochat/prepare.py",
                                    "file_text": "x"})  # fmt: skip
    assert error and "not an editable file" in answer  # read-only
    line = LLMProposer(model="m").preflight(example, program)
    assert "may not view" not in line, line
