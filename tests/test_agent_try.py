"""Outside agents use the plugin as their judge: ``--autoresearch-try``, ``-status``, ``-init``.

The "agent" is a real shell script (``AGENT``): it edits the toy project
(tests/toyproject.py) in a real git repository and calls the commands as Claude Code or
Codex would, reading only the verdict line and the exit code. No mocks: every try runs
the real loop, the real isolated evaluation and real git.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from github_server import REPO, GitHubServer, github_server
from toyproject import LEAN_ENV, git, make_toy, read_jsonl

TAG = "t1"
BRANCH = "autoresearch/" + TAG

# The agent: `agent.sh ROOT ACTION ARG DESCRIPTION [pytest options...]`.
#   set-x V     write X = V into the editable toy/model.py, then ask for a verdict
#   cheat V     the same, and make the (protected) metric test report 0
#   status      ask where the run stands
AGENT = r"""#!/bin/sh
set -u
root="$1"; action="$2"; shift 2
cd "$root" || exit 99
judge() { exec "$PYTHON" -m pytest -q -p no:randomly -p no:cacheprovider "$@"; }
case "$action" in
  set-x)
    printf '# The knob the research loop turns.\nX = %s  # search: -20..20\n' "$1" > toy/model.py
    shift; d="$1"; shift
    judge --autoresearch-tag t1 --autoresearch-try "$d" "$@" ;;
  cheat)
    printf '# The knob the research loop turns.\nX = %s  # search: -20..20\n' "$1" > toy/model.py
    sed -i 's/return abs(model.X - 3.0)/return 0.0  # abs(model.X - 3.0)/' tests/test_metric.py
    shift; d="$1"; shift
    judge --autoresearch-tag t1 --autoresearch-try "$d" "$@" ;;
  status)
    judge --autoresearch-status "$@" ;;
esac
"""

# A noisy metric: every measurement adds Gaussian noise (sd 0.05). An evaluation keeps no
# state between runs (outside the checkout it may write only a fresh scratch), so the noise
# is real: the changes below are far outside it (kept) or within it and slightly worse
# (discarded: the keep rule's false-keep budget is 1% for a change of no effect, and this
# one is worse).
NOISY_METRIC = """
import random

from pytest_autoresearch import metric

import toy.model as model


@metric(goal="min")
def test_loss():
    return abs(model.X - 3.0) + random.gauss(0.0, 0.05)
"""


class Agent:
    """The scripted agent over one toy project; each call is one command, as an agent runs it."""

    def __init__(self, tmp_path: Path, *, noisy: bool = False) -> None:
        self.root = make_toy(tmp_path / "proj", [])
        if noisy:
            (self.root / "tests" / "test_metric.py").write_text(NOISY_METRIC)
            program = self.root / "program.md"  # four runs: a first estimate of the noise
            program.write_text(program.read_text().replace("baseline_runs: 2", "baseline_runs: 4"))
            git(self.root, "commit", "-q", "-am", "a noisy metric")
        self.script = tmp_path / "agent.sh"
        self.script.write_text(AGENT)
        self.script.chmod(0o755)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
        self.env.update(LEAN_ENV, PYTHON=sys.executable)  # only our plugin in its runs

    def __call__(
        self, action: str, *args: str, env: dict | None = None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["sh", str(self.script), str(self.root), action, *args],
            capture_output=True, text=True, timeout=180, env={**self.env, **(env or {})},
        )  # fmt: skip

    def records(self) -> list[dict]:
        return [e for e in read_jsonl(self.root / ".autoresearch" / TAG / "experiments.jsonl")
                if e["event"] == "experiment"]  # fmt: skip

    def model(self) -> str:
        return (self.root / "toy" / "model.py").read_text()

    def clean(self) -> bool:
        return git(self.root, "status", "--porcelain") == ""


def verdict(proc: subprocess.CompletedProcess) -> list[str]:
    """The verdict line's words: verdict, objective, value, (delta), reason..."""
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("autoresearch-try: ")]
    assert len(lines) == 1, proc.stdout + proc.stderr
    return lines[0].split()[1:]


