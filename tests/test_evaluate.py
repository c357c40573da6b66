"""evaluate.evaluate: real pytest subprocesses on small projects made in tmp_path."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import pytest

from pytest_autoresearch.sandbox import evaluate as ev_mod
from pytest_autoresearch.sandbox.evaluate import (
    KILL_GRACE,
    child_environment,
    evaluate,
    is_secret_name,
    read_metrics_json,
    scrub,
)

SECRET = "s3cr3t-value-for-tests-42"  # what the parent's API key holds
KEY_SHAPED = "sk-ant-api03-abcdefghijklmnopqrstuvwx"


def project(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text))
    return root


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")


@pytest.fixture
def no_autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip other installed pytest plugins in the worker: seconds faster on a busy machine.

    The worker still loads ours through ``-p autoresearch``; the ok run keeps autoload on.
    """
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYSVC_API_KEY", SECRET)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY_SHAPED)
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_" + "x" * 30)


# -- whole runs --------------------------------------------------------------------------

OK_PROJECT = {
    "test_metric.py": """
        import os
        from pytest_autoresearch import metric

        VALUES = iter([3.0, 1.0, 2.0])
        LEAKS = ("MYSVC_API_KEY", "ANTHROPIC_API_KEY", "GITHUB_TOKEN")


        @metric(goal="min", unit="bits/byte", repeat=3)
        def test_val_bpb():
            print("val_bpb: 0.1")  # a spoof: only the metrics file counts
            print("metric val_bpb 0.1 passed")
            return next(VALUES)


        @metric(goal="max")
        def test_worker_env():
            leaked = [k for k in LEAKS if k in os.environ]
            assert not leaked, f"the worker can see {leaked}"
            assert os.environ["AUTORESEARCH_EVAL"] == "1"
            with open("secret.txt") as fh:
                print("printing secrets:", fh.read(), "sk-ant-api03-abcdefghijklmnopqrstuvwx")
            return 1.0
    """,
    "test_guard.py": """
        def test_guard():
            assert 1 + 1 == 2
    """,
    "secret.txt": SECRET,
}


@pytest.mark.slow
def test_ok_run_reads_values_only_from_the_metrics_file(tmp_path: Path, secret_env: None) -> None:
    root = project(tmp_path / "proj", OK_PROJECT)
    ev = evaluate(root, ["test_metric.py"], ["test_guard.py"], 120, extra_args=["-s"])
    assert (ev.status, ev.reason, ev.returncode) == ("ok", "", 0), ev.log_tail
    bpb = ev.metrics["val_bpb"]
    assert (bpb.value, bpb.samples, bpb.goal, bpb.unit, bpb.error) == (
        2.0,
        [3.0, 1.0, 2.0],
        "min",
        "bits/byte",
        None,
    )
    assert ev.metrics["worker_env"].value == 1.0
    assert "val_bpb: 0.1" in ev.log_tail  # printed, and ignored
    assert ev.guards_passed and ev.failed_guards == []
    assert {t.nodeid: t.outcome for t in ev.tests} == {
        "test_metric.py::test_val_bpb": "passed",
        "test_metric.py::test_worker_env": "passed",
        "test_guard.py::test_guard": "passed",
    }
    assert "printing secrets: [REDACTED] [REDACTED]" in ev.log_tail
    assert SECRET not in ev.log_tail and KEY_SHAPED not in ev.log_tail
    assert 0 < ev.duration < 120
    assert not list(root.rglob("*.json")) and not list(root.rglob("*.log"))  # kept outside
    assert not (root / ".pytest_cache").exists()  # the cache went to a throwaway folder


CRASHES = {
    "nan": (
        """
        from pytest_autoresearch import metric

        @metric(goal="min")
        def test_val_bpb():
            return float("nan")
        """,
        ["val_bpb", "nan"],
    ),
    "exception": (
        """
        from pytest_autoresearch import metric

        def train():
            raise RuntimeError("CUDA out of memory (simulated)")

        @metric(goal="min")
        def test_val_bpb():
            return train()
        """,
        ["RuntimeError: CUDA out of memory (simulated)"],
    ),
    "syntax error": (
        """
        from pytest_autoresearch import metric

        @metric(goal="min")
        def test_val_bpb(:
            return 1.0
        """,
        ["SyntaxError"],
    ),
}


