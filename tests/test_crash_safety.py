"""Crash safety by construction: kill -9 at every named step of an experiment, then resume.

The loop journals a finished experiment's whole record ("decided") before the step that
cannot be undone (moving the branch onto the kept snapshot, or restoring the tree), so a
kill at any point resumes to the same record a run without the kill would have written:
no experiment lost, duplicated or mislabelled, and the tree at the last kept commit.
``AUTORESEARCH_FAULT=STEP:INDEX`` makes the loop SIGKILL itself at that step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from toyproject import (
    git,
    make_toy,
    make_two_knobs,
    model_source,
    other_source,
    read_jsonl,
    read_tsv,
    step,
    ystep,
)

from pytest_autoresearch.research.loop import FAULT_ENV, FAULT_STEPS

pytestmark = pytest.mark.slow

TAG = "t1"
RECORD = Path(".autoresearch") / TAG
SCRIPT = [
    step("move X to 5", 5.0),  # loss 7 -> 2: keep
    step("move X to 20", 20.0),  # loss 17: discard
    step("move X to 3", 3.0),  # loss 0: keep
]
# With two in flight the third change must not collide with the first (a change of the same
# line would go stale): X, then Y worse, then Y better, on the two-knob toy.
SCRIPT_K2 = [
    step("move X to 5", 5.0),  # loss 11 -> 6: keep
    ystep("move Y to 20", 20.0),  # loss 21 or 26: discard
    ystep("move Y to 1", 1.0),  # loss 2 (or 7 if measured before X was kept): keep
]
EXPECTED = [(1, "keep"), (2, "discard"), (3, "keep")]
# The experiment each step is injected into: keeps for the commit steps, the discard for the
# restore steps, the first experiment (which is confirmed: its baseline is deterministic)
# for the confirmation run.
WHERE = {
    "baseline": None,
    "after-start": 2,
    "after-proposal": 2,
    "evaluation": 2,
    "confirmation": 1,
    "before-commit": 1,
    "after-commit": 1,
    "before-restore": 2,
    "after-restore": 2,
    "after-record": 1,
}


def loop_cmd(n: int, workers: int = 1) -> list[str]:
    return [
        sys.executable, "-m", "pytest", "-p", "autoresearch", "--autoresearch", "-n", str(n),
        "--autoresearch-tag", TAG, "--autoresearch-proposer", "scripted", "-p", "no:randomly",
        "-p", "no:cacheprovider", "--autoresearch-workers", str(workers),
    ]  # fmt: skip


def run(
    root: Path, n: int, fault: str | None = None, workers: int = 1
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "AUTORESEARCH"))}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only our plugin, here and in evaluations
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run(
        loop_cmd(n, workers), cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


def experiments(root: Path) -> list[dict]:
    events = read_jsonl(root / RECORD / "experiments.jsonl")
    return [e for e in events if e["event"] == "experiment"]


def test_every_step_is_named_in_the_test() -> None:
    assert set(WHERE) == set(FAULT_STEPS)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("fault_step", FAULT_STEPS)
def test_kill_at_each_step_then_resume_loses_and_duplicates_nothing(
    tmp_path: Path, fault_step: str, workers: int
) -> None:
    """The one loop, in place (1 worker) and with two worktree workers in flight."""
    root = make_toy(tmp_path, SCRIPT) if workers == 1 else make_two_knobs(tmp_path, SCRIPT_K2)
    main_before = git(root, "rev-parse", "main")
    index = WHERE[fault_step]
    fault = fault_step if index is None else f"{fault_step}:{index}"

    killed = run(root, 3, fault, workers)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr

    resumed = run(root, 3, workers=workers)
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out

    recs = sorted(experiments(root), key=lambda r: r["index"])
    assert [(r["index"], r["status"]) for r in recs] == EXPECTED, out
    rows = read_tsv(root / RECORD / "results.tsv")
    assert sorted(row[2] for row in rows[1:]) == ["discard", "keep", "keep"]
    # The branch holds exactly the two kept commits, one on top of the other, on top of
    # the user's commit (with two in flight, in the order they were kept).
    tip = git(root, "rev-parse", "autoresearch/" + TAG)
    kept = [recs[0]["commit"], recs[2]["commit"]]
    assert {tip, git(root, "rev-parse", tip + "^")} == set(kept)
    assert git(root, "rev-parse", tip + "^^") == main_before
    if workers == 1:
        assert tip == recs[2]["commit"]
        assert git(root, "show", f"{tip}:toy/model.py") == model_source(3.0).rstrip("\n")
        first = git(root, "show", f"{recs[0]['commit']}:toy/model.py")
        assert first == model_source(5.0).rstrip("\n")
        # The best carried forward is the kept experiment's own measurement, not a stale one.
        assert recs[1]["best_before"] == pytest.approx(2.0)
        assert recs[2]["best_before"] == pytest.approx(2.0)
    else:  # both gains on the branch, whichever was kept first
        assert git(root, "show", f"{tip}:toy/model.py") == model_source(5.0).rstrip("\n")
        assert git(root, "show", f"{tip}:toy/other.py") == other_source(1.0).rstrip("\n")
    # The user's branch and tree are as they were.
    assert git(root, "rev-parse", "main") == main_before
    assert git(root, "symbolic-ref", "--short", "HEAD") == "main"
    assert git(root, "status", "--porcelain") == ""


def test_a_second_run_in_the_same_checkout_is_refused_whatever_its_tag(tmp_path: Path) -> None:
    root = make_toy(tmp_path, [step("slow", 5.0)])
    lock_dir = Path(git(root, "rev-parse", "--absolute-git-dir"))
    (lock_dir / "autoresearch.lock").write_text(str(os.getpid()))  # a live run holds it
    cmd = loop_cmd(1)
    cmd[cmd.index(TAG)] = "other-tag"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "AUTORESEARCH"))}
    second = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 4, second.stdout + second.stderr  # usage error
    assert f"another research run (pid {os.getpid()}) is using this checkout" in second.stderr
    assert git(root, "symbolic-ref", "--short", "HEAD") == "main"
    assert not (root / ".autoresearch" / "other-tag").exists()


def test_a_lock_left_by_a_killed_run_does_not_block(tmp_path: Path) -> None:
    root = make_toy(tmp_path, [step("move X to 5", 5.0)])
    lock_dir = Path(git(root, "rev-parse", "--absolute-git-dir"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (lock_dir / "autoresearch.lock").write_text(str(dead.pid))
    done = run(root, 1)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r["status"] for r in experiments(root)] == ["keep"]
    assert not (lock_dir / "autoresearch.lock").exists()


def test_resume_never_throws_away_the_users_own_edits(tmp_path: Path) -> None:
    root = make_toy(tmp_path, [step("move X to 5", 5.0), step("move X to 4", 4.0)])
    assert run(root, 1).returncode == 0
    # The user checks out the research branch and edits the editable file by hand.
    git(root, "checkout", "-q", "autoresearch/" + TAG)
    mine = model_source(3.5, "# my own idea\n")
    (root / "toy" / "model.py").write_text(mine)
    again = run(root, 2)
    assert again.returncode == 4, again.stdout + again.stderr
    assert "uncommitted changes to toy/model.py" in again.stderr
    assert "no experiment was under way" in again.stderr
    assert (root / "toy" / "model.py").read_text() == mine
    assert len(experiments(root)) == 1


def test_a_fault_name_with_a_typo_is_a_usage_error(tmp_path: Path) -> None:
    root = make_toy(tmp_path, [step("move X to 5", 5.0)])
    bad = run(root, 1, "after-comit")
    assert bad.returncode == 4
    assert "AUTORESEARCH_FAULT='after-comit'" in bad.stderr
    assert git(root, "symbolic-ref", "--short", "HEAD") == "main"
