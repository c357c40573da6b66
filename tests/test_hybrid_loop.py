"""Through the real loop (pytest subprocesses, git, the real anthropic SDK against the
scripted loopback server): a change of structure with a poor constant is discarded by the
LLM alone and kept by the hybrid once Optuna tuned it; a repeated proposal is sent back
and costs no evaluation.

The toy: ``toy/model.py`` has ``X = 10.0`` and ``predict()``; the metric is
``|predict() - 3|`` (7.0 at the start). The scripted model's idea scales X by a new knob,
``SCALE = 2.0``: as written it predicts 20 (loss 17, worse); with SCALE near 0.3 it is
nearly perfect.
"""

from __future__ import annotations

from pathlib import Path

import pytest

try:
    from llm_server import API_KEY, edit, message, running_server, text
    from toyproject import git, make_toy, read_jsonl
except ImportError:  # tests/ became a package
    from tests.llm_server import API_KEY, edit, message, running_server, text
    from tests.toyproject import git, make_toy, read_jsonl

pytestmark = pytest.mark.slow

RECORD = Path(".autoresearch") / "t1"
MODEL = "toy/model.py"
START = (
    "# The knob the research loop turns.\nX = 10.0  # search: -20..20\n\n\n"
    "def predict():\n    return X\n"
)
METRIC = """
from pytest_autoresearch import metric

import toy.model as model


@metric(goal="min")
def test_loss():
    return abs(model.predict() - 3.0)
"""


@pytest.fixture
def server(monkeypatch):
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    with running_server(deadline=240) as srv:
        monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", srv.url)
        monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
        yield srv


def toy(root: Path) -> Path:
    make_toy(root, [])
    (root / MODEL).write_text(START)
    (root / "tests" / "test_metric.py").write_text(METRIC)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "predict()")
    return root


def idea() -> list:
    """The model's change of structure, with a poor first value for its new knob."""
    new = "SCALE = 2.0  # how much predict() scales X\n\n\ndef predict():\n    return X * SCALE"
    return [
        message(edit("str_replace", MODEL, old_str="def predict():\n    return X", new_str=new)),
        message(text("A learned scale should help.\nDescription: scale X by a new knob")),
    ]


def move_x() -> list:
    return [
        message(edit("str_replace", MODEL, old_str="X = 10.0", new_str="X = 12.0")),
        message(text("Description: move X to 12")),
    ]


def run(pytester: pytest.Pytester, monkeypatch, n: int, *extra: str):
    # Only our plugin, here and in the evaluations: cheaper, the same checks.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest_subprocess(
        "-p", "autoresearch", "--autoresearch", "-n", str(n), "--autoresearch-tag", "t1",
        "--autoresearch-seed", "1", "-p", "no:randomly", *extra, timeout=240,
    )  # fmt: skip
    return result, result.stdout.str() + result.stderr.str()


def events(root: Path) -> list[dict]:
    return read_jsonl(root / RECORD / "experiments.jsonl")


def state_text(req) -> str:
    return req.body["messages"][0]["content"][0]["text"]


def test_llm_alone_discards_the_idea_and_a_repeat_of_it_costs_no_evaluation(
    pytester, server, monkeypatch
):
    root = toy(pytester.path)
    # 1: the idea (discarded: 17 > 7). 2: the same idea again on the same best (sent back
    # unmeasured), then, told so, another change (X to 12, discarded).
    server.add(*idea(), *idea(), *move_x())
    result, out = run(pytester, monkeypatch, 2, "--autoresearch-proposer", "anthropic")
    assert result.ret == 0, out
    evs = events(root)
    recs = [e for e in evs if e["event"] == "experiment"]
    assert [(r["index"], r["status"], r["description"]) for r in recs] == [
        (1, "discard", "scale X by a new knob"),
        (2, "discard", "move X to 12"),
    ]
    assert recs[0]["objective"] == 17.0 and "made_by" not in recs[0]
    (dup,) = [e for e in evs if e["event"] == "duplicate"]
    assert dup["index"] == 2 and dup["of"] == 1 and dup["kind"] == "duplicate"
    # The count: 2 baseline runs and one evaluation per experiment; the repeat had none.
    (base,) = [e for e in evs if e["event"] == "baseline"]
    assert len(base["samples"]) == 2
    assert [len(r["evaluations"]) for r in recs] == [1, 1]
    assert "[2] sent back, not measured: 'scale X by a new knob' is the same change as #1" in out
    # The model was told, with the earlier result; its tokens are billed with experiment 2.
    posts = server.posts()
    assert len(posts) == 6 and not server.unexpected
    told = state_text(posts[4])
    assert "## Sent back unmeasured" in told and "#1 (discard, loss 17" in told
    assert recs[1]["cost"]["input_tokens"] == 4 * 1000
    # The idea is on the short list of the next prompt, with its diff.
    assert "### #1 untuned idea, discarded (its numbers SCALE not yet tuned)" in state_text(
        posts[2]
    )
    # The idea never reached the research branch.
    assert "SCALE" not in git(root, "show", "autoresearch/t1:" + MODEL)