@pytest.mark.parametrize("case", list(CRASHES))
def test_a_broken_metric_is_a_crash_with_a_useful_reason(
    tmp_path: Path, case: str, no_autoload: None
) -> None:
    source, expected = CRASHES[case]
    root = project(tmp_path / "proj", {"test_metric.py": source})
    ev = evaluate(root, ["test_metric.py"], [], 120)
    assert ev.status == "crash", ev.log_tail
    assert "\n" not in ev.reason
    for text in expected:
        assert text in ev.reason, ev.reason
    assert expected[-1] in ev.log_tail
    assert ev.metrics.get("val_bpb") is None or ev.metrics["val_bpb"].value is None


@pytest.mark.slow
def test_failing_guard_is_not_a_crash_and_works_without_plugin_autoload(
    tmp_path: Path, secret_env: None
) -> None:
    root = project(
        tmp_path / "proj",
        {
            "test_metric.py": OK_PROJECT["test_metric.py"],
            "secret.txt": SECRET,
            "test_guards.py": """
                import pytest

                def test_fine():
                    pass

                def test_leaks_into_its_message():
                    secret = open("secret.txt").read()
                    assert secret == "expected", "tokenizer broke"

                @pytest.fixture
                def broken():
                    raise OSError("dataset missing")

                def test_setup_error(broken):
                    pass
            """,
        },
    )
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    ev = evaluate(root, ["test_metric.py"], ["test_guards.py"], 120, env=env)
    assert ev.status == "ok", ev.reason + "\n" + ev.log_tail
    assert ev.metrics["val_bpb"].value == 2.0
    assert not ev.guards_passed
    assert ev.failed_guards == [
        "test_guards.py::test_leaks_into_its_message",
        "test_guards.py::test_setup_error",
    ]
    assert ev.reason.startswith("guard test_guards.py::test_leaks_into_its_message failed: ")
    assert "tokenizer broke" in ev.reason
    assert ev.returncode == 1
    texts = [ev.log_tail, ev.reason] + [t.message or "" for t in ev.tests]
    assert not [t for t in texts if SECRET in t]
    assert any("[REDACTED]" in (t.message or "") for t in ev.tests)


@pytest.mark.slow
def test_a_hang_is_killed_at_the_timeout_with_its_grandchildren(
    tmp_path: Path, no_autoload: None
) -> None:
    root = project(
        tmp_path / "proj",
        {
            "test_hang.py": """
                import subprocess, sys, time
                from pathlib import Path
                from pytest_autoresearch import metric

                STUBBORN = (
                    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                    "time.sleep(600)"
                )

                @metric(goal="min")
                def test_train():
                    child = subprocess.Popen([sys.executable, "-c", STUBBORN])
                    Path("grandchild.pid").write_text(str(child.pid))
                    print("training...", flush=True)
                    time.sleep(600)
                    return 1.0
            """
        },
    )
    timeout = 5.0
    t0 = time.monotonic()
    ev = evaluate(root, ["test_hang.py"], [], timeout)
    elapsed = time.monotonic() - t0
    assert ev.status == "timeout", ev.log_tail
    assert ev.reason == "timed out after 5s"
    assert timeout <= elapsed < timeout + KILL_GRACE + 3
    pid = int((root / "grandchild.pid").read_text())
    deadline = time.monotonic() + 5  # init reaps the orphan in its own time
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)
    assert ev.metrics == {}


def test_selecting_no_tests_is_a_crash_that_says_so(tmp_path: Path, no_autoload: None) -> None:
    root = project(tmp_path / "proj", {"test_metric.py": OK_PROJECT["test_metric.py"]})
    ev = evaluate(root, ["test_metric.py::test_missing"], [], 120)
    assert ev.status == "crash"
    assert "test_missing" in ev.reason, ev.reason


