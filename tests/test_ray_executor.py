"""The Ray executor for real: a local Ray instance, real git, real pytest evaluations.

Few tests, one Ray instance for the module (starting one costs seconds).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import toyproject

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install '.[ray]')")

from pytest_autoresearch.executors import Executor, Trial  # noqa: E402
from pytest_autoresearch.executors.ray import CLONE_DIR, RayExecutor  # noqa: E402

pytestmark = pytest.mark.slow

METRIC = """
import os, time
from pytest_autoresearch import metric
import knob


@metric(goal="min")
def test_loss():
    marker = os.environ.get("KILL_MARKER", "")
    if knob.KILL == "always" or (knob.KILL == "once" and not os.path.exists(marker)):
        open(marker, "w").close()
        os.kill(os.getppid(), 9)  # the Ray worker running this evaluation dies (a lost node)
        time.sleep(60)
    time.sleep(knob.SLEEP)
    return abs(knob.X - 3.0)


@metric(goal="min")
def test_worker():
    assert os.environ["AUTORESEARCH_WORKER"].startswith("r")
    return float(os.environ["AUTORESEARCH_NUM_THREADS"])
"""
# Only our plugin in the evaluations (the Ray workers' environment is the driver's at init).
HINTS = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


def git(root: Path, *args: str) -> str:
    return toyproject.git(root, *args, identity=True)


def knob(x: float, sleep: float = 0.0, kill: str = "") -> str:
    return f"X = {x!r}\nSLEEP = {sleep!r}\nKILL = {kill!r}\n"


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "tests").mkdir(parents=True)
    (root / "knob.py").write_text(knob(10.0))
    (root / "tests" / "test_metric.py").write_text(textwrap.dedent(METRIC))
    (root / "pytest.ini").write_text("[pytest]\npythonpath = .\n")
    (root / ".gitignore").write_text("__pycache__/\n")
    git(tmp_path, "init", "-q", "-b", "main", str(root))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "start")
    return root


def trial(
    root: Path, tid: str, x: float, sleep: float = 0.0, parent: str = "HEAD", kill: str = ""
) -> Trial:
    old = (root / "knob.py").read_text()
    (root / "knob.py").write_text(knob(x, sleep, kill))
    parent_sha = git(root, "rev-parse", parent)
    diff = subprocess.run(
        ["git", "diff", "--binary", parent_sha], cwd=root, capture_output=True, text=True
    ).stdout
    (root / "knob.py").write_text(old)
    return Trial(
        tid, parent_sha, diff=diff, metric_args=("tests/test_metric.py",), timeout=120,
        env_hints={**HINTS, "KILL_MARKER": str(root.parent / f"{tid}.killed")},
        required=("loss",),
    )  # fmt: skip


def test_two_ray_workers_measure_candidates_shipped_as_parent_and_diff(
    ray_local: None, repo: Path
) -> None:
    with RayExecutor(repo, "local", 2) as ex:
        assert isinstance(ex, Executor) and ex.capacity == 2
        ex.submit(trial(repo, "a", 4.0))
        ex.submit(trial(repo, "b", 1.0))
        results = {r.trial_id: r for r in ex.as_completed()}
        assert {k: r.evaluations[0].metrics["loss"].value for k, r in results.items()} == {
            "a": 1.0,
            "b": 2.0,
        }
        assert all(r.ok and r.attempts == 1 and r.host for r in results.values())
        assert {r.worker for r in results.values()} <= {"r0", "r1"}
        # The best moves on the driver: the next parent reaches the workers as a bundle.
        (repo / "knob.py").write_text(knob(5.0))
        git(repo, "commit", "-qam", "kept")
        ex.submit(trial(repo, "c", 3.5))
        stale_diff = trial(repo, "d", 4.0, parent="HEAD~1")
        ex.submit(Trial("d", git(repo, "rev-parse", "HEAD"), diff=stale_diff.diff,
                        metric_args=stale_diff.metric_args, env_hints=HINTS))  # fmt: skip
        later = {r.trial_id: r for r in ex.as_completed()}
    assert later["c"].evaluations[0].metrics["loss"].value == 0.5
    assert later["d"].stale and "does not apply" in later["d"].error
    assert (repo / "knob.py").read_text() == knob(5.0)  # the user's checkout untouched


def test_a_lost_worker_is_retried_once_then_the_trial_is_a_crash(
    ray_local: None, repo: Path
) -> None:
    with RayExecutor(repo, "local", 1) as ex:
        ex.submit(trial(repo, "once", 4.0, kill="once"))  # its worker dies the first time
        [result] = list(ex.as_completed())
        assert result.ok and result.attempts == 2
        assert result.evaluations[0].metrics["loss"].value == 1.0
        assert "was lost" in result.notes[0] and "retried" in result.notes[0]

        ex.submit(trial(repo, "twice", 4.0, kill="always"))
        [result] = list(ex.as_completed())
        assert not result.ok and result.attempts == 2 and result.evaluations == []
        assert "was lost" in result.error and "giving up" in result.error

        ex.submit(trial(repo, "after", 2.0))  # the restarted worker goes on measuring
        [result] = list(ex.as_completed())
    assert result.ok and result.evaluations[0].metrics["loss"].value == 1.0


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19])


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        stat = _stat(pid)
        if stat is None:
            return False
        pid = stat[0]
        if pid == ancestor:
            return True
    return False


def _evaluations_under(folder: Path, ours_only: bool = True) -> dict[int, tuple[int, int]]:
    """This test's processes (Ray here is a child of the test process) whose working
    directory is inside ``folder`` (the evaluations' pytest): {pid: (parent, start time)}.

    The folder is shared by every Ray executor on this machine: under ``pytest -n 2`` the
    other worker's Ray tests run their evaluations there too, which are not ours to judge.
    """
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if not (proc.name.isdigit() and folder in (proc / "cwd").resolve().parents):
                continue
        except OSError:
            continue
        pid = int(proc.name)
        stat = _stat(pid)
        if stat is not None and (not ours_only or _descends_from(pid, os.getpid())):
            found[pid] = stat
    return found


def _still_alive(procs: dict[int, tuple[int, int]]) -> list[int]:
    """Those of ``procs`` still running (the same process: its pid not reused)."""
    return [pid for pid, (_, start) in procs.items() if (_stat(pid) or (0, -1))[1] == start]


def test_shutdown_kills_running_evaluations(ray_local: None, repo: Path) -> None:
    folder = Path(tempfile.gettempdir()) / CLONE_DIR
    ex = RayExecutor(repo, "local", 1)
    ex.submit(trial(repo, "hang", 4.0, sleep=300.0))
    # Starting the actor and its evaluation took over 60 s once, with both cores busy with
    # the other xdist worker's training runs: the test is about the shutdown, so it waits.
    deadline = time.monotonic() + 180
    while not _evaluations_under(folder) and time.monotonic() < deadline:
        assert list(ex.as_completed(timeout=0.2)) == []
    running = _evaluations_under(folder)
    assert running, (
        f"the evaluation never started in 180 s; Ray's free resources: "
        f"{ray.available_resources()}; processes under {folder}, whoever started them: "
        f"{_evaluations_under(folder, ours_only=False)}"
    )
    t0 = time.monotonic()
    ex.shutdown()
    assert time.monotonic() - t0 < 20
    # Once the actor is dead its evaluation gets SIGKILL at once (PR_SET_PDEATHSIG); ray.kill
    # is asynchronous, so a loaded machine may take a while to kill the actor itself.
    deadline = time.monotonic() + 30
    while _still_alive(running) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _still_alive(running)
    actors = {parent for pid, (parent, _) in running.items() if pid in left}
    why = f"their actor(s) {sorted(actors)} still alive: ray.kill has not taken effect"
    if not _still_alive({a: _stat(a) or (0, -1) for a in actors}):
        why = "their actor is dead: PR_SET_PDEATHSIG did not kill them (a leak)"
    assert left == [], f"evaluations {left} alive 30 s after shutdown; {why}"
    with pytest.raises(RuntimeError, match="shut down"):
        ex.submit(trial(repo, "late", 1.0))
