"""Workers find what the serial run finds: the files git ignores in the user's checkout.

A metric that reads a gitignored ``data/values.txt`` (the usual layout of an ML project)
must measure the same in the user's checkout, in a worktree worker and on a Ray worker on
this machine, with no program.md line. The workers' checkouts link those files (never
copy them), leave out git's and the loop's own files, caches, virtualenvs, nested
repositories and anything editable, and an evaluation cannot write through a link.
Everything here is real: git repositories in tmp_path, pytest subprocesses, namespaces, Ray.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from toyproject import git, make_toy, model_source, read_jsonl, step

from pytest_autoresearch.executors.base import Trial
from pytest_autoresearch.executors.worktree import MIRROR_MAX, WorktreeExecutor, plan_links
from pytest_autoresearch.vcs.workspace import MissingLinkError, Workspace, make_bundle

TAG = "ign"
IGNORE = (
    ".autoresearch/\n__pycache__/\n*.flag\ndata/\nbig/\nweights.bin\n.venv/\n"
    "nested/\n.pytest_cache/\nlocal_model.py\noutputs/\n"
)
# The metric reads the ignored dataset; its value is part of the loss.
METRIC = """
from pathlib import Path

from pytest_autoresearch import metric

import toy.model as model

DATA = Path(__file__).parent.parent / "data" / "values.txt"


@metric(goal="min")
def test_loss():
    return abs(model.X - 3.0) + float(DATA.read_text())
"""
# Tries to change the user's copy through the links, three ways; reports how many the
# read-only mount refused.
ATTACK = """
import errno, os
from pathlib import Path

from pytest_autoresearch import metric

HERE = Path(__file__).parent.parent


def _attempts():
    data = HERE / "data" / "values.txt"
    yield lambda: data.write_text("999\\n")  # through the file's link
    yield lambda: open(os.path.realpath(data), "a").write("9")  # at the resolved path
    yield lambda: (HERE / "big" / "planted.txt").write_text("x")  # into a linked folder
    # Outside any checkout, beside the project (the read-only world, on Ray nodes too).
    yield lambda: (HERE.parent / "planted-outside.txt").write_text("x")


@metric(goal="max")
def test_refused():
    refused = 0
    for attempt in _attempts():
        try:
            attempt()
        except OSError as exc:
            refused += exc.errno == errno.EROFS
    return float(refused)


@metric(goal="min")
def test_loss():
    return float((HERE / "data" / "values.txt").read_text())
