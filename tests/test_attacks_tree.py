"""Attacks on the tree through the real loop (issue 12): each would have been kept as a 0 loss.

Every test builds the toy project (``toyproject.py``: loss = abs(X - 3), a scripted
proposer), lets the proposer or the editable code it writes try one cheat per experiment,
and then checks three things: the cheat is not kept (rejected, with a reason naming the
file), the next honest experiment is measured on a clean tree, and the user's branch,
files and ``.git`` end exactly as they started.

The project lives in ``proj/`` below pytester's directory so the inner run's stdout files
are not part of the tree. Evaluation isolation is switched off (``sandbox: off``) in most
tests: what is tested here is the fingerprint layer, which must hold on systems without
namespaces too.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from toyproject import git, make_toy, model_source, read_jsonl, step

pytestmark = pytest.mark.slow

RECORD = Path(".autoresearch") / "t1"
SKIP_DIRS = {".autoresearch", "__pycache__", ".git", ".pytest_cache"}  # the last: pytest's own

# Editable code run at import inside the evaluation: the root is toy/'s parent.
SECRET = "sk-ant-api03-not-a-real-key-but-secret"
ROOT = "from pathlib import Path as _P\n_ROOT = _P(__file__).resolve().parents[1]\n"


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """The suite's pytester (tests/conftest.py), with a git config of our own."""
    empty = pytester.path / "gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    return pytester


def project(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    steps: list[dict],
    *,
    editable: str = '["toy/model.py"]',
    files: dict[str, str] | None = None,
    ignore: str = "",
    sandbox: bool = False,
    name: str = "proj",
) -> Path:
    """The toy project in ``pytester.path/name``, with changes committed; cwd is set to it."""
    root = pytester.path / name
    root.mkdir()
    make_toy(root, steps)
    program = (root / "program.md").read_text()
    program = program.replace('editable: ["toy/model.py"]', f"editable: {editable}")
    if not sandbox:
        program = program.replace("baseline_runs: 2\n", "baseline_runs: 2\nsandbox: off\n")
    (root / "program.md").write_text(program)
    for rel, text in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    if ignore:
        with open(root / ".gitignore", "a") as fh:
            fh.write(ignore)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "project setup")
    monkeypatch.chdir(root)
    return root


def run(pytester: pytest.Pytester, n: int) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "--autoresearch", "-n", str(n), "--autoresearch-tag", "t1",
        "--autoresearch-proposer", "scripted", "-p", "no:randomly", timeout=240,
    )  # fmt: skip


def experiments(root: Path) -> list[dict]:
    return [
        e for e in read_jsonl(root / RECORD / "experiments.jsonl") if e["event"] == "experiment"
    ]


def state(root: Path) -> dict:
    """Everything of the user's: files (ignored ones too), git's hooks/config/index flags, refs."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for name in filenames:
            path = Path(dirpath) / name
            if not name.endswith(".pyc"):
                files[path.relative_to(root).as_posix()] = hashlib.sha1(
                    path.read_bytes()
                ).hexdigest()
    gitdir = root / ".git"
    hooks = sorted(p.name for p in (gitdir / "hooks").iterdir())
    return {
        "files": files,
        "hooks": hooks,
        "config": (gitdir / "config").read_text(),
        "flags": git(root, "ls-files", "-v"),
        "refs": git(root, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/main"),
        "head": git(root, "rev-parse", "--abbrev-ref", "HEAD"),
    }


def assert_ends_as_it_started(root: Path, before: dict) -> None:
    after = state(root)
    assert after == before


def script(lines: str) -> str:
    """Editable code for model.py's tail: run once at import, never fail the import."""
    body = "".join("    " + line + "\n" for line in lines.strip().splitlines())
    return ROOT + "try:\n" + body + "except OSError:\n    pass\n"


# -- what the evaluation writes ---------------------------------------------------------


METRIC_WITH_DATA = """
from pathlib import Path

from pytest_autoresearch import metric

import toy.model as model


@metric(goal="min")
def test_loss():
    scale = float((Path(__file__).parents[1] / "data" / "scale.txt").read_text())
    return abs(model.X - 3.0) * scale
"""