def test_the_hybrid_keeps_the_idea_once_optuna_tuned_its_knob(pytester, server, monkeypatch):
    root = toy(pytester.path)
    # 1: the idea (discarded, as the LLM alone would). 2: the LLM again (the bandit gives
    # each half two tries first). 3: Optuna re-applies idea #1 on the best and tunes SCALE.
    server.add(*idea(), *move_x())
    result, out = run(
        pytester, monkeypatch, 3
    )  # no --autoresearch-proposer: the key makes it hybrid
    assert result.ret == 0, out
    assert "proposer: hybrid (ANTHROPIC_API_KEY is set: Claude proposes changes of structure" in out
    assert "optuna tunes 1 number(s): X" in out
    recs = [e for e in events(root) if e["event"] == "experiment"]
    assert [(r["status"], r.get("made_by"), r.get("builds_on")) for r in recs] == [
        ("discard", "llm", None),
        ("discard", "llm", None),
        ("keep", "optuna", 1),
    ]
    assert recs[0]["objective"] == 17.0
    assert recs[2]["description"].startswith("#1 on the best, tuned: SCALE 2.0 -> 0.6325")
    assert recs[2]["objective"] == pytest.approx(abs(10 * 0.6325 - 3))
    kept = git(root, "show", "autoresearch/t1:" + MODEL)
    assert "SCALE = 0.6325  # how much predict() scales X" in kept and "return X * SCALE" in kept
    # The LLM was told that numbers are tuned after it, and made exactly its two proposals.
    posts = server.posts()
    assert len(posts) == 4 and not server.unexpected
    assert "Numbers are tuned for you" in posts[0].body["system"][0]["text"]
    # The report says what each half contributed.
    assert "hybrid: llm made 2 experiment(s), 0 kept" in out
    assert "optuna made 1, 1 kept" in out and "1 tuned an LLM idea into a keep (#1 -> #3" in out
    report = (root / RECORD / "report.md").read_text()
    assert "## What each half of the hybrid contributed" in report
    assert "- made by llm: #1, #2\n- made by optuna: #3" in report
    assert "- #1 scale X by a new knob: -10.0000 as proposed, kept as #3 (+3.6750)" in report


def set_x_anywhere(value: float) -> list:
    """The model writes the whole file with X at ``value``: it applies on any best."""
    body = START.replace("X = 10.0", f"X = {value}")
    return [
        message(edit("create", MODEL, file_text=body)),
        message(text(f"Description: X to {value}")),
    ]


def test_with_two_workers_each_half_proposes_and_an_in_flight_repeat_is_not_measured(
    pytester, server, monkeypatch
):
    """Two experiments in flight at once: the second proposal repeats the first while it
    is measured (or just after), goes back unmeasured and the model tries another change;
    which half proposes later experiments depends on when results come back, so what is
    checked is what holds for any order."""
    from pytest_autoresearch.research.dedupe import normalise

    root = toy(pytester.path)
    server.add(*idea(), *idea(), *set_x_anywhere(12.0), *set_x_anywhere(13.0))
    server.add(*set_x_anywhere(14.0), *set_x_anywhere(15.0))  # spares: the bandit decides
    result, out = run(pytester, monkeypatch, 4, "--autoresearch-workers", "2")
    assert result.ret == 0, out
    assert "workers: 2 worktree worker(s)" in out
    evs = events(root)
    recs = sorted((e for e in evs if e["event"] == "experiment"), key=lambda r: r["index"])
    assert [r["index"] for r in recs] == [1, 2, 3, 4]
    assert all(r["status"] in ("keep", "discard") for r in recs), out
    assert {r["made_by"] for r in recs} <= {"llm", "optuna"} and recs[0]["made_by"] == "llm"
    # The repeat of #1 was sent back for experiment 2 and measured nowhere.
    (dup,) = [e for e in evs if e["event"] == "duplicate"]
    assert (dup["index"], dup["of"], dup["kind"]) == (2, 1, "duplicate")
    assert "[2] sent back, not measured: 'scale X by a new knob' is the same change as #1" in out
    assert recs[1]["description"] == "X to 12.0"
    # No change measured twice on one parent; every experiment one evaluation or more.
    measured = [(r["parent"], normalise(r["diff"])) for r in recs]
    assert len(set(measured)) == len(measured)
    assert all(len(r["evaluations"]) >= 1 for r in recs)
    assert "hybrid: llm made" in out and not server.unexpected
