"""Executors for real: git worktrees in tmp_path, real pytest subprocess evaluations."""

from __future__ import annotations

import pickle
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from pytest_autoresearch.executors import Executor, Trial, TrialResult
from pytest_autoresearch.executors.base import THREADS_ENV, WORKER_ENV, worker_env
from pytest_autoresearch.executors.serial import SerialExecutor
from pytest_autoresearch.executors.worktree import WorktreeExecutor, detect_gpus, plan_devices
from pytest_autoresearch.sandbox.evaluate import Evaluation, evaluate
from pytest_autoresearch.vcs.workspace import Workspace

pytestmark = pytest.mark.slow

METRIC = '''
import os, time
from pathlib import Path

from pytest_autoresearch import metric

import knob


@metric(goal="min")
def test_loss():
    return abs(knob.X - 3.0)


@metric(goal="min")
def test_window():
    """When the run started and how long it slept: overlap shows the workers ran together."""
    start = time.time()
    time.sleep(knob.SLEEP)
    Path("ran_at.txt").write_text(f"{start} {time.time()}")
    return start


@metric(goal="max")
def test_threads():
    assert os.environ.get("OMP_NUM_THREADS") == os.environ["AUTORESEARCH_NUM_THREADS"]
    return float(os.environ["AUTORESEARCH_NUM_THREADS"])
'''

METRIC_ARGS = ("tests/test_metric.py",)


