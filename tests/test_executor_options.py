"""--autoresearch-workers, --autoresearch-ray, their ini keys and program.md's keys, and the
pytest_autoresearch_make_executor hook: real option parsing (pytester), real git worktrees.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import toyproject

from pytest_autoresearch.executors.choose import WORKTREES_DIR, make_executor, worktree_folder
from pytest_autoresearch.executors.worktree import WorktreeExecutor
from pytest_autoresearch.program.options import ExecutorSettings, executor_settings
from pytest_autoresearch.program.program_md import Program
from pytest_autoresearch.sandbox.isolation import plain_launcher


def program(root: Path, **fields: object) -> Program:
    return Program(path=root / "program.md", editable=("knob.py",), objective="loss", **fields)


def git(root: Path, *args: str) -> str:
    return toyproject.git(root, *args, identity=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "knob.py").write_text("X = 1\n")
    (root / ".gitignore").write_text("data/\n")
    git(tmp_path, "init", "-q", "-b", "main", str(root))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "start")
    return root


# -- the options --------------------------------------------------------------------------


def test_workers_and_ray_from_the_command_line(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfigure("--autoresearch-workers", "4", "--autoresearch-ray", "auto")
    assert executor_settings(config, None) == ExecutorSettings(
        workers=4, ray="auto", gpus_per_worker=1, workers_from="--autoresearch-workers"
    )


@pytest.mark.parametrize(
    "address", ["local", "auto", "ray://head:10001", "head.example.org:6379", "10.0.0.7:6379"]
)
def test_the_ray_address_forms(pytester: pytest.Pytester, address: str) -> None:
    config = pytester.parseconfigure("--autoresearch-ray", address)
    settings = executor_settings(config, None)
    assert (settings.ray, settings.workers, settings.workers_from) == (
        address,
        None,
        "the Ray cluster",
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--autoresearch-workers", "four"], "expected a whole number of workers such as 4, got"),
        (["--autoresearch-workers", "0"], "expected a whole number of workers such as 4 (at"),
        (["--autoresearch-workers", "2.5"], "expected a whole number of workers such as 4"),
        (["--autoresearch-ray", "head"], "'head' is not a Ray address; use 'local'"),
        (["--autoresearch-ray", "http://head:80"], "'ray://HOST:PORT' or 'HOST:PORT'"),
        (["--autoresearch-ray", "head:99999"], "is not a Ray address"),
    ],
)
def test_bad_values_are_usage_errors_that_say_what_to_write(
    pytester: pytest.Pytester, args: list[str], words: str
) -> None:
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert words in result.stderr.str()


def test_ini_keys_and_their_errors(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nautoresearch_workers = 3\nautoresearch_ray = ray://h:10001\n")
    config = pytester.parseconfigure()
    assert executor_settings(config, None) == ExecutorSettings(3, "ray://h:10001", 1, "ini")
    pytester.makeini("[pytest]\nautoresearch_workers = lots\n")
    with pytest.raises(pytest.UsageError, match=r"autoresearch_workers = 'lots': expected a whole"):
        executor_settings(pytester.parseconfigure(), None)
    pytester.makeini("[pytest]\nautoresearch_ray = cluster\n")
    with pytest.raises(pytest.UsageError, match="autoresearch_ray = 'cluster': 'cluster' is not"):
        executor_settings(pytester.parseconfigure(), None)


def test_precedence_command_line_ini_program_default(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    six = program(tmp_path, workers=6, gpus_per_worker=2)
    assert executor_settings(pytester.parseconfigure(), None) == ExecutorSettings(
        1, None, 1, "default"
    )
    assert executor_settings(pytester.parseconfigure(), six) == ExecutorSettings(
        6, None, 2, "program.md"
    )
    # Under Ray, program.md's number still counts; only none at all leaves it to the cluster.
    config = pytester.parseconfigure("--autoresearch-ray", "local")
    assert executor_settings(config, six).workers == 6
    pytester.makeini("[pytest]\nautoresearch_workers = 3\n")
    assert executor_settings(pytester.parseconfigure(), six) == ExecutorSettings(3, None, 2, "ini")
    config = pytester.parseconfigure("--autoresearch-workers=5")
    assert executor_settings(config, six) == ExecutorSettings(5, None, 2, "--autoresearch-workers")


def test_where_the_number_came_from_survives_configure(pytester: pytest.Pytester) -> None:
    # Under --autoresearch, pytest_configure writes the ini value into config.option.
    pytester.makeini("[pytest]\nautoresearch_workers = 3\n")
    config = pytester.parseconfigure("--autoresearch")
    assert config.getoption("autoresearch_workers") == 3
    assert executor_settings(config, None).workers_from == "ini"


# -- the hook -----------------------------------------------------------------------------


def make(config: pytest.Config, settings: ExecutorSettings, root: Path, prog: Program):
    return config.hook.pytest_autoresearch_make_executor(
        config=config,
        settings=settings,
        root=root,
        launcher=plain_launcher(),
        record_dir=root / ".autoresearch" / "t",
        program=prog,
    )


def test_one_worker_evaluates_in_place(pytester: pytest.Pytester, repo: Path) -> None:
    config = pytester.parseconfigure()
    assert make(config, executor_settings(config, None), repo, program(repo)) is None


def test_two_workers_get_worktrees_at_head_outside_the_checkout(
    pytester: pytest.Pytester, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPUs: the cores are split instead
    (repo / "data").mkdir()
    (repo / "data" / "shard0.bin").write_bytes(b"\0" * 8)
    head = git(repo, "rev-parse", "HEAD")
    config = pytester.parseconfigure("--autoresearch-workers", "2")
    executor = make(config, executor_settings(config, None), repo, program(repo, shared=("data",)))
    try:
        assert isinstance(executor, WorktreeExecutor) and executor.capacity == 2
        folder = worktree_folder(repo)
        assert folder.parent.name == WORKTREES_DIR and len(folder.name) == 12
        assert repo not in folder.parents
        for space in executor.spaces:
            assert folder in space.root.parents
            assert git(space.root, "rev-parse", "HEAD") == head
            assert (space.root / "data" / "shard0.bin").read_bytes() == b"\0" * 8
        assert [env["AUTORESEARCH_WORKER"] for env in executor.envs] == ["w0", "w1"]
        assert all("CUDA_VISIBLE_DEVICES" not in env for env in executor.envs)
        kwargs = executor._kwargs
        assert kwargs["tmp_root"] == repo / ".autoresearch" / "t" / "tmp"
    finally:
        executor.shutdown()
    assert not folder.exists()  # the worktrees and then their folder are gone
    assert len(git(repo, "worktree", "list").splitlines()) == 1  # git forgot them too


@pytest.mark.parametrize(
    ("visible", "workers", "per_worker", "words"),
    [
        ("0", 2, 1, "2 workers with 1 GPU(s) each need 2 GPUs, and 1 are visible (0); "),
        ("0,1,2", 2, 2, "need 4 GPUs, and 3 are visible (0,1,2); use --autoresearch-workers 1"),
    ],
)
def test_too_few_gpus_is_a_usage_error_naming_the_workers_that_fit(
    pytester: pytest.Pytester,
    repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    visible: str,
    workers: int,
    per_worker: int,
    words: str,
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    config = pytester.parseconfigure("--autoresearch-workers", str(workers))
    prog = program(repo, gpus_per_worker=per_worker)
    with pytest.raises(pytest.UsageError) as exc:
        make(config, executor_settings(config, prog), repo, prog)
    assert str(exc.value).startswith(f"{workers} workers (--autoresearch-workers): ")
    assert words in str(exc.value)
    assert not worktree_folder(repo).exists() or not any(worktree_folder(repo).iterdir())


def test_one_gpu_each_is_pinned(repo: Path) -> None:
    settings = ExecutorSettings(2, None, 1, "program.md")
    executor = make_executor(settings, repo, plain_launcher(), repo, program(repo), gpus=["3", "5"])
    try:
        assert [env["CUDA_VISIBLE_DEVICES"] for env in executor.envs] == ["3", "5"]
    finally:
        executor.shutdown()


def test_a_shared_path_git_tracks_is_a_usage_error(repo: Path) -> None:
    settings = ExecutorSettings(2, None, 1, "default")
    with pytest.raises(pytest.UsageError, match="knob.py is tracked by git"):
        make_executor(settings, repo, None, repo, program(repo, shared=("knob.py",)), gpus=[])
    # The worktree made before the refusal is gone, and git forgot it.
    folder = worktree_folder(repo)
    assert not folder.exists() or not any(folder.iterdir())
    listed = subprocess.run(
        ["git", "worktree", "list"], cwd=repo, capture_output=True, text=True, check=True
    )
    assert len(listed.stdout.splitlines()) == 1


def test_a_plugin_provides_its_own_executor(pytester: pytest.Pytester, repo: Path) -> None:
    pytester.makeconftest(
        textwrap.dedent(
            """
            class Mine:
                capacity = 7
                def __init__(self, settings):
                    self.settings = settings

            def pytest_autoresearch_make_executor(config, settings, root, launcher,
                                                  record_dir, program):
                return Mine(settings)
            """
        )
    )
    config = pytester.parseconfigure("--autoresearch-workers", "3")
    mine = make(config, executor_settings(config, None), repo, program(repo))
    # firstresult: the plugin's answer; the built-in one (worktrees) never ran.
    assert type(mine).__name__ == "Mine" and mine.capacity == 7 and mine.settings.workers == 3
    assert not worktree_folder(repo).exists()


def test_ray_not_installed_says_how_to_install_it(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets without Ray
    settings = ExecutorSettings(2, "local", 1, "default")
    with pytest.raises(pytest.UsageError, match=r"pip install 'pytest-autoresearch\[ray\]'"):
        make_executor(settings, repo, None, repo, program(repo))


ISOLATION_METRIC = """
import os
from pytest_autoresearch import metric