RIGGING_CONFTEST = """
import toy.model


def pytest_configure(config):
    toy.model.X = 3.0
"""


def test_evaluation_cannot_rig_data_plant_a_conftest_rewrite_itself_or_write_outputs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig_data = script("(_ROOT / 'data' / 'scale.txt').write_text('0')")
    plant = script(f"(_ROOT / 'tests' / 'conftest.py').write_text({RIGGING_CONFTEST!r})")
    # Measured with X = 3 (loss 0), but what would be committed says X = 50.
    rewrite = script(
        "_f = _ROOT / 'toy' / 'model.py'\n"
        "_f.write_text(_f.read_text().replace('X = 3.0', 'X = 50.0', 1))"
    )
    checkpoint = script("(_ROOT / 'toy' / 'ckpt.bin').write_bytes(bytes(2 << 20))")
    root = project(
        pytester,
        monkeypatch,
        [
            step("data", 10.0, extra=rig_data),
            step("plant", 10.0, extra=plant),
            step("rewrite", 3.0, extra=rewrite),
            step("checkpoint", 4.0, extra=checkpoint),
            step("move X to 5", 5.0),
        ],
        editable='["toy/**"]',
        files={"tests/test_metric.py": METRIC_WITH_DATA, "data/scale.txt": "1"},
        ignore="data/\n",
    )
    before = state(root)
    result = run(pytester, 5)
    assert result.ret == 0, result.stdout.str()
    recs = experiments(root)
    assert [r["status"] for r in recs] == ["rejected"] * 4 + ["keep"], [r["reason"] for r in recs]
    assert "data/scale.txt (changed by the evaluation)" in recs[0]["reason"]
    assert "tests/conftest.py (new code file" in recs[1]["reason"]
    assert "toy/model.py (changed by the evaluation)" in recs[2]["reason"]
    assert "toy/ckpt.bin (new file inside the editable set" in recs[3]["reason"]
    # The honest experiment was measured on a clean tree: no rigged scale, no conftest.
    assert recs[4]["objective"] == 2.0 and recs[4]["best_after"] == 2.0
    assert git(root, "log", "--format=%s", "main..autoresearch/t1").splitlines() == ["move X to 5"]
    assert git(root, "show", "--name-only", "--format=", "autoresearch/t1") == "toy/model.py"
    assert_ends_as_it_started(root, before)
    assert (root / "data" / "scale.txt").read_text() == "1"


# -- git's own files --------------------------------------------------------------------