def sh(root: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def knob(x: float, sleep: float = 0.0) -> str:
    return f"X = {x!r}\nSLEEP = {sleep!r}\n"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Only our plugin in the evaluations: seconds faster on a busy machine.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    root = tmp_path / "repo"
    (root / "tests").mkdir(parents=True)
    (root / "knob.py").write_text(knob(10.0))
    (root / "tests" / "test_metric.py").write_text(textwrap.dedent(METRIC))
    (root / "pytest.ini").write_text("[pytest]\npythonpath = .\n")
    (root / ".gitignore").write_text("__pycache__/\nran_at.txt\n")
    sh(root.parent, "init", "-q", "-b", "main", str(root))
    sh(root, "-c", "user.name=t", "-c", "user.email=t@e", "add", "-A")
    sh(root, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "start")
    return root


def diff_for(root: Path, text: str) -> str:
    old = (root / "knob.py").read_text()
    (root / "knob.py").write_text(text)
    try:
        return sh(root, "diff", "--binary") + "\n"
    finally:
        (root / "knob.py").write_text(old)


def trial(root: Path, tid: str, x: float, sleep: float = 0.0, **kw) -> Trial:
    return Trial(
        id=tid,
        parent_sha=sh(root, "rev-parse", "HEAD"),
        diff=diff_for(root, knob(x, sleep)),
        metric_args=METRIC_ARGS,
        timeout=60,
        required=("loss",),
        **kw,
    )


def loss(result: TrialResult, i: int = 0) -> float | None:
    return result.evaluations[i].metrics["loss"].value


def test_trials_and_results_pickle() -> None:
    t = Trial("t1", "a" * 40, diff="--- a\n", metric_args=["x.py"], env_hints={"A": "1"})
    assert isinstance(t.metric_args, tuple)
    assert pickle.loads(pickle.dumps(t)) == t
    r = TrialResult("t1", [Evaluation("ok", duration=1.0)], worker="w0", host="h")
    assert pickle.loads(pickle.dumps(r)) == r
    with pytest.raises(ValueError, match="runs must be 1 or more"):
        Trial("t2", "a" * 40, runs=0)


def test_serial_in_place_is_todays_behaviour(repo: Path) -> None:
    (repo / "knob.py").write_text(knob(5.0))  # the proposer edited the checkout
    ex = SerialExecutor(repo)
    assert isinstance(ex, Executor) and ex.capacity == 1
    ex.submit(Trial("t1", sh(repo, "rev-parse", "HEAD"), metric_args=METRIC_ARGS, runs=2))
    [result] = list(ex.as_completed())
    assert result.ok and result.worker == "serial"
    assert [loss(result, i) for i in range(2)] == [2.0, 2.0]
    ex.shutdown()


def test_serial_with_a_workspace_applies_the_candidate(repo: Path, tmp_path: Path) -> None:
    ws = Workspace.create(repo, tmp_path / "workers", "s0")
    ex = SerialExecutor(workspace=ws)
    ex.submit(trial(repo, "t1", 4.0))
    ex.submit(trial(repo, "t2", 1.0))
    results = {r.trial_id: r for r in ex.as_completed()}
    assert loss(results["t1"]) == 1.0 and loss(results["t2"]) == 2.0
    assert results["t1"].changed == [[]]  # ran_at.txt is ignored by git: an output, no change
    assert (repo / "knob.py").read_text() == knob(10.0)  # the user's checkout untouched
    ws.remove()


def test_two_worktree_workers_measure_side_by_side(repo: Path, tmp_path: Path) -> None:
    folder = tmp_path / "workers"
    with WorktreeExecutor(repo, folder, 2, gpus=[], cpus=4) as ex:
        assert isinstance(ex, Executor) and ex.capacity == 2
        for tid, x in (("a", 4.0), ("b", 1.0), ("c", 3.0)):
            ex.submit(trial(repo, tid, x, sleep=1.5))
        results = {r.trial_id: r for r in ex.as_completed()}
        assert len(sh(repo, "worktree", "list").splitlines()) == 3
    assert {k: loss(r) for k, r in results.items()} == {"a": 1.0, "b": 2.0, "c": 0.0}
    assert all(r.ok and r.host and r.duration > 0 for r in results.values())
    assert {r.worker for r in results.values()} == {"w0", "w1"}
    for r in results.values():  # the cores split between the two workers
        assert r.evaluations[0].metrics["threads"].value == 2.0
    # Two of the runs overlapped in time: they ran in parallel, not one after another.
    starts = sorted(r.evaluations[0].metrics["window"].value for r in results.values())
    assert starts[1] - starts[0] < 1.5
    # Nothing left: worktrees removed, git's records of them pruned.
    assert not folder.exists()  # the worktrees and then their folder are gone
    assert len(sh(repo, "worktree", "list").splitlines()) == 1


def test_what_an_evaluation_writes_is_reported_and_removed(repo: Path, tmp_path: Path) -> None:
    planted = textwrap.dedent(
        """
        from pathlib import Path
        Path("tests/conftest.py").write_text("# planted by the experiment\\n")
        X = 3.0
        SLEEP = 0.0
        """
    )
    with WorktreeExecutor(repo, tmp_path / "workers", 1, gpus=[], cpus=1) as ex:
        ex.submit(
            Trial(
                "bad",
                sh(repo, "rev-parse", "HEAD"),
                diff=diff_for(repo, planted),
                metric_args=METRIC_ARGS,
                timeout=60,
            )
        )
        ex.submit(trial(repo, "next", 4.0))
        results = {r.trial_id: r for r in ex.as_completed()}
    assert results["bad"].changed == [["tests/conftest.py"]]
    assert results["next"].changed == [[]]  # the next candidate started clean


def test_a_diff_that_does_not_apply_comes_back_stale(repo: Path, tmp_path: Path) -> None:
    old = trial(repo, "old", 4.0)
    (repo / "knob.py").write_text(knob(7.0))
    sh(repo, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qam", "moved")
    moved = Trial("rebased", sh(repo, "rev-parse", "HEAD"), diff=old.diff, metric_args=METRIC_ARGS)
    with WorktreeExecutor(repo, tmp_path / "workers", 1, gpus=[], cpus=1) as ex:
        ex.submit(moved)
        [result] = list(ex.as_completed())
    assert result.stale and not result.ok and result.evaluations == []
    assert "does not apply" in result.error


def test_shutdown_kills_running_evaluations_and_cleans_up(repo: Path, tmp_path: Path) -> None:
    folder = tmp_path / "workers"
    ex = WorktreeExecutor(repo, folder, 2, gpus=[], cpus=2)
    ex.submit(trial(repo, "hang1", 4.0, sleep=300))
    ex.submit(trial(repo, "hang2", 4.0, sleep=300))
    ex.submit(trial(repo, "queued", 4.0))
    assert list(ex.as_completed(timeout=0.5)) == []  # nothing finished: the wait ends
    deadline = time.monotonic() + 60
    while not all(ex.running.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)  # well inside the evaluations
    t0 = time.monotonic()
    ex.shutdown()
    assert time.monotonic() - t0 < 15
    assert not any(t.is_alive() for t in ex._threads)
    assert not folder.exists()  # the worktrees and then their folder are gone
    assert len(sh(repo, "worktree", "list").splitlines()) == 1
    out = subprocess.run(["pgrep", "-f", str(folder)], capture_output=True, text=True)
    assert out.stdout.strip() == ""  # no evaluation process outlived it
    ex.shutdown()  # idempotent
    with pytest.raises(RuntimeError, match="shut down"):
        ex.submit(trial(repo, "late", 1.0))


def test_devices_are_split_between_workers() -> None:
    assert plan_devices(2, ["0", "1", "2", "3"], 2, 16) == [(["0", "1"], 8), (["2", "3"], 8)]
    assert plan_devices(3, [], 1, 2) == [(None, 1)] * 3
    with pytest.raises(
        ValueError, match="need 8 GPUs, and 2 are visible.*--autoresearch-workers 2"
    ):
        plan_devices(8, ["0", "1"], 1, 8)
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    env = worker_env("w1", threads=4, gpus=["3"], base={})
    assert env == {
        WORKER_ENV: "w1",
        THREADS_ENV: "4",
        "OMP_NUM_THREADS": "4",
        "MKL_NUM_THREADS": "4",
        "CUDA_VISIBLE_DEVICES": "3",
    }
    pinned = worker_env("w1", threads=4, base={"OMP_NUM_THREADS": "1"})
    assert "OMP_NUM_THREADS" not in pinned  # the user's own setting wins


def test_worktree_evaluation_uses_the_real_evaluate_signature(repo: Path, tmp_path: Path) -> None:
    seen: list[dict] = []

    def spy(root, metric_args, guard_args, timeout, **kwargs):
        seen.append({"root": root, **kwargs})
        return evaluate(root, metric_args, guard_args, timeout, **kwargs)

    with WorktreeExecutor(
        repo, tmp_path / "workers", 1, gpus=[], cpus=1, evaluate_fn=spy,
        evaluate_kwargs={"launcher": None, "tmp_root": tmp_path / "evals"},
    ) as ex:  # fmt: skip
        ex.submit(trial(repo, "t", 4.0, env_hints={"MY_HINT": "on"}))
        [result] = list(ex.as_completed())
    assert loss(result) == 1.0
    [call] = seen
    assert call["root"].parent == tmp_path / "workers"  # the worktree, not the checkout
    assert call["launcher"].name == "plain"  # wrapped so that shutdown can kill it
    assert call["env"]["MY_HINT"] == "on" and call["env"][WORKER_ENV] == "w0"
    assert call["required"] == ("loss",)