# -- pieces ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("ANTHROPIC_API_KEY", True),
        ("OPENAI_BASE_URL", False),  # not scrubbed from text, but kept from the child
        ("MYSVC_API_KEY", True),
        ("GITHUB_TOKEN", True),
        ("HF_TOKEN", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("DB_PASSWORD", True),
        ("SIGNING_KEY", True),
        ("PATH", False),
        ("HOME", False),
        ("TOKENIZERS_PARALLELISM", False),
        ("PYTHONHASHSEED", False),
        ("CUDA_VISIBLE_DEVICES", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_child_environment_drops_secrets_and_proposer_config_and_marks_the_evaluation() -> None:
    base = {"PATH": "/bin", "OPENAI_API_KEY": "k", "X_TOKEN": "t", "OPENAI_BASE_URL": "http://x"}
    assert child_environment(base) == {"PATH": "/bin", "AUTORESEARCH_EVAL": "1"}


def test_scrub_hides_known_values_and_key_shapes() -> None:
    text = f"key={SECRET} auth: Bearer abcdefghijklmnop123 {KEY_SHAPED} ghp_{'a' * 36} ok"
    assert scrub(text, [SECRET]) == ("key=[REDACTED] auth: [REDACTED] [REDACTED] [REDACTED] ok")


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "the worker wrote no metrics file"),
        ("{not json", "not valid JSON"),
        ({"version": 2, "metrics": []}, "has version 2, expected 1"),
        ({"version": 1}, "no 'metrics' list"),
    ],
)
def test_bad_metrics_files_are_explained(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "m.json"
    if content is not None:
        _write(path, content)
    with pytest.raises(ValueError, match=message):
        read_metrics_json(path)


def _doc(metrics: list[dict], tests: list[dict]) -> dict:
    return {"version": 1, "exitstatus": 1, "metrics": metrics, "tests": tests}


def _interpret(tmp_path: Path, doc: dict, required: tuple[str, ...] = ()) -> ev_mod.Evaluation:
    return ev_mod._interpret(doc, "", 1, 0.5, "E   boom\nlast line", required, [SECRET])


def test_metric_test_failing_without_a_metric_entry_is_a_crash(tmp_path: Path) -> None:
    ok = {"name": "loss", "value": 1.0, "samples": [1.0], "goal": "min", "nodeid": "t.py::a"}
    tests = [
        {"nodeid": "t.py::a", "outcome": "passed", "metric": True, "duration": 1},
        {"nodeid": "t.py::b", "outcome": "failed", "metric": True, "message": "E   KeyError: 'x'"},
    ]
    ev = _interpret(tmp_path, _doc([ok], tests))
    assert (ev.status, ev.reason) == ("crash", "t.py::b failed: KeyError: 'x'")
    assert ev.failed_guards == []


def test_required_metric_missing_is_a_crash(tmp_path: Path) -> None:
    ok = {"name": "loss", "value": 1.0, "samples": [1.0], "goal": "min"}
    ev = _interpret(tmp_path, _doc([ok], []), required=("val_bpb",))
    assert ev.status == "crash"
    assert ev.reason == "metric val_bpb: no value reported (boom)"
    assert _interpret(tmp_path, _doc([ok], []), required=("loss",)).status == "ok"


def test_non_finite_values_in_the_file_are_not_values(tmp_path: Path) -> None:
    doc = json.loads(
        '{"version": 1, "metrics": [{"name": "loss", "value": '
        'Infinity, "samples": [Infinity]}], "tests": []}',
    )
    ev = ev_mod._interpret(doc, "", 0, 0.1, "", (), [])
    assert ev.status == "crash"
    assert ev.metrics["loss"].value is None
    assert ev.reason == "metric loss: returned inf"


# -- the user's addopts (issue 12, item 16) ------------------------------------------------

ADDOPTS_PROJECT = {
    "test_metric.py": """
        import os
        from pytest_autoresearch import metric

        @metric(goal="min")
        def test_loss():
            # In the evaluation's own process: no xdist worker ran it.
            assert "PYTEST_XDIST_WORKER" not in os.environ
            return 2.5
    """,
    "test_guard.py": """
        def test_guard():
            pass
    """,
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("ini", "env_addopts"),
    [
        ("-p xdist.plugin -n auto", ""),
        ("-p xdist.plugin -n 4 --dist load", ""),
        ("-p xdist.plugin", "-n 3"),
        ("--ff", ""),
        ("-p xdist.plugin --lf --sw -n 2", ""),
    ],
)
def test_user_addopts_do_not_break_or_distribute_an_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ini: str, env_addopts: str
) -> None:
    # Autoload off (speed): xdist comes in through -p as addopts would bring it in.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("PYTEST_ADDOPTS", env_addopts)
    files = {**ADDOPTS_PROJECT, "pytest.ini": f"[pytest]\naddopts = {ini}\n"}
    root = project(tmp_path / "proj", files)
    tmp_root = tmp_path / "record" / "tmp"
    ev = evaluate(root, ["test_metric.py"], ["test_guard.py"], 120, tmp_root=tmp_root)
    assert (ev.status, ev.reason) == ("ok", ""), ev.log_tail
    assert ev.metrics["loss"].value == 2.5 and ev.guards_passed
    assert "gw0" not in ev.log_tail and "workers" not in ev.log_tail, ev.log_tail
    assert not (root / ".pytest_cache").exists()
    assert list(tmp_root.iterdir()) == []  # the log and the throwaway cache are gone


