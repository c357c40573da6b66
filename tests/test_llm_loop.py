"""End to end: `pytest --autoresearch --autoresearch-proposer anthropic` on a real git repo,
with the real anthropic SDK in the pytest subprocess talking to a scripted loopback server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

try:
    from llm_server import API_KEY, api_error, edit, message, result_text, running_server, text
    from toyproject import git, make_toy, read_jsonl, read_tsv
except ImportError:  # tests/ became a package
    from tests.llm_server import (
        API_KEY,
        api_error,
        edit,
        message,
        result_text,
        running_server,
        text,
    )
    from tests.toyproject import git, make_toy, read_jsonl, read_tsv

pytestmark = pytest.mark.slow

RECORD = Path(".autoresearch") / "t1"
MODEL = "toy/model.py"


@pytest.fixture
def server(monkeypatch):
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    with running_server(deadline=240) as srv:
        monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", srv.url)
        monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
        yield srv


def run_loop(pytester: pytest.Pytester, n: int, *extra: str):
    return pytester.runpytest_subprocess(
        "--autoresearch",
        "-n",
        str(n),
        "--autoresearch-tag",
        "t1",
        "--autoresearch-proposer",
        "anthropic",
        "-p",
        "no:randomly",
        *extra,
        timeout=240,
    )


def experiments(root: Path) -> list[dict]:
    jsonl = root / RECORD / "experiments.jsonl"
    return [e for e in read_jsonl(jsonl) if e["event"] == "experiment"]


def set_x(old: str, new: str) -> dict:
    return edit("str_replace", MODEL, old_str=f"X = {old}", new_str=f"X = {new}")


def assert_key_nowhere(root: Path, out: str) -> None:
    assert API_KEY not in out
    for path in (root / ".autoresearch").rglob("*"):
        if path.is_file():
            assert API_KEY not in path.read_text(errors="replace"), path
    log = subprocess.run(["git", "log", "-p", "--all"], cwd=root, capture_output=True, text=True)
    assert API_KEY not in log.stdout


def test_improvement_kept_refusals_survived_an_overload_costs_no_experiment(pytester, server):
    root = make_toy(pytester.path, [])
    server.add(
        # The API stays overloaded through the SDK's retries: no experiment, tried again.
        *[api_error(529, "overloaded_error", "Overloaded") for _ in range(5)],
        # Experiment 1: tries the test and a '..' path (refused), then improves X.
        message(edit("create", "tests/test_metric.py", file_text="def test_loss():\n    pass\n")),
        message(edit("view", "../../etc/passwd")),
        message(set_x("10.0", "3.0")),
        message(text("X=3 minimises |X-3|.\nDescription: move X to 3")),
        # Experiment 2: a change that is worse is discarded.
        message(set_x("3.0", "20.0")),
        message(text("Description: move X to 20")),
    )
    result = run_loop(pytester, 2)
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == 0, out
    assert "proposer: anthropic (chosen with --autoresearch-proposer)" in out
    assert "proposer unavailable (the Anthropic API kept answering overloaded (529)" in out
    recs = experiments(root)
    assert [r["status"] for r in recs] == ["keep", "discard"]
    assert recs[0]["description"] == "move X to 3" and recs[0]["best_after"] == 0.0
    rows = read_tsv(root / RECORD / "results.tsv")
    assert [r[2:4] for r in rows[1:]] == [["keep", "move X to 3"], ["discard", "move X to 20"]]
    # The refusals reached the model as errors; the protected test is intact.
    posts = server.posts()
    refused = [
        b
        for r in posts
        for b in (r.body["messages"][-1]["content"])
        if isinstance(b, dict) and b.get("is_error")
    ]
    assert len(refused) == 2
    assert "not an editable file" in result_text(refused[0])
    assert "'..' is not allowed" in result_text(refused[1])
    assert "pass" not in (root / "tests" / "test_metric.py").read_text()
    # The second experiment was told about the first, with its diff.
    state = posts[-2].body["messages"][0]["content"][0]["text"]
    assert "#1 keep +7 (= 0): move X to 3" in state
    assert "### #1 kept: move X to 3" in state and "+X = 3.0" in state
    # Cost: 4 calls of 1000 in / 100 out for experiment 1's edit at Sonnet prices; the
    # overloaded attempts billed nothing.
    assert recs[0]["cost"]["input_tokens"] == 4000 and recs[0]["cost"]["output_tokens"] == 400
    assert recs[0]["cost"]["usd"] == pytest.approx(4 * (1000 * 2 + 100 * 10) / 1e6)
    assert (
        git(root, "log", "--format=%s", "main..autoresearch/t1")
        .splitlines()[0]
        .startswith("move X to 3")
    )
    assert_key_nowhere(root, out)


def test_crash_repaired_on_the_second_attempt_then_cost_cap_stops(pytester, server):
    root = make_toy(pytester.path, [])
    dear = {
        "input_tokens": 400_000,
        "output_tokens": 1000,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    logs: list[str] = []

    def repair_turn(answer):
        def respond(req):
            note = req.body["messages"][-1]["content"][-1]
            logs.append(note.get("text", ""))
            return answer

        return respond

    server.add(
        message(set_x("10.0", "1 / 0"), usage=dear),
        message(text("Description: move X to 1/0"), usage=dear),
        repair_turn(message(set_x("1 / 0", "undefined_name"), usage=dear)),
        message(text("Description: move X to a name"), usage=dear),
        repair_turn(message(set_x("undefined_name", "3.0"), usage=dear)),
        message(text("Fixed.\nDescription: move X to 3"), usage=dear),
    )
    result = run_loop(pytester, 3, "--autoresearch-max-cost", "4")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == 0, out
    (rec,) = experiments(root)
    assert rec["status"] == "keep" and rec["description"] == "move X to 3"
    assert [a["status"] for a in rec["attempts"]] == ["crash", "crash"]
    assert "ZeroDivisionError" in logs[0] and "Repair attempt 1" in logs[0]
    assert "NameError" in logs[1] and "Repair attempt 2" in logs[1]
    # 6 calls of 400k input + 1k output tokens at $2 / $10 per million: $4.86 > the $4 cap.
    assert rec["cost"]["usd"] == pytest.approx(6 * (400_000 * 2 + 1000 * 10) / 1e6)
    assert "cost cap reached: $4.86 of $4.00" in out
    end = [e for e in read_jsonl(root / RECORD / "experiments.jsonl") if e["event"] == "end"]
    assert "cost cap" in end[-1]["reason"]
    assert_key_nowhere(root, out)


def test_a_crash_is_repaired_with_two_workers(pytester, server):
    """The same repair with worktree workers: the candidate goes back into the checkout
    for the model (its own conversation), and each fix is measured by a worker."""
    root = make_toy(pytester.path, [])
    logs: list[str] = []

    def repair_turn(answer):
        def respond(req):
            logs.append(req.body["messages"][-1]["content"][-1].get("text", ""))
            return answer

        return respond

    server.add(
        message(set_x("10.0", "1 / 0")),
        message(text("Description: move X to 1/0")),
        repair_turn(message(set_x("1 / 0", "3.0"))),
        message(text("Fixed.\nDescription: move X to 3")),
    )
    result = run_loop(pytester, 1, "--autoresearch-workers", "2")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == 0, out
    (rec,) = experiments(root)
    assert rec["status"] == "keep" and rec["description"] == "move X to 3", out
    assert [a["status"] for a in rec["attempts"]] == ["crash"]
    assert "ZeroDivisionError" in logs[0] and "Repair attempt 1" in logs[0]
    # Measured by the workers, never in the checkout; the repair was made on X = 1 / 0.
    assert rec["worker"].startswith("w") and all(e["worker"] for e in rec["evaluations"])
    assert "X = 1 / 0" in rec["attempts"][0]["diff"]
    assert git(root, "show", "autoresearch/t1:toy/model.py").count("X = 3.0") == 1
    assert_key_nowhere(root, out)


def test_a_rejected_key_stops_before_any_experiment(pytester, server):
    root = make_toy(pytester.path, [])
    server.add(api_error(401, "authentication_error", "invalid x-api-key"))
    result = run_loop(pytester, 3)
    out = result.stdout.str() + result.stderr.str()
    assert "rejected the API key (401 authentication_error)" in out
    assert "--autoresearch-proposer optuna" in out
    assert experiments(root) == []
    assert len(server.posts()) == 1
    assert git(root, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(root, "status", "--porcelain", "--untracked-files=no") == ""
    assert_key_nowhere(root, out)
