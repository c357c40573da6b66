"""Workspaces: real git worktrees of a real repository in tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from toyproject import git, make_toy, model_source

from pytest_autoresearch.vcs.workspace import (
    ApplyError,
    Workspace,
    WorkspaceError,
    make_bundle,
    prune_stale,
)


def diff_setting_x(root: Path, x: float, extra: str = "") -> str:
    """The unified diff that sets X in the toy project (made in the repo, then undone)."""
    model = root / "toy" / "model.py"
    old = model.read_text()
    model.write_text(model_source(x, extra))
    try:
        return git(root, "diff", "--binary") + "\n"
    finally:
        model.write_text(old)


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    return make_toy(tmp_path / "repo", [])


def test_create_apply_changes_restore_remove(toy: Path, tmp_path: Path) -> None:
    head = git(toy, "rev-parse", "HEAD")
    ws = Workspace.create(toy, tmp_path / "workers", "w0")
    assert ws.path.name == f"w0-{os.getpid()}"
    assert (ws.root / "toy" / "model.py").read_text() == model_source(10.0)
    ws.apply(head, diff_setting_x(toy, 5.0))
    assert "X = 5.0" in (ws.root / "toy" / "model.py").read_text()
    assert ws.changes() == []  # the candidate itself is not a change
    assert "+X = 5.0" in ws.diff()
    # What an evaluation writes shows up, tracked or new; bytecode does not.
    (ws.root / "toy" / "model.py").write_text(model_source(4.0))
    (ws.root / "planted.py").write_text("x = 1\n")
    (ws.root / "toy" / "__pycache__").mkdir()
    (ws.root / "toy" / "__pycache__" / "model.cpython.pyc").write_bytes(b"\0")
    assert ws.changes() == ["planted.py", "toy/model.py"]
    assert ws.out_of_scope(lambda p: p == "toy/model.py") == ["planted.py"]
    ws.restore()
    assert ws.changes() == []
    assert "X = 5.0" in (ws.root / "toy" / "model.py").read_text()
    assert not (ws.root / "planted.py").exists()
    # The user's checkout never saw any of it.
    assert git(toy, "status", "--porcelain") == ""
    ws.remove()
    assert not ws.path.exists()
    assert str(ws.path) not in git(toy, "worktree", "list")
    ws.remove()  # twice is fine


def test_a_diff_that_does_not_apply_is_stale(toy: Path, tmp_path: Path) -> None:
    head = git(toy, "rev-parse", "HEAD")
    diff = diff_setting_x(toy, 5.0)
    (toy / "toy" / "model.py").write_text(model_source(7.0))
    git(toy, "commit", "-qam", "the best moved")
    new_best = git(toy, "rev-parse", "HEAD")
    ws = Workspace.create(toy, tmp_path / "workers", "w0")
    assert ws.applies(head, diff)
    assert not ws.applies(new_best, diff)
    with pytest.raises(ApplyError, match="does not apply on"):
        ws.apply(new_best, diff)
    assert "X = 7.0" in (ws.root / "toy" / "model.py").read_text()  # left on the parent
    # A diff of another file still applies on the moved best (a re-base).
    other = git(toy, "diff", head, new_best) + "\n"
    assert ws.applies(head, other)
    ws.remove()


def test_snapshot_commit_and_unknown_commit(toy: Path, tmp_path: Path) -> None:
    head = git(toy, "rev-parse", "HEAD")
    (toy / "toy" / "model.py").write_text(model_source(2.0))
    git(toy, "add", "toy/model.py")
    snap = git(toy, "commit-tree", git(toy, "write-tree"), "-p", head, "-m", "snap")
    git(toy, "reset", "-q", "--hard", head)
    ws = Workspace.create(toy, tmp_path / "workers", "w0")
    ws.apply(head, snapshot=snap)
    assert "X = 2.0" in (ws.root / "toy" / "model.py").read_text()
    assert "+X = 2.0" in ws.diff()
    with pytest.raises(WorkspaceError, match="failed"):
        ws.apply("0" * 40)
    ws.remove()


def test_rootdir_below_the_work_tree_and_shared_paths(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    root = make_toy(outer / "proj", [])
    # make_toy made proj a repository of its own; the outer folder's is wanted instead.
    subprocess.run(["rm", "-rf", str(root / ".git")], check=True)
    git(outer, "init", "-q", "-b", "main")
    git(outer, "-c", "user.name=t", "-c", "user.email=t@e", "add", "-A")
    git(outer, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "outer")
    (root / "data").mkdir()
    (root / "data" / "big.bin").write_bytes(b"dataset")
    ws = Workspace.create(root, tmp_path / "workers", "w1", shared=["data"])
    assert ws.prefix == "proj" and ws.root == ws.path / "proj"
    assert (ws.root / "data" / "big.bin").read_bytes() == b"dataset"
    (ws.root / "toy" / "model.py").write_text(model_source(1.0))
    assert ws.changes() == ["toy/model.py"]  # relative to the rootdir, the link not listed
    ws.restore()
    assert (ws.root / "data" / "big.bin").exists()  # never cleaned
    ws.remove()
    assert (root / "data" / "big.bin").read_bytes() == b"dataset"
    with pytest.raises(WorkspaceError, match="tracked by git"):
        Workspace.create(root, tmp_path / "workers", "w2", shared=["toy"])


def test_prune_stale_removes_the_worktrees_of_a_killed_driver(toy: Path, tmp_path: Path) -> None:
    folder = tmp_path / "workers"
    code = (
        "import os, sys; from pytest_autoresearch.vcs.workspace import Workspace; "
        f"Workspace.create({str(toy)!r}, {str(folder)!r}, 'w0'); os._exit(0)"
    )  # a driver that dies without cleaning up
    subprocess.run([sys.executable, "-c", code], check=True)
    left = list(folder.iterdir())
    assert len(left) == 1 and len(git(toy, "worktree", "list").splitlines()) == 2
    mine = Workspace.create(toy, folder, "w1")
    assert prune_stale(toy, folder) == left
    assert [p.name for p in folder.iterdir()] == [mine.path.name]  # ours (alive) stays
    assert len(git(toy, "worktree", "list").splitlines()) == 2
    mine.remove()


def test_bundle_ships_a_commit_to_a_fresh_clone(toy: Path, tmp_path: Path) -> None:
    head = git(toy, "rev-parse", "HEAD")
    refs_before = git(toy, "for-each-ref")
    bundle = make_bundle(toy, head)
    assert git(toy, "for-each-ref") == refs_before  # no ref made in the user's repo
    ws = Workspace.clone(bundle, tmp_path / "ray", "r0")
    assert ws.has(head)
    ws.apply(head, diff_setting_x(toy, 6.0))
    assert "X = 6.0" in (ws.root / "toy" / "model.py").read_text()
    (toy / "toy" / "model.py").write_text(model_source(8.0))
    git(toy, "commit", "-qam", "next best")
    nxt = git(toy, "rev-parse", "HEAD")
    assert not ws.has(nxt)
    ws.fetch(make_bundle(toy, nxt))
    ws.apply(nxt)
    assert "X = 8.0" in (ws.root / "toy" / "model.py").read_text()
    ws.remove()
    assert not ws.path.exists()


def test_ignored_files_of_a_rootdir_below_the_work_tree_are_linked(tmp_path: Path) -> None:
    from pytest_autoresearch.executors.worktree import plan_links

    outer = tmp_path / "outer"
    root = make_toy(outer / "proj", [])
    subprocess.run(["rm", "-rf", str(root / ".git")], check=True)
    (outer / ".gitignore").write_text("data/\n")  # the outer repository's rule
    (outer / "above.bin").write_bytes(b"not under the rootdir")
    git(outer, "init", "-q", "-b", "main")
    git(outer, "add", "-A", identity=True)
    git(outer, "commit", "-qm", "outer", identity=True)
    (root / "data").mkdir()
    (root / "data" / "values.txt").write_text("0.5\n")
    links = plan_links(root)
    assert links.paths == ("data/values.txt",)  # relative to the rootdir, nothing above it
    ws = Workspace.create(root, tmp_path / "workers", "w0", links=links)
    assert (ws.root / "data" / "values.txt").read_text() == "0.5\n"
    (ws.root / "data" / "out.txt").write_text("written by a run\n")
    assert ws.changes() == []
    ws.restore()
    assert not (ws.root / "data" / "out.txt").exists()
    assert (ws.root / "data" / "values.txt").is_symlink()
    ws.remove()