# -- isolated evaluations, temp folders ----------------------------------------------------


@pytest.mark.slow
def test_an_isolated_evaluation_reports_through_the_hidden_record(tmp_path: Path) -> None:
    from pytest_autoresearch.sandbox.isolation import for_research

    root = project(tmp_path / "proj", ADDOPTS_PROJECT)
    (root / ".git").mkdir()  # read-only inside; an empty one is enough here
    record = root / ".autoresearch" / "t1"
    launcher = for_research(root, record)
    if launcher.name != "namespaces":
        pytest.skip(launcher.describe())
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    ev = evaluate(root, ["test_metric.py"], ["test_guard.py"], 120, launcher=launcher,
                  tmp_root=record / "tmp", env=env)  # fmt: skip
    assert (ev.status, ev.metrics["loss"].value) == ("ok", 2.5), ev.log_tail
    assert "passed" in ev.log_tail  # the parent's log fd works although its path is hidden
    assert list((record / "tmp").iterdir()) == []


@pytest.mark.slow
def test_an_isolated_hang_is_killed_with_its_escaped_daemon(tmp_path: Path) -> None:
    from pytest_autoresearch.sandbox.isolation import IsolationSpec, make_launcher

    launcher = make_launcher(IsolationSpec())
    if launcher.name != "namespaces":
        pytest.skip(launcher.describe())
    marker = tmp_path / "daemon-alive"
    root = project(
        tmp_path / "proj",
        {
            "test_hang.py": f"""
                import subprocess, sys, time
                from pytest_autoresearch import metric

                DAEMON = (
                    "import os, time, pathlib; os.setsid(); time.sleep(4); "
                    "pathlib.Path({str(marker)!r}).write_text('still here')"
                )

                @metric(goal="min")
                def test_train():
                    subprocess.Popen([sys.executable, "-c", DAEMON])  # leaves the process group
                    time.sleep(600)
                    return 1.0
            """
        },
    )
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    ev = evaluate(root, ["test_hang.py"], [], 2, launcher=launcher, env=env)
    assert ev.status == "timeout", ev.log_tail
    time.sleep(4)
    assert not marker.exists()  # it died with the namespace, though it had left the group


def test_cleanup_stale_removes_only_dead_runs_folders(tmp_path: Path) -> None:
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    (tmp_path / f"eval-{dead}-abc").mkdir()
    (tmp_path / f"eval-{dead}-abc" / "output.log").write_text("left by a kill -9")
    (tmp_path / f"eval-{os.getppid()}-def").mkdir()  # a live process's: still in use
    (tmp_path / "eval-notapid").mkdir()
    (tmp_path / "other").mkdir()
    assert ev_mod.cleanup_stale(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"eval-{os.getppid()}-def",
        "eval-notapid",
        "other",
    ]
    assert ev_mod.cleanup_stale(tmp_path / "missing") == 0