def test_hooks_config_and_index_flags_written_by_experiments_never_act(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    marker = tmp_path / "hook-ran"
    # What a hook is after: the loop's environment, with the proposer's API key in it.
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    hook = f'#!/bin/sh\necho "$0 key=$ANTHROPIC_API_KEY" >> {marker}\n'
    plant_hooks = script(
        "import os\n"
        "for _n in ('post-commit', 'reference-transaction', 'post-checkout', 'pre-commit'):\n"
        f"    _h = _ROOT / '.git' / 'hooks' / _n\n"
        f"    _h.write_text({hook!r})\n"
        "    os.chmod(_h, 0o755)\n"
        "with open(_ROOT / '.git' / 'config', 'a') as _c:\n"
        f"    _c.write('[core]\\n\\tfsmonitor = {marker.parent / 'fsmon.sh'}\\n')"
    )
    (marker.parent / "fsmon.sh").write_text(hook)
    os.chmod(marker.parent / "fsmon.sh", 0o755)
    hide_test = script(
        "import subprocess\n"
        "subprocess.run(['git', 'update-index', '--skip-worktree', 'tests/test_metric.py'],"
        " cwd=_ROOT, check=True)\n"
        "_t = _ROOT / 'tests' / 'test_metric.py'\n"
        "_t.write_text(_t.read_text().replace('abs(model.X - 3.0)', '0.0'))"
    )
    lock = script("(_ROOT / '.git' / 'index.lock').write_text('')")
    root = project(
        pytester,
        monkeypatch,
        [
            step("hooks", 10.0, extra=plant_hooks),
            step("hide a rewritten test", 10.0, extra=hide_test),
            step("leave a lock", 10.0, extra=lock),
            step("hook by the proposer", files={".git/hooks/post-checkout": hook}),
            step("move X to 5", 5.0),
        ],
    )
    before = state(root)
    result = run(pytester, 5)
    assert result.ret == 0, result.stdout.str()
    recs = experiments(root)
    assert [r["status"] for r in recs] == ["rejected"] * 4 + ["keep"], [r["reason"] for r in recs]
    assert ".git/hooks/post-commit" in recs[0]["reason"] and ".git/config" in recs[0]["reason"]
    assert "tests/test_metric.py" in recs[1]["reason"]
    assert ".git/index.lock" in recs[2]["reason"]
    assert ".git/hooks/post-checkout" in recs[3]["reason"]
    assert recs[4]["objective"] == 2.0
    # No hook or fsmonitor ever ran from the loop's git commands. (The evaluation's own
    # process may run the fsmonitor it planted, through its own git status: that is
    # experiment code, with no key in its environment.)
    ran = marker.read_text() if marker.exists() else ""
    assert SECRET not in ran, ran
    assert "hooks/" not in ran, ran
    assert_ends_as_it_started(root, before)  # hooks, config and flags as they were
    assert git(root, "ls-files", "-v", "tests/test_metric.py").startswith("H ")


# -- nested repositories ----------------------------------------------------------------


def test_a_nested_repository_under_an_editable_glob_stays_out_of_reach(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = pytester.path / "proj"
    lib = root / "vendor" / "lib"
    lib.mkdir(parents=True)
    (lib / "src.py").write_text("VALUE = 1\n")
    git(lib, "init", "-q", "-b", "main")
    git(lib, "-c", "user.name=L", "-c", "user.email=l@x", "add", "-A")
    git(lib, "-c", "user.name=L", "-c", "user.email=l@x", "commit", "-qm", "lib")
    (root / "vendor" / "util.py").write_text("U = 1\n")
    hook = "#!/bin/sh\nexit 0\n"
    write_nested = script("(_ROOT / 'vendor' / 'lib' / 'src.py').write_text('VALUE = 2\\n')")
    project_root = _project_in(
        pytester,
        monkeypatch,
        root,
        [
            step("nested hook", files={"vendor/lib/.git/hooks/post-commit": hook}),
            step("nested file", 10.0, extra=write_nested),
            step("move X to 5", 5.0),
        ],
    )
    before = state(project_root)
    lib_before = git(lib, "rev-parse", "HEAD")
    result = run(pytester, 3)
    assert result.ret == 0, result.stdout.str()
    recs = experiments(project_root)
    assert [r["status"] for r in recs] == ["rejected", "rejected", "keep"], [
        r["reason"] for r in recs
    ]
    assert "vendor/lib/.git/hooks/post-commit" in recs[0]["reason"]
    assert "vendor/lib/src.py" in recs[1]["reason"]
    assert_ends_as_it_started(project_root, before)
    assert not (lib / ".git" / "hooks" / "post-commit").exists()
    assert git(lib, "status", "--porcelain") == "" and git(lib, "rev-parse", "HEAD") == lib_before
    again = run(pytester, 4)  # the next start is not refused
    assert again.ret == 0, again.stdout.str()


def _project_in(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, root: Path, steps: list[dict]
) -> Path:
    make_toy(root, steps)
    program = (root / "program.md").read_text()
    program = program.replace(
        'editable: ["toy/model.py"]', 'editable: ["toy/model.py", "vendor/**"]'
    )
    (root / "program.md").write_text(
        program.replace("baseline_runs: 2\n", "baseline_runs: 2\nsandbox: off\n")
    )
    git(root, "add", "-A")
    git(root, "commit", "-qm", "with vendor")
    monkeypatch.chdir(root)
    return root


# -- what the globs may cover -----------------------------------------------------------


def test_globs_never_reach_the_measurement_conftest_or_ignored_files(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project(
        pytester,
        monkeypatch,
        [
            step(
                "rewrite the metric test",
                files={"tests/test_metric.py": "def test_loss():\n    pass\n"},
            ),
            step("shout a conftest", 10.0, files={"toy/CONFTEST.PY": "X = 1\n"}),
            step("edit an ignored file", files={"toy/local_cfg.py": "OFFSET = -7\n"}),
            step("move X to 5", 5.0),
        ],
        editable='["**/*.py"]',
        files={"toy/local_cfg.py": "OFFSET = 0\n"},
        ignore="toy/local_*.py\n",
    )
    before = state(root)
    result = run(pytester, 4)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*program.md line 2: editable glob '**/*.py' covers conftest.py (a conftest file)*",
            "*covers tests/test_guard.py (a guard)*",
            "*program.md line 2: editable glob '**/*.py' covers tests/test_metric.py "
            "(a metric test); it stays protected*",
            "*not editable, ignored by git: toy/local_cfg.py*",
        ]
    )
    recs = experiments(root)
    assert [r["status"] for r in recs] == ["rejected", "rejected", "rejected", "keep"], [
        r["reason"] for r in recs
    ]
    assert "tests/test_metric.py" in recs[0]["reason"]
    assert "toy/CONFTEST.PY" in recs[1]["reason"]
    assert "toy/local_cfg.py" in recs[2]["reason"]
    assert (root / "toy" / "local_cfg.py").read_text() == "OFFSET = 0\n"
    assert_ends_as_it_started(root, before)


# -- bad input --------------------------------------------------------------------------


def _lock(root: Path) -> str:
    (root / ".git" / "index.lock").write_text("")
    return "another git process is running in"


def _no_commits(root: Path) -> str:
    subprocess.run(["rm", "-rf", str(root / ".git")], check=True)
    git(root, "init", "-q", "-b", "main")
    return "has no commits yet; commit your code first"


def _skip_worktree(root: Path) -> str:
    git(root, "update-index", "--skip-worktree", "tests/test_metric.py")
    return "tests/test_metric.py (skip-worktree)"


def _dirty_submodule(root: Path) -> str:
    lib = root / "vendor" / "lib"
    lib.mkdir(parents=True)
    (lib / "a.py").write_text("A = 1\n")
    git(lib, "init", "-q", "-b", "main")
    git(lib, "-c", "user.name=L", "-c", "user.email=l@x", "add", "-A")
    git(lib, "-c", "user.name=L", "-c", "user.email=l@x", "commit", "-qm", "lib")
    git(root, "add", "vendor/lib")
    git(root, "commit", "-qm", "embed lib")
    (lib / "a.py").write_text("A = 2\n")
    return "the submodule vendor/lib has uncommitted changes"


@pytest.mark.parametrize("fault", [_lock, _no_commits, _skip_worktree, _dirty_submodule])
def test_a_bad_repository_state_is_one_clear_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, fault
) -> None:
    root = project(pytester, monkeypatch, [step("move X to 5", 5.0)])
    expected = fault(root)
    result = run(pytester, 1)
    out = result.stdout.str() + result.stderr.str()
    assert result.ret != 0
    assert expected in out, out
    assert "Traceback" not in out and "INTERNALERROR" not in out
    assert (
        "autoresearch/t1"
        not in subprocess.run(
            ["git", "branch", "--list"], cwd=root, capture_output=True, text=True
        ).stdout
    )


def test_spaces_non_ascii_and_a_detached_head_run_correctly(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project(pytester, monkeypatch, [step("move X to 5", 5.0)], name="my proj é")
    sha = git(root, "rev-parse", "HEAD")
    git(root, "checkout", "-q", "--detach", "HEAD")
    before = state(root)
    result = run(pytester, 1)
    assert result.ret == 0, result.stdout.str()
    assert [r["status"] for r in experiments(root)] == ["keep"]
    assert git(root, "rev-parse", "HEAD") == sha
    assert_ends_as_it_started(root, before)
    assert model_source(5.0) == git(root, "show", "autoresearch/t1:toy/model.py") + "\n"