@metric(goal="min")
def test_loss():
    probe = os.path.join(os.path.dirname(__file__), "..", ".git", "probe")
    try:
        open(probe, "w").close()
    except OSError:
        return 0.0  # .git is read-only to the evaluation: the node built the launcher
    return 1.0
"""


@pytest.mark.slow
def test_ray_without_a_number_takes_what_the_cluster_holds_and_isolates_on_the_node(
    repo: Path,
) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install '.[ray]')")
    from pytest_autoresearch.executors import Trial
    from pytest_autoresearch.executors.ray import RayExecutor

    (repo / "tests").mkdir()
    (repo / "tests" / "test_m.py").write_text(textwrap.dedent(ISOLATION_METRIC))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "metric")
    settings = ExecutorSettings(None, "local", 1, "the Ray cluster")
    executor = make_executor(settings, repo, None, repo, program(repo))  # sandbox: on
    try:
        assert isinstance(executor, RayExecutor)
        assert executor.capacity == int(ray.cluster_resources()["CPU"]) >= 1
        assert executor.num_gpus == 0  # no GPU here: the actors ask for none
        executor.submit(
            Trial(
                "t", git(repo, "rev-parse", "HEAD"), metric_args=("tests/test_m.py",),
                env_hints={"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}, required=("loss",),
                timeout=120,
            )
        )  # fmt: skip
        [result] = list(executor.as_completed())
        line = ray.get(executor.actors[0].describe.remote())
    finally:
        executor.shutdown()
    assert result.ok, result.error
    if "read-only" not in line:
        pytest.skip(f"no namespaces on this machine: {line}")
    assert result.evaluations[0].metrics["loss"].value == 0.0, result.evaluations[0].log_tail
