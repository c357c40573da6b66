"""What an LLM proposer is told: static prompt, state, compacted journal, repair, descriptions."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_autoresearch.proposers import prompt
from pytest_autoresearch.proposers.base import Failure, PastExperiment

try:
    from llm_server import make_ctx, make_project
except ImportError:  # tests/ became a package
    from tests.llm_server import make_ctx, make_project


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_project(tmp_path / "proj")


def past(i: int, status: str = "discard", desc: str | None = None, reason: str = "no gain"):
    delta = {"keep": 0.01, "discard": -0.002}.get(status)
    objective = None if status in ("crash", "error", "rejected") else 0.5 - (delta or 0)
    return PastExperiment(i, desc or f"idea number {i}", status, objective, delta, reason)


def test_system_prompt_is_static_across_experiments(root):
    constraint = SimpleNamespace(text="peak_mem_mb <= 500")
    first = make_ctx(root, constraints=(constraint,), guards=("tests/test_guard.py",))
    later = dataclasses.replace(
        first, experiment=7, best_value=0.3, noise=0.02, history=[past(1), past(2, "keep")]
    )
    text = prompt.system_prompt(first)
    assert text == prompt.system_prompt(later)
    assert "loss: lower is better." in text
    assert "- peak_mem_mb <= 500" in text and "- tests/test_guard.py" in text
    assert "## Editable files\n- train.py" in text
    assert "## Context files (read-only)\n- prepare.py" in text
    assert text.endswith(
        "## Research program (from program.md)\nTune the learning rate LR in train.py."
    )
    assert "Description: <what you changed" in text


def test_state_names_best_noise_metrics_but_not_the_holdout(root):
    ctx = make_ctx(root, holdout="accuracy", history=[past(1, "keep", "raise LR")])
    ctx = dataclasses.replace(ctx, goal="max", metrics={"loss": 0.5, "accuracy": 0.9, "ms": 12.0})
    state = prompt.state_message(ctx)
    assert "Experiment 1 of 10." in state
    assert "Current best loss: 0.5 (baseline 0.6; higher is better)." in state
    assert "about 0.01 (sigma)" in state
    assert "Other metrics at the best commit: ms = 12." in state and "accuracy" not in state
    assert "#1 keep +0.01 (= 0.49): raise LR" in state


def test_first_experiment_says_so(root):
    assert "(no experiments yet: this is the first)" in prompt.state_message(make_ctx(root))


def test_short_history_is_shown_in_full_with_reasons():
    history = [past(1), past(2, "crash", reason="NameError: x"), past(3, "keep")]
    lines = prompt.compact_history(history, 4000).splitlines()
    assert lines == [
        "#1 discard -0.002 (= 0.502): idea number 1 -- no gain",
        "#2 crash: idea number 2 -- NameError: x",
        "#3 keep +0.01 (= 0.49): idea number 3",
    ]


def test_long_history_is_compacted_to_the_budget_keeping_wins_and_recent_ones():
    history = [
        past(
            i,
            "keep" if i in (5, 120) else ("crash" if i % 7 == 0 else "discard"),
            reason="improvement below the noise floor " * 3,
        )
        for i in range(1, 301)
    ]
    text = prompt.compact_history(history, budget_tokens=1500)
    assert prompt.estimate_tokens(text) <= 1500
    lines = text.splitlines()
    assert lines[0].startswith("(") and "older experiments between #1 and #" in lines[0]
    assert "omitted to save space: crash " in lines[0] and "discard " in lines[0]
    assert any(line.startswith("#5 keep") for line in lines)
    assert any(line.startswith("#120 keep") for line in lines)
    # The newest ones are complete with their reasons; older shown ones lost theirs.
    assert lines[-1].startswith("#300 discard") and "-- improvement below" in lines[-1]
    assert "-- " not in next(line for line in lines if line.startswith("#280 "))
    shown = [int(line.split()[0][1:]) for line in lines[1:]]
    assert shown == sorted(shown)
    omitted = int(lines[0].split()[0][1:])
    assert omitted + len(shown) == 300


def test_repair_message_has_the_reason_and_the_end_of_the_log():
    log = "\n".join(f"line {i}" for i in range(5000)) + "\nZeroDivisionError: division by zero"
    text = prompt.repair_message(Failure("crash", "ZeroDivisionError in test_loss", log), 2)
    assert "the run ended in crash (ZeroDivisionError in test_loss)" in text
    assert "Repair attempt 2" in text and text.count("\n") < 1200
    assert "ZeroDivisionError: division by zero\n```" in text and "line 10\n" not in text
    guard = prompt.repair_message(Failure("guard", "guards failed: t.py::x", "E assert 1 == 2"), 1)
    assert "a guard test failed (guards failed: t.py::x)" in guard


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("I changed things.\nDescription: raise LR to 0.04", "raise LR to 0.04"),
        ("**Description:** `use cosine schedule`", "use cosine schedule"),
        ("Description: first\nmore\nDescription: second", "second"),
        ("Tried warmup of 100 steps.\n\nIt should help.", "Tried warmup of 100 steps."),
        ("", "edited train.py"),
        ("Description: a\x07b\u202ec\x1b[0m", "a b c [0m"),
    ],
)
def test_descriptions_are_one_clean_line(said, expected):
    assert prompt.extract_description(said, ["train.py"]) == expected


def test_descriptions_are_truncated():
    desc = prompt.clean_description("word " * 100)
    assert len(desc) == 200 and desc.endswith("...")
    assert prompt.extract_description("", []) == "(no description)"


def test_transcript_safe_removes_secrets_everywhere():
    data = {"a": ["x sk-123456 y", {"b": "sk-123456"}], "n": 3}
    assert prompt.transcript_safe(data, ["sk-123456"]) == {
        "a": ["x [REDACTED] y", {"b": "[REDACTED]"}],
        "n": 3,
    }