def out(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_an_agent_loop_keep_refused_status(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    main = git(agent.root, "rev-parse", "main")

    # A real gain: kept on the research branch, and the checkout stays there (X = 5).
    kept = agent("set-x", "5.0", "move X to 5", "--autoresearch-json")
    assert kept.returncode == 0, out(kept)
    assert verdict(kept)[:3] == ["keep", "loss", "2"]
    data = json.loads(next(ln for ln in kept.stdout.splitlines() if ln.startswith("{")))
    assert data["verdict"] == "keep" and data["exit_code"] == 0 and data["delta"] == -5
    assert git(agent.root, "symbolic-ref", "HEAD") == "refs/heads/" + BRANCH
    assert git(agent.root, "rev-parse", BRANCH) == data["commit"] != main
    assert "X = 5.0" in agent.model() and agent.clean()
    assert git(agent.root, "rev-parse", "main") == main  # the user's branch untouched

    # A protected file edited: refused before anything runs, the tree restored.
    cheat = agent("cheat", "3.0", "perfect score")
    assert cheat.returncode == 2, out(cheat)
    words = verdict(cheat)
    assert words[0] == "refused" and "tests/test_metric.py" in " ".join(words), words
    metric_test = (agent.root / "tests/test_metric.py").read_text()
    assert agent.clean() and "return abs(model.X" in metric_test and "X = 5.0" in agent.model()
    saved = Path(words[-1].rstrip(")")).read_text()
    assert "return 0.0" in saved and "X = 3.0" in saved  # nothing lost: all in the record

    recs = agent.records()
    assert [r["status"] for r in recs] == ["keep", "rejected"]
    assert {r["proposer"] for r in recs} == {"working-tree"}
    assert len(git(agent.root, "log", "--format=%H", f"main..{BRANCH}").split()) == 1

    # The agent's view before its next try: best, noise, the last experiments, the notes.
    (agent.root / ".autoresearch" / TAG / "NOTES.md").write_text("X near 3 looks best\n")
    status = agent("status", "--autoresearch-json")
    assert status.returncode == 0, out(status)
    view = json.loads(status.stdout.strip().splitlines()[-1])
    assert view["done"] == 2 and view["kept"] == 1 and view["best"] == 2.0
    assert [r["status"] for r in view["last"]] == ["keep", "rejected"]
    assert "perfect score" in status.stdout and "X near 3 looks best" in status.stdout

    # A commit made by hand on the research branch: the judge refuses to build on it.
    (agent.root / "tests" / "test_metric.py").write_text("def test_loss():\n    pass\n")
    git(agent.root, "commit", "-q", "-am", "sneaked in")
    sneaked = agent("set-x", "3.0", "on a forged best")
    assert sneaked.returncode == 2, out(sneaked)
    assert verdict(sneaked)[0] == "refused" and "moved by hand" in sneaked.stdout
    assert "X = 3.0" in agent.model() and len(agent.records()) == 2  # nothing touched


@pytest.mark.slow
def test_a_change_within_the_noise_is_discarded(tmp_path: Path) -> None:
    agent = Agent(tmp_path, noisy=True)
    noise = agent("set-x", "10.02", "nudge X", "--autoresearch-json")
    assert noise.returncode == 1, out(noise)
    words = verdict(noise)
    assert words[0] == "discard", words
    data = json.loads(next(ln for ln in noise.stdout.splitlines() if ln.startswith("{")))
    assert data["noise"] > 0.001 and abs(data["delta"]) < 0.5
    patch = Path(words[-1].rstrip(")"))
    assert patch.is_file() and "X = 10.02" in patch.read_text()
    assert "X = 10.0" in agent.model() and agent.clean()  # back at the best
    assert git(agent.root, "rev-parse", BRANCH) == git(agent.root, "rev-parse", "main")


def test_usage_errors_touch_nothing(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    nothing = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--autoresearch-try", "nothing"],
        cwd=agent.root, capture_output=True, text=True, env=agent.env, timeout=60,
    )  # fmt: skip
    assert nothing.returncode == 3, out(nothing)
    assert verdict(nothing)[0] == "usage"
    assert agent.clean() and git(agent.root, "branch", "--list", BRANCH) == ""

    # A change made on main while the research branch is elsewhere: refused, left in place.
    git(agent.root, "branch", BRANCH)
    git(agent.root, "checkout", "-q", BRANCH)
    (agent.root / "toy" / "model.py").write_text("X = 4.0\n")
    git(agent.root, "commit", "-q", "-am", "the research branch moved")
    git(agent.root, "checkout", "-q", "main")
    moved = agent("set-x", "6.0", "on the wrong branch")
    assert moved.returncode == 3, out(moved)
    assert "git checkout " + BRANCH in out(moved)
    assert "X = 6.0" in agent.model()  # the agent's change is where it left it
    assert not (agent.root / ".autoresearch" / TAG / "experiments.jsonl").exists()


@pytest.mark.slow
def test_a_try_killed_with_minus_9_is_resumed(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    # Killed after the candidate's first evaluation (tests/test_crash_safety.py's faults).
    killed = agent("set-x", "5.0", "move X to 5", env={"AUTORESEARCH_FAULT": "evaluation:1"})
    assert killed.returncode == -9, out(killed)
    # The agent saw no verdict and runs the same command again: the experiment is resumed.
    again = agent("set-x", "5.0", "move X to 5")
    assert again.returncode == 0, out(again)
    assert verdict(again)[0] == "keep"
    assert [r["index"] for r in agent.records()] == [1]
    assert agent.clean() and "X = 5.0" in agent.model()

    # Killed after the keep was journaled, before the branch moved: finished, not re-run.
    killed = agent("set-x", "3.0", "X to 3", env={"AUTORESEARCH_FAULT": "before-commit:2"})
    assert killed.returncode == -9, out(killed)
    again = agent("set-x", "3.0", "X to 3")
    assert again.returncode == 0, out(again)
    assert verdict(again)[0] == "keep"
    assert [(r["index"], r["status"]) for r in agent.records()] == [(1, "keep"), (2, "keep")]
    assert agent.clean() and "X = 3.0" in agent.model()
    assert len(git(agent.root, "log", "--format=%H", f"main..{BRANCH}").split()) == 2


@pytest.fixture
def gh() -> GitHubServer:
    with github_server() as server:
        yield server


@pytest.mark.slow
def test_a_run_of_tries_is_published_as_one_pull_request(tmp_path: Path, gh: GitHubServer) -> None:
    agent = Agent(tmp_path)
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    git(agent.root, "remote", "add", "origin", str(origin))
    git(agent.root, "push", "-q", "origin", "main")
    agent.env.update(gh.env())
    first = agent("set-x", "5.0", "move X to 5", "--autoresearch-pr")
    assert first.returncode == 0, out(first)
    second = agent("set-x", "3.0", "X to 3", "--autoresearch-pr")
    assert second.returncode == 0, out(second)
    assert "pull request #1 updated" in second.stdout, out(second)
    assert len(gh.pulls) == 1 and gh.pulls[1]["title"].endswith("2 kept of 2")
    assert gh.pulls[1]["head"]["ref"] == BRANCH and gh.pulls[1]["base"]["ref"] == "main"
    assert git(origin, "rev-parse", BRANCH) == git(agent.root, "rev-parse", BRANCH)
    assert ("GET", f"/repos/{REPO}") in gh.api_calls() and gh.problems == []


def test_init_writes_a_starting_point_and_never_overwrites(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    (agent.root / "program.md").unlink()
    (agent.root / "AGENTS.md").write_text("# House rules\n\nBe kind.\n")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "--autoresearch-init"]
    first = subprocess.run(cmd, cwd=agent.root, capture_output=True, text=True, env=agent.env)
    assert first.returncode == 0, out(first)
    program = (agent.root / "program.md").read_text()
    assert 'editable: ["toy/model.py"]' in program and "objective: loss" in program
    assert 'guards: ["tests/test_guard.py"]' in program
    from pytest_autoresearch.program.program_md import load_program

    loaded = load_program(agent.root / "program.md", agent.root)
    assert loaded.objective == "loss" and loaded.is_editable("toy/model.py")
    agents_md = (agent.root / "AGENTS.md").read_text()
    assert agents_md.startswith("# House rules") and "--autoresearch-try" in agents_md
    second = subprocess.run(cmd, cwd=agent.root, capture_output=True, text=True, env=agent.env)
    assert second.returncode == 0, out(second)
    assert (agent.root / "program.md").read_text() == program
    assert (agent.root / "AGENTS.md").read_text() == agents_md
    assert "left as it is" in second.stdout


def test_the_verdict_is_one_parseable_line_and_one_json_object() -> None:
    from pytest_autoresearch.research.agent_try import TryState, conclude, verdict_lines

    state = TryState("nudge X", TAG, Path("/r/.autoresearch/t1"), json=True)
    rec = {"index": 2, "objective": 2.25, "best_before": 2.2, "best_after": 2.2, "noise": 0.1,
           "reason": "not better than the best", "description": "nudge X"}  # fmt: skip
    conclude(state, "loss", "discard", "", rec, Path("/r/.autoresearch/t1/agent/2.patch"))
    *_, line, obj = verdict_lines(state)
    assert line.startswith("autoresearch-try: discard loss 2.25 (+0.05) not better than the best;")
    assert line.endswith("(git apply /r/.autoresearch/t1/agent/2.patch)")
    data = json.loads(obj)
    assert data["exit_code"] == 1 and data["index"] == 2 and data["delta"] == pytest.approx(0.05)
    assert state.exit_code == 1
