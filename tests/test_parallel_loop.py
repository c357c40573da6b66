"""Parallel experiments through the real loop: git worktrees, pytest subprocesses, Ray.

The toy project has two editable files (``toy/model.py`` with X, ``toy/other.py`` with
Y; loss = |X - 3| + |Y - 1|), so two candidates in flight can both be real gains (one is
then re-based onto the other) or collide on one file (one goes stale). Every run checks
what must hold with K workers: the journal has each experiment once, the research branch
is exactly the chain of keeps, the user's branch and checkout are untouched, and no
worktree or process is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from toyproject import git, make_two_knobs, model_source, read_jsonl, step, ystep

pytestmark = pytest.mark.slow

TAG = "par"


def run_loop(
    root: Path, n: int, *args: str, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """One research session; ``.pid`` on the result is the driver's process id."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "AUTORESEARCH"))}
    base["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only our plugin, here and in evaluations
    cmd = [
        sys.executable, "-m", "pytest", "-p", "autoresearch", "--autoresearch", "-n", str(n),
        "--autoresearch-tag",
        TAG, "--autoresearch-proposer", "scripted", "-p", "no:randomly", "-p", "no:cacheprovider",
        *args,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=root, env={**base, **(env or {})}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, err = proc.communicate(timeout=timeout)
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    done.pid = proc.pid
    return done


def ray_holders(driver_pid: int) -> list[str]:
    """Processes with a file open in the Ray session a driver started (its folder ends in
    its pid), so a check is not fooled by another test's Ray running at the same time."""
    import glob
    import tempfile

    sessions = glob.glob(f"{tempfile.gettempdir()}/ray/session_*_{driver_pid}")
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if any(link.startswith(f"{s}/") for s in sessions for link in links):
            found.append(pid)
    return found


def experiments(root: Path) -> list[dict]:
    events = read_jsonl(root / ".autoresearch" / TAG / "experiments.jsonl")
    return [e for e in events if e["event"] == "experiment"]


def worktree_folder(root: Path) -> Path:
    from pytest_autoresearch.executors.choose import worktree_folder

    return worktree_folder(root)


def processes_in(folder: Path) -> list[str]:
    """Processes whose working directory or command line is under ``folder``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cwd.startswith(str(folder)) or str(folder) in cmdline:
            found.append(f"{pid}: {cmdline[:120]}")
    return found


def assert_clean_end(root: Path, n: int) -> list[dict]:
    """Each experiment once, the branch = the chain of keeps, main untouched, nothing left."""
    recs = experiments(root)
    assert sorted(r["index"] for r in recs) == list(range(1, n + 1))
    kept = [r for r in recs if r["status"] == "keep"]
    chain = git(root, "rev-list", f"main..autoresearch/{TAG}").split()
    assert sorted(chain) == sorted(r["commit"] for r in kept)
    for rec in kept:
        assert git(root, "rev-parse", rec["commit"] + "^") == rec["parent"]
    assert git(root, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(root, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(root, "worktree", "list", "--porcelain").count("worktree ") == 1
    folder = worktree_folder(root)
    assert not folder.exists() or not any(folder.iterdir())
    assert processes_in(folder) == []
    return recs


def test_two_workers_measure_side_by_side_and_rebase_an_overtaken_gain(tmp_path: Path) -> None:
    root = make_two_knobs(
        tmp_path, [step("x to 3", 3.0), ystep("y to 1", 1.0), ystep("y to 9", 9.0)]
    )
    done = run_loop(root, 3, "--autoresearch-workers", "2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "workers: 2 worktree worker(s)" in done.stdout
    recs = {r["index"]: r for r in assert_clean_end(root, 3)}
    assert recs[1]["status"] == "keep" and recs[2]["status"] == "keep"
    # 1 and 2 were proposed on the same commit: the one decided second was re-based, and
    # what it measured on the old parent is journaled but did not count.
    (moved,) = [recs[i] for i in (1, 2) if recs[i].get("rebased")]
    (first,) = [recs[i] for i in (1, 2) if not recs[i].get("rebased")]
    assert moved["earlier"][0]["parent"] == first["parent"]
    assert moved["parent"] == first["commit"]
    assert {e["kind"] for e in moved["evaluations"]} >= {"candidate", "rebase"}
    assert recs[3]["status"] == "discard"
    workers = {e["worker"] for r in recs.values() for e in r["evaluations"]}
    assert workers == {"w0", "w1"}
    assert all(e.get("started") and e.get("host") for r in recs.values() for e in r["evaluations"])
    tip = f"autoresearch/{TAG}"
    assert git(root, "show", f"{tip}:toy/other.py").startswith("Y = 1.0")
    assert git(root, "show", f"{tip}:toy/model.py").startswith(model_source(3.0).strip()[:20])
    events = read_jsonl(root / ".autoresearch" / TAG / "experiments.jsonl")
    session = next(e for e in events if e["event"] == "session")
    assert session["workers"] == 2 and session["executor"] == "worktree"
    report = (root / ".autoresearch" / TAG / "report.md").read_text()
    assert "## Workers" in report
    assert "workers: w0" in done.stdout  # the terminal's per-worker line


def test_two_changes_to_one_line_the_second_goes_stale(tmp_path: Path) -> None:
    root = make_two_knobs(tmp_path, [step("x to 3", 3.0), step("x to 4", 4.0)])
    done = run_loop(root, 2, "--autoresearch-workers", "2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    recs = assert_clean_end(root, 2)
    assert sorted(r["status"] for r in recs) == ["keep", "stale"]
    (stale,) = [r for r in recs if r["status"] == "stale"]
    assert "does not apply" in stale["reason"]


def test_a_candidate_in_a_worktree_cannot_write_the_users_checkout(tmp_path: Path) -> None:
    target = tmp_path / "toy" / "model.py"
    attack = (
        "import pathlib\n"
        "try:\n"
        f"    pathlib.Path({str(target)!r}).write_text('X = 3.0\\n')\n"
        "except OSError:\n"
        "    pass\n"
    )
    root = make_two_knobs(tmp_path, [ystep("y to 1, and rewrite the checkout", 1.0, attack)])
    before = target.read_text()
    done = run_loop(root, 1, "--autoresearch-workers", "2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert target.read_text() == before  # read-only to the evaluation
    assert git(root, "show", f"autoresearch/{TAG}:toy/model.py") == model_source(10.0).strip()
    assert_clean_end(root, 1)


def test_what_a_worker_run_writes_into_its_checkout_rejects_the_candidate(tmp_path: Path) -> None:
    plant = (
        "import pathlib\n"
        "pathlib.Path(__file__).parent.parent.joinpath('tests', 'test_guard.py')"
        ".write_text('def test_ok():\\n    pass\\n')\n"
    )
    root = make_two_knobs(tmp_path, [ystep("y to 1 and rewrite the guard", 1.0, plant)])
    done = run_loop(root, 1, "--autoresearch-workers", "2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (rec,) = assert_clean_end(root, 1)
    assert rec["status"] == "rejected"
    assert "tests/test_guard.py (changed by the evaluation)" in rec["reason"]


def test_kill_9_of_the_driver_then_resume_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    slow = "import time\ntime.sleep(1.5)\n"  # the other worker is mid-evaluation at the kill
    root = make_two_knobs(
        tmp_path,
        [
            step("x to 3", 3.0, extra=slow),
            ystep("y to 1", 1.0, slow),
            step("x to 2", 2.0, extra=slow),
        ],
    )
    killed = run_loop(
        root, 3, "--autoresearch-workers", "2", env={"AUTORESEARCH_FAULT": "evaluation:1"}
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:]
    time.sleep(1.0)  # the evaluations die with the driver (PR_SET_PDEATHSIG)
    assert processes_in(worktree_folder(root)) == []
    from pytest_autoresearch.research.journal import Journal

    # Two experiments were in flight at the kill: both started, neither decided.
    assert Journal(root / ".autoresearch" / TAG, "loss").load().pending == [1, 2]
    done = run_loop(root, 3, "--autoresearch-workers", "2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "experiment 1 was cut short last time" in done.stdout
    assert "experiment 2 was cut short last time" in done.stdout
    assert_clean_end(root, 3)


def test_ray_local_measures_on_ray_workers_and_stops_its_instance(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    root = make_two_knobs(tmp_path, [step("x to 3", 3.0), ystep("y to 1", 1.0)])
    done = run_loop(
        root, 2, "--autoresearch-ray", "local", "--autoresearch-workers", "2", timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    recs = assert_clean_end(root, 2)
    assert {r["status"] for r in recs} == {"keep"}
    workers = {e["worker"] for r in recs for e in r["evaluations"]}
    assert workers <= {"r0", "r1"} and workers
    time.sleep(2.0)
    assert ray_holders(done.pid) == [], "the local Ray instance was left running"
    journal = root / ".autoresearch" / TAG / "experiments.jsonl"
    assert json.loads(journal.read_text().splitlines()[0])["executor"] == "ray"


def test_ray_driver_killed_then_resumed_leaves_no_ray_process(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    root = make_two_knobs(tmp_path, [step("x to 3", 3.0), ystep("y to 1", 1.0)])
    args = ("--autoresearch-ray", "local", "--autoresearch-workers", "2")
    killed = run_loop(root, 2, *args, env={"AUTORESEARCH_FAULT": "evaluation:1"}, timeout=900)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    done = run_loop(root, 2, *args, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert_clean_end(root, 2)
    time.sleep(2.0)
    # The killed driver's Ray agents outlived it; the resumed run reaped them.
    assert ray_holders(killed.pid) == []
    assert ray_holders(done.pid) == []


def test_lean_evaluations_on_workers_start_without_autoloaded_plugins(tmp_path: Path) -> None:
    root = make_two_knobs(tmp_path, [ystep("y to 1", 1.0)])
    program = (
        (root / "program.md")
        .read_text()
        .replace("baseline_runs: 2", "baseline_runs: 2\nlean: true")
    )
    (root / "program.md").write_text(program)
    # The guard fails unless the evaluation started with plugin autoloading off.
    (root / "tests" / "test_guard.py").write_text(
        "import os\n\n\ndef test_lean():\n"
        "    assert os.environ.get('PYTEST_DISABLE_PLUGIN_AUTOLOAD') == '1'\n"
    )
    git(root, "commit", "-qam", "lean")
    # Autoloading on in the driver: only lean mode can turn it off in the evaluations.
    autoload = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": ""}
    done = run_loop(root, 1, "--autoresearch-workers", "2", env=autoload)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "lean: evaluations load" in done.stdout
    (rec,) = assert_clean_end(root, 1)
    assert rec["status"] == "keep" and rec["guards"]["passed"] is True