"""
HINTS = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # only our plugin in the evaluations


def make_project(root: Path, steps: list[dict]) -> Path:
    """The toy project whose metric reads a gitignored data/values.txt (0.5)."""
    make_toy(root, steps)
    (root / ".gitignore").write_text(IGNORE)
    (root / "tests" / "test_metric.py").write_text(METRIC)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "the metric reads data/")
    (root / "data").mkdir()
    (root / "data" / "values.txt").write_text("0.5\n")
    return root


def add_ignored_things(root: Path) -> None:
    """Everything a real checkout holds beside its dataset, ignored by git."""
    with open(root / "weights.bin", "wb") as fh:
        fh.truncate(1 << 30)  # 1 GiB, sparse: costs no disk, would cost a copy
    (root / "big").mkdir()
    for i in range(MIRROR_MAX + 1):  # more entries than a folder that is mirrored
        (root / "big" / f"{i}.txt").write_text(str(i))
    (root / ".venv" / "lib").mkdir(parents=True)
    (root / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    git(root, "init", "-q", "nested")  # a repository of its own
    (root / ".pytest_cache").mkdir()
    (root / ".pytest_cache" / "CACHEDIR.TAG").write_text(
        "Signature: 8a477f597d28d172789f06886806bc55"
    )
    (root / ".autoresearch" / "t").mkdir(parents=True)
    (root / ".autoresearch" / "t" / "results.tsv").write_text("commit\n")
    (root / "toy" / "__pycache__").mkdir()
    (root / "toy" / "__pycache__" / "model.cpython-312.pyc").write_bytes(b"\0")
    (root / "toy" / "local_model.py").write_text("X = 1\n")  # matches the editable globs
    (root / "outputs").mkdir()
    (root / "outputs" / "run1.log").write_text("an old run\n")


def is_editable(path: str) -> bool:
    return path.startswith("toy/") and path.endswith(".py")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = make_project(tmp_path / "repo", [])
    add_ignored_things(root)
    return root


# -- what is linked --------------------------------------------------------------------------


def test_plan_links_takes_the_users_ignored_files_and_leaves_out_what_is_not_theirs(
    project: Path,
) -> None:
    links = plan_links(project, is_editable=is_editable)
    assert links.source == str(project.resolve())
    # Small folders are mirrored (their entries linked), a big one is linked whole.
    assert links.folders == ("data", "outputs")
    assert links.paths == ("big", "data/values.txt", "outputs/run1.log", "weights.bin")
    assert links.required == links.paths
    assert links.tops() == ["big", "data", "outputs", "weights.bin"]
    # Left out with a line: a nested repository, an editable file. Silently: the record,
    # bytecode, caches, the virtualenv.
    assert "nested: not linked into the workers (a repository of its own)" in links.skipped
    (editable,) = [line for line in links.skipped if line.startswith("toy/local_model.py")]
    assert "matches the editable globs" in editable and "write into your checkout" in editable
    assert len(links.skipped) == 2
    # shared: paths are linked whole, and without ignored files only they are.
    (project / "extra").mkdir()
    (project / "extra" / "a.txt").write_text("a")  # untracked, not ignored
    only = plan_links(project, shared=["extra/", "data"], ignored=False)
    assert (
        only.paths == ("data", "extra") and only.folders == () and only.shared == ("extra", "data")
    )


def test_a_worktree_links_large_files_and_keeps_what_a_run_writes_out(
    project: Path, tmp_path: Path
) -> None:
    links = plan_links(project, is_editable=is_editable)
    ws = Workspace.create(project, tmp_path / "workers", "w0", links=links)
    root = ws.root
    # Linked, not copied: the 1 GiB file is the user's own inode.
    assert (root / "weights.bin").is_symlink()
    assert os.path.samefile(root / "weights.bin", project / "weights.bin")
    assert (root / "big").is_symlink() and (root / "big" / "7.txt").read_text() == "7"
    assert (root / "data").is_dir() and not (root / "data").is_symlink()
    assert (root / "data" / "values.txt").is_symlink()
    assert (root / "data" / "values.txt").read_text() == "0.5\n"
    for absent in (".venv", "nested", ".pytest_cache", ".autoresearch", "toy/local_model.py"):
        assert not os.path.lexists(root / absent), absent
    assert not (root / "toy" / "__pycache__").exists()
    assert ws.changes() == []  # the links are no change
    # A run writes beside the links, deletes some, replaces one with its own file ...
    (root / "outputs" / "run2.log").write_text("this run\n")
    os.unlink(root / "outputs" / "run1.log")
    (root / "data" / "values.txt").unlink()
    (root / "data" / "values.txt").write_text("0.0\n")  # a planted dataset
    assert ws.changes() == []  # ignored, as in the user's checkout
    # ... and the next run finds the user's files again, and nothing the run wrote.
    ws.restore()
    assert not (root / "outputs" / "run2.log").exists()
    assert (root / "outputs" / "run1.log").is_symlink()
    assert (root / "data" / "values.txt").is_symlink()
    assert (root / "data" / "values.txt").read_text() == "0.5\n"
    # A whole mirrored folder removed (shutil.rmtree of outputs/) comes back too.
    subprocess.run(["rm", "-rf", str(root / "outputs")], check=True)
    ws.apply(ws.parent)
    assert (root / "outputs" / "run1.log").read_text() == "an old run\n"
    ws.remove()
    assert (project / "data" / "values.txt").read_text() == "0.5\n"  # the user's, untouched
    assert (project / "outputs" / "run1.log").exists()
    assert len(list((project / "big").iterdir())) == MIRROR_MAX + 1  # removing a link is all
    assert git(project, "status", "--porcelain") == ""


def test_a_clone_on_a_machine_without_the_files_says_which_are_missing(
    project: Path, tmp_path: Path
) -> None:
    links = plan_links(project)
    bundle = make_bundle(project, "HEAD")
    moved = tmp_path / "elsewhere"
    (project / "data").rename(moved)  # the node has the driver's path, but not data/
    try:
        with pytest.raises(MissingLinkError, match="data/values.txt") as info:
            Workspace.clone(bundle, tmp_path / "ray", "r0", links=links)
        assert info.value.missing == ["data/values.txt"]
        assert list((tmp_path / "ray").iterdir()) == []  # the half-made clone is gone
        # Required only: what program.md's shared: names; the rest is linked where it is.
        ws = Workspace.clone(bundle, tmp_path / "ray", "r0", links=links.requiring(()))
        ws.apply(git(project, "rev-parse", "HEAD"))
        assert (ws.root / "weights.bin").is_symlink()
        assert not os.path.lexists(ws.root / "data" / "values.txt")
        ws.remove()
    finally:
        moved.rename(project / "data")


# -- an evaluation cannot write through a link -----------------------------------------------


def attack_trial(root: Path) -> Trial:
    return Trial(
        "attack", git(root, "rev-parse", "HEAD"), metric_args=("tests/test_attack.py",),
        timeout=120, env_hints=HINTS, required=("refused", "loss"),
    )  # fmt: skip


def commit_attack(root: Path) -> None:
    (root / "tests" / "test_attack.py").write_text(ATTACK)
    git(root, "add", "tests/test_attack.py")
    git(root, "commit", "-q", "-m", "an evaluation that writes through the links")


def assert_refused(result, root: Path, before: dict[str, bytes]) -> None:
    assert result.ok, result.error or result.evaluations[0].log_tail
    metrics = result.evaluations[0].metrics
    assert metrics["loss"].value == 0.5  # it read the user's data through the link
    assert metrics["refused"].value == 4.0, result.evaluations[0].log_tail
    assert {p: (root / p).read_bytes() for p in before} == before
    assert not (root / "big" / "planted.txt").exists()
    assert not (root.parent / "planted-outside.txt").exists()


def test_an_evaluation_in_a_worktree_cannot_write_through_a_link(
    project: Path, tmp_path: Path
) -> None:
    from pytest_autoresearch.sandbox.isolation import for_research

    commit_attack(project)
    record = project / ".autoresearch" / TAG
    launcher = for_research(project, record, checkout_readonly=True)
    if launcher.name != "namespaces":
        pytest.skip(f"no namespaces here: {launcher.describe()}")
    before = {p: (project / p).read_bytes() for p in ("data/values.txt", "big/0.txt")}
    with WorktreeExecutor(
        project, tmp_path / "workers", 1, gpus=[],
        evaluate_kwargs={"launcher": launcher, "tmp_root": record / "tmp"},
    ) as ex:  # fmt: skip
        ex.submit(attack_trial(project))
        (result,) = list(ex.as_completed())
    assert_refused(result, project, before)


def test_ray_on_this_machine_links_read_only_and_a_node_without_them_says_what_to_do(
    project: Path,
) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install '.[ray]')")
    from pytest_autoresearch.executors.ray import RayExecutor
    from pytest_autoresearch.sandbox.isolation import IsolationSpec, make_launcher

    if make_launcher(IsolationSpec()).name != "namespaces":
        pytest.skip("no namespaces here")
    commit_attack(project)
    before = {p: (project / p).read_bytes() for p in ("data/values.txt", "big/0.txt")}
    started = not ray.is_initialized()  # another module's instance is used as it is
    if started:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        with RayExecutor(project, "local", 1, sandbox=True) as ex:
            ex.submit(attack_trial(project))
            (result,) = list(ex.as_completed())
        assert_refused(result, project, before)
        # A node without the driver's files (simulated: they are gone when it checks out).
        with RayExecutor(project, "local", 1) as ex:
            (project / "data").rename(project.parent / "data.away")
            try:
                ex.submit(attack_trial(project))
                (result,) = list(ex.as_completed())
            finally:
                (project.parent / "data.away").rename(project / "data")
    finally:
        if started:
            ray.shutdown()
    assert not result.ok and result.evaluations == []
    assert "data/ (untracked in the driver's checkout) is not on this node" in result.error
    assert 'shared: ["data/"]' in result.error  # the program.md line that fixes it


# -- the loop: serial, worktrees and Ray find the same data ------------------------------------


def run_loop(root: Path, n: int, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "AUTORESEARCH"))}
    base.update(HINTS)  # the driver and its evaluations load only our plugin: seconds each
    cmd = [
        sys.executable, "-m", "pytest", "-p", "autoresearch", "--autoresearch", "-n", str(n),
        "--autoresearch-tag", TAG, "--autoresearch-proposer", "scripted", "-p", "no:randomly",
        "-p", "no:cacheprovider", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=root, env=base, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--autoresearch-workers", "2"),
        ("--autoresearch-ray", "local", "--autoresearch-workers", "2"),
    ],
    ids=["serial", "worktrees", "ray"],
)
def test_the_baseline_reads_ignored_data_in_every_executor(tmp_path: Path, args: tuple) -> None:
    if "--autoresearch-ray" in args:
        pytest.importorskip("ray", reason="Ray is not installed (pip install '.[ray]')")
    root = make_project(tmp_path, [step("x to 3", 3.0), step("x to 20", 20.0)])
    t0 = time.monotonic()
    done = run_loop(root, 2, *args)
    out = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, out
    assert "Fix the unmodified code first" not in done.stdout
    events = read_jsonl(root / ".autoresearch" / TAG / "experiments.jsonl")
    recs = [e for e in events if e["event"] == "experiment"]
    assert sorted(r["index"] for r in recs) == [1, 2], out
    assert {r["index"]: r["status"] for r in recs}[1] == "keep", out
    assert git(root, "show", f"autoresearch/{TAG}:toy/model.py") in (
        model_source(3.0).strip(),
    )  # fmt: skip
    assert (root / "data" / "values.txt").read_text() == "0.5\n"
    assert git(root, "status", "--porcelain") == ""
    print(f"{'/'.join(args) or 'serial'}: {time.monotonic() - t0:.1f} s")
