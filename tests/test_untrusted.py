"""run_untrusted: hidden paths, limits measured by the harness, output and resource use.

Each attack has its control: the same child without the defence (the path not hidden, no
limit) shows that the attack would work.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from pytest_autoresearch import run_untrusted
from pytest_autoresearch.sandbox.isolation import IsolationSpec, make_launcher
from pytest_autoresearch.sandbox.untrusted import UntrustedError, UntrustedResult

namespaces = pytest.mark.skipif(
    make_launcher(IsolationSpec()).name != "namespaces",
    reason="no namespaces here: " + make_launcher(IsolationSpec()).describe(),
)

READ_KEY = """
import sys
try:
    print(open(sys.argv[1]).read())
except OSError as exc:
    print("refused:", exc.strerror)
"""


@pytest.fixture
def answer_key(tmp_path: Path) -> Path:
    key = tmp_path / "data" / "val" / "labels.txt"
    key.parent.mkdir(parents=True)
    key.write_text("the answers 42")
    return key


@namespaces
def test_a_hidden_path_cannot_be_opened_and_the_control_can(
    tmp_path: Path, answer_key: Path
) -> None:
    cmd = [sys.executable, "-c", READ_KEY, str(answer_key)]
    control = run_untrusted(cmd, cwd=tmp_path)
    assert control.ok and "the answers 42" in control.stdout, control
    hidden = run_untrusted(cmd, cwd=tmp_path, hide=["data/val"])
    assert hidden.ok, hidden
    assert "the answers 42" not in hidden.stdout
    assert "refused: No such file or directory" in hidden.stdout, hidden.stdout
    assert hidden.isolation.startswith("isolation: own PID and mount namespace")
    assert answer_key.read_text() == "the answers 42"  # hidden inside, untouched outside


BURN = """
import os, sys, time
def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
if sys.argv[1] == "fork":  # the work split over a child that leaves the process group
    if os.fork() == 0:
        os.setsid()
        burn(30)
        os._exit(0)
burn(30 if sys.argv[1] != "lie" else 1.5)
print("cpu_seconds 0.01")  # what the child says about itself
"""


@pytest.mark.parametrize("how", ["plain", "fork"])
def test_a_child_past_its_cpu_limit_is_stopped_by_the_harness(tmp_path: Path, how: str) -> None:
    start = time.monotonic()
    result = run_untrusted(
        [sys.executable, "-c", BURN, how], cwd=tmp_path, cpu_limit=1.0, wall_limit=20
    )
    assert result.status == "cpu_limit", result
    assert result.returncode is None and not result.ok
    assert 1.0 < result.cpu_s < 4.0, result  # measured here: the whole tree, children too
    assert "CPU time" in result.reason and "1s limit" in result.reason
    assert time.monotonic() - start < 8  # stopped, not run for 30 s


def test_a_child_lying_about_its_time_changes_nothing(tmp_path: Path) -> None:
    result = run_untrusted([sys.executable, "-c", BURN, "lie"], cwd=tmp_path, cpu_limit=10)
    assert result.ok and "cpu_seconds 0.01" in result.stdout, result
    assert result.cpu_s >= 1.4, result  # the harness's measurement, not the child's word
    tight = run_untrusted([sys.executable, "-c", BURN, "lie"], cwd=tmp_path, cpu_limit=0.5)
    assert tight.status == "cpu_limit" and tight.cpu_s > 0.5, tight


def test_wall_clock_limit_output_and_a_failed_exit(tmp_path: Path) -> None:
    slow = run_untrusted([sys.executable, "-c", "import time; time.sleep(30)"], wall_limit=0.5)
    assert slow.status == "wall_limit" and 0.5 <= slow.wall_s < 5, slow
    assert slow.cpu_s < 0.5  # sleeping costs no CPU: the two limits measure different things
    code = "import sys; print('out'); print('boom', file=sys.stderr); sys.exit(3)"
    failed = run_untrusted([sys.executable, "-c", code], cwd=tmp_path)
    assert isinstance(failed, UntrustedResult)
    assert (failed.status, failed.returncode, failed.stdout) == ("failed", 3, "out\n")
    assert failed.stderr == "boom\n" and failed.reason == "exited with 3: boom"
    assert failed.max_rss_mb > 1


@namespaces
def test_it_writes_only_its_folder_and_a_fresh_home(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    work = tmp_path / "work"
    work.mkdir()
    code = f"""
import os, pathlib
for path in ({str(outside)!r}, "out.txt", os.path.expanduser("~/planted"), "/tmp/planted-x"):
    try:
        pathlib.Path(path).write_text("x")
        print("wrote", path)
    except OSError as exc:
        print("refused", path, exc.strerror)
print("home", os.environ["HOME"])
"""
    result = run_untrusted([sys.executable, "-c", code], cwd=work)
    assert f"refused {outside} Read-only file system" in result.stdout, result.stdout
    assert "refused /tmp/planted-x Read-only file system" in result.stdout
    assert "wrote out.txt" in result.stdout and (work / "out.txt").exists()
    assert "wrote " + result.stdout.split("home ")[1].strip() + "/planted" in result.stdout
    assert not outside.exists()


def test_hiding_without_namespaces_is_refused(
    tmp_path: Path, answer_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_autoresearch.sandbox import isolation

    monkeypatch.setattr(isolation, "_namespaces_unavailable", lambda: "a test says so")
    monkeypatch.setattr(isolation, "_CACHE", {})
    with pytest.raises(UntrustedError, match="cannot hide .*a test says so"):
        run_untrusted([sys.executable, "-c", "pass"], cwd=tmp_path, hide=[answer_key])
    # Without hidden paths it still runs, measured and reaped, and says how.
    result = run_untrusted([sys.executable, "-c", "print(1)"], cwd=tmp_path, cpu_limit=5)
    assert result.ok and result.stdout == "1\n" and "NONE" in result.isolation, result
