"""vcs.ResearchRepo against real git repositories made in tmp_path."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_autoresearch.vcs.repo import ResearchRepo, VcsError

FILES = {
    "train.py": "LR = 0.01\nSTEPS = 100\n\n\ndef train():\n    return LR * STEPS\n",
    "model/layers.py": "WIDTH = 64\n",
    "harness.py": "def evaluate(x):\n    return x\n",
    "tests/test_metric.py": "def test_metric():\n    pass\n",
}


def editable(path: str) -> bool:
    """train.py and model/*.py, as program.md's globs would say."""
    return path == "train.py" or (
        path.startswith("model/") and path.endswith(".py") and path.count("/") == 1
    )


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def status(cwd: Path) -> str:
    """git status, less the record directory (the loop's own, untracked by design)."""
    lines = git(cwd, "status", "--porcelain").splitlines()
    return "\n".join(line for line in lines if line != "?? .autoresearch/")


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No global or system git config leaks in (signing, hooks paths, identities)."""
    empty = tmp_path / "empty-gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("NAME", "EMAIL"):
        monkeypatch.delenv(f"GIT_AUTHOR_{var}", raising=False)
        monkeypatch.delenv(f"GIT_COMMITTER_{var}", raising=False)


def make_repo(path: Path, files: dict[str, str] = FILES, identity: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    if identity:
        git(path, "config", "user.name", "Test User")
        git(path, "config", "user.email", "test@example.com")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    env = {**os.environ, "GIT_AUTHOR_NAME": "Seed", "GIT_AUTHOR_EMAIL": "seed@example.com"}
    env |= {"GIT_COMMITTER_NAME": "Seed", "GIT_COMMITTER_EMAIL": "seed@example.com"}
    subprocess.run(["git", "commit", "-q", "-m", "initial"], cwd=path, check=True, env=env)
    return path


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


def started(root: Path, tag: str = "t1") -> ResearchRepo:
    repo = ResearchRepo(root, tag, editable)
    repo.start()
    return repo


# -- refusing to start -------------------------------------------------------------------


def test_refuses_outside_a_git_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(VcsError, match="not inside a git repository.*git init"):
        ResearchRepo(plain, "t1", editable)


def test_refuses_a_repository_without_commits(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    with pytest.raises(VcsError, match="no commits yet; commit your code first"):
        ResearchRepo(root, "t1", editable).start()


@pytest.mark.parametrize("staged", [False, True])
def test_refuses_a_dirty_tree_and_changes_nothing(repo_dir: Path, staged: bool) -> None:
    (repo_dir / "harness.py").write_text("changed\n")
    if staged:
        git(repo_dir, "add", "harness.py")
    before = git(repo_dir, "status", "--porcelain")
    with pytest.raises(VcsError, match=r"uncommitted changes: harness\.py\..*commit or stash"):
        started(repo_dir)
    assert git(repo_dir, "branch", "--list", "autoresearch/*") == ""
    assert git(repo_dir, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(repo_dir, "status", "--porcelain") == before


def test_untracked_files_inside_editable_paths_are_refused(repo_dir: Path) -> None:
    (repo_dir / "model" / "scratch.py").write_text("mine\n")
    with pytest.raises(VcsError, match=r"untracked files inside the editable files: model/scratch"):
        started(repo_dir)
    assert (repo_dir / "model" / "scratch.py").read_text() == "mine\n"


def test_invalid_tag_is_refused(repo_dir: Path) -> None:
    with pytest.raises(VcsError, match="not make a valid git branch name"):
        ResearchRepo(repo_dir, "bad tag..", editable).start()


def test_tracked_journal_directory_is_refused(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "r", {**FILES, ".autoresearch/t1/results.tsv": "commit\n"})
    with pytest.raises(VcsError, match=r"\.autoresearch is tracked by git.*git rm -r --cached"):
        started(root)


def test_nothing_happens_before_start(repo_dir: Path) -> None:
    repo = ResearchRepo(repo_dir, "t1", editable)
    (repo_dir / "train.py").write_text("LR = 2\n")
    assert repo.restore() == []
    repo.finish()
    with pytest.raises(VcsError, match=r"call start\(\) first"):
        repo.commit("too early")
    assert (repo_dir / "train.py").read_text() == "LR = 2\n"
    assert git(repo_dir, "symbolic-ref", "HEAD") == "refs/heads/main"


# -- the happy path ----------------------------------------------------------------------


def test_commit_snapshot_restore_finish_leave_the_user_branch_alone(repo_dir: Path) -> None:
    (repo_dir / "notes.txt").write_text("user's untracked notes\n")
    main_sha = git(repo_dir, "rev-parse", "main")
    index_before = git(repo_dir, "ls-files", "-s")
    repo = ResearchRepo(repo_dir, "t1", editable)
    info = repo.start()
    assert (info.branch, info.best, info.original, info.resumed) == (
        "autoresearch/t1",
        main_sha,
        "main",
        False,
    )
    assert git(repo_dir, "symbolic-ref", "HEAD") == "refs/heads/autoresearch/t1"

    # Experiment 1: an edit and a new editable file, kept.
    (repo_dir / "train.py").write_text(FILES["train.py"].replace("0.01", "0.02"))
    (repo_dir / "model" / "extra.py").write_text("EXTRA = 1\nMORE = 2\n")
    (repo_dir / ".autoresearch" / "t1").mkdir(parents=True)
    (repo_dir / ".autoresearch" / "t1" / "results.tsv").write_text("commit\tval\n")
    assert repo.out_of_scope() == []
    assert repo.changed_files() == ["model/extra.py", "train.py"]
    diff = repo.diff_text()
    assert "-LR = 0.01\n+LR = 0.02\n" in diff
    assert "+++ b/model/extra.py" in diff and "+EXTRA = 1\n" in diff
    assert repo.lines_changed() == (3, 1)
    snap = repo.snapshot("discard: try it")
    assert git(repo_dir, "rev-parse", f"{snap}^") == main_sha
    assert git(repo_dir, "show", f"{snap}:model/extra.py") == "EXTRA = 1\nMORE = 2"
    assert git(repo_dir, "rev-parse", "autoresearch/t1") == main_sha  # no branch moved
    assert git(repo_dir, "diff", "--cached", "--name-only") == ""  # the index is untouched
    sha = repo.commit("raise LR\n\nval: 1.0 -> 0.9")
    assert repo.head() == sha == git(repo_dir, "rev-parse", "autoresearch/t1")
    assert git(repo_dir, "log", "-1", "--format=%s%n%an <%ae>", sha) == (
        "raise LR\nTest User <test@example.com>"
    )
    assert git(repo_dir, "show", "--name-only", "--format=", sha).split() == [
        "model/extra.py",
        "train.py",
    ]
    assert git(repo_dir, "status", "--porcelain", "--untracked-files=no") == ""

    # Experiment 2: edits, a deletion and a new file, discarded.
    (repo_dir / "train.py").write_text("broken\n")
    (repo_dir / "model" / "layers.py").unlink()
    (repo_dir / "model" / "sub").mkdir()
    (repo_dir / "model" / "sub" / "deep.py").write_text("x = 1\n")  # not editable: new file
    (repo_dir / "model" / "new.py").write_text("NEW = 1\n")
    assert repo.out_of_scope() == ["model/sub/deep.py (new file)"]
    snap2 = repo.snapshot("rejected")
    assert git(repo_dir, "show", f"{snap2}:model/sub/deep.py") == "x = 1"
    assert git(repo_dir, "rev-parse", f"{snap2}^") == sha
    restored = repo.restore()
    assert restored == ["model/layers.py", "model/new.py", "model/sub/deep.py", "train.py"]
    assert (repo_dir / "train.py").read_text() == FILES["train.py"].replace("0.01", "0.02")
    assert (repo_dir / "model" / "layers.py").read_text() == FILES["model/layers.py"]
    assert not (repo_dir / "model" / "new.py").exists()
    assert not (repo_dir / "model" / "sub").exists()
    assert (repo_dir / "notes.txt").read_text() == "user's untracked notes\n"
    assert (repo_dir / ".autoresearch" / "t1" / "results.tsv").exists()
    assert repo.changed_files() == []

    (repo_dir / "train.py").write_text("unfinished\n")
    repo.finish()
    assert git(repo_dir, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(repo_dir, "rev-parse", "main") == main_sha
    assert git(repo_dir, "ls-files", "-s") == index_before
    assert git(repo_dir, "status", "--porcelain") == "?? .autoresearch/\n?? notes.txt".strip()
    assert (repo_dir / "train.py").read_text() == FILES["train.py"]
    assert git(repo_dir, "rev-list", "--count", "main..autoresearch/t1") == "1"


# -- the scope check ---------------------------------------------------------------------


def _modify_protected(root: Path) -> None:
    (root / "harness.py").write_text("def evaluate(x):\n    return 0\n")


def _modify_test_in_subdir(root: Path) -> None:
    (root / "tests" / "test_metric.py").write_text("def test_metric():\n    return 0\n")


def _delete_protected(root: Path) -> None:
    (root / "harness.py").unlink()


def _new_file_outside(root: Path) -> None:
    (root / "conftest.py").write_text("import pytest\n")


def _symlink_in_editable(root: Path) -> None:
    (root / "model" / "link.py").symlink_to("../harness.py")


def _editable_replaced_by_symlink(root: Path) -> None:
    (root / "train.py").unlink()
    (root / "train.py").symlink_to("harness.py")


def _staged_protected_change(root: Path) -> None:
    _modify_protected(root)
    git(root, "add", "harness.py")


SCOPE_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "modified": (_modify_protected, "harness.py (modified)"),
    "subdir": (_modify_test_in_subdir, "tests/test_metric.py (modified)"),
    "deleted": (_delete_protected, "harness.py (deleted)"),
    "new file": (_new_file_outside, "conftest.py (new file)"),
    "symlink": (_symlink_in_editable, "model/link.py (symlink)"),
    "typechange": (_editable_replaced_by_symlink, "train.py (symlink)"),
    "staged": (_staged_protected_change, "harness.py (modified)"),
}


@pytest.mark.parametrize("case", list(SCOPE_CASES))
def test_out_of_scope_changes_are_detected_and_restored(repo_dir: Path, case: str) -> None:
    edit, expected = SCOPE_CASES[case]
    repo = started(repo_dir)
    (repo_dir / "train.py").write_text("LR = 1\n")  # an allowed edit alongside
    edit(repo_dir)
    assert repo.out_of_scope() == [expected]
    repo.restore()
    assert repo.out_of_scope() == []
    assert status(repo_dir) == ""
    for name, text in FILES.items():
        assert (repo_dir / name).read_text() == text
        assert not (repo_dir / name).is_symlink()
    assert not (repo_dir / "conftest.py").exists()
    assert not (repo_dir / "model" / "link.py").exists()


def test_commit_refuses_out_of_scope_changes(repo_dir: Path) -> None:
    repo = started(repo_dir)
    _modify_protected(repo_dir)
    with pytest.raises(VcsError, match=r"refusing to commit changes outside scope: harness\.py"):
        repo.commit("nope")
    assert git(repo_dir, "rev-parse", "autoresearch/t1") == git(repo_dir, "rev-parse", "main")


def test_a_commit_made_by_the_experiment_is_a_violation_and_undone(repo_dir: Path) -> None:
    repo = started(repo_dir)
    best = repo.head()
    (repo_dir / "train.py").write_text("LR = 9\n")
    git(repo_dir, "commit", "-q", "-am", "sneaky")
    assert [v.split(" (")[0] for v in repo.out_of_scope()] == ["HEAD"]
    assert "a commit was made" in repo.out_of_scope()[0]
    repo.restore()
    assert git(repo_dir, "rev-parse", "autoresearch/t1") == best
    assert (repo_dir / "train.py").read_text() == FILES["train.py"]


def test_checking_out_another_branch_is_undone_without_touching_it(repo_dir: Path) -> None:
    repo = started(repo_dir)
    main_sha = git(repo_dir, "rev-parse", "main")
    git(repo_dir, "checkout", "-q", "main")
    assert repo.out_of_scope() == ["HEAD (switched to refs/heads/main)"]
    repo.restore()
    assert git(repo_dir, "symbolic-ref", "HEAD") == "refs/heads/autoresearch/t1"
    assert git(repo_dir, "rev-parse", "main") == main_sha


def test_test_outputs_outside_scope_are_accepted_then_removed(repo_dir: Path) -> None:
    repo = started(repo_dir)
    (repo_dir / "train.py").write_text("LR = 2\n")
    assert repo.out_of_scope() == []
    before = repo.fingerprint()
    (repo_dir / "run.log").write_text("loss 1.0\n")  # written by the tests
    (repo_dir / "model" / "__pycache__").mkdir()
    (repo_dir / "model" / "__pycache__" / "layers.cpython-311.pyc").write_bytes(b"\0")
    assert repo.out_of_scope(after="evaluation", since=before) == []
    assert repo.changed_files() == ["train.py"]
    repo.restore()
    assert not (repo_dir / "run.log").exists()  # outputs go when the experiment ends
    (repo_dir / "train.py").write_text("LR = 3\n")
    assert repo.out_of_scope() == []  # and are not blamed on the next proposal


def test_rejected_new_file_stays_rejected_even_after_an_evaluation(repo_dir: Path) -> None:
    repo = started(repo_dir)
    _new_file_outside(repo_dir)
    assert repo.out_of_scope() == ["conftest.py (new file)"]
    assert repo.out_of_scope(after="evaluation") == ["conftest.py (new file)"]


# -- resume, detached HEAD, subdirectory rootdir, identity -------------------------------


def test_resumes_an_existing_research_branch_from_its_tip(repo_dir: Path) -> None:
    repo = started(repo_dir)
    (repo_dir / "train.py").write_text("LR = 2\n")
    first = repo.commit("one")
    repo.finish()
    again = ResearchRepo(repo_dir, "t1", editable)
    info = again.start()
    assert info.resumed and info.best == first and info.restored == []
    assert (repo_dir / "train.py").read_text() == "LR = 2\n"
    (repo_dir / "train.py").write_text("LR = 3\n")
    second = again.commit("two")
    again.finish()
    assert git(repo_dir, "rev-list", "main..autoresearch/t1").split() == [second, first]


def test_resume_after_a_kill_restores_the_half_done_experiment(repo_dir: Path) -> None:
    (repo_dir / "notes.txt").write_text("mine\n")
    repo = started(repo_dir)
    (repo_dir / "train.py").write_text("half written")
    (repo_dir / "model" / "wip.py").write_text("WIP = 1\n")
    del repo  # killed: no restore, no finish
    again = ResearchRepo(repo_dir, "t1", editable)
    info = again.start()
    assert info.resumed and info.original == "main"
    assert info.restored == ["model/wip.py", "train.py"]
    assert status(repo_dir) == "?? notes.txt"
    again.finish()
    assert git(repo_dir, "symbolic-ref", "HEAD") == "refs/heads/main"


def test_resume_refuses_foreign_changes_on_the_research_branch(repo_dir: Path) -> None:
    started(repo_dir)
    _modify_protected(repo_dir)
    with pytest.raises(VcsError, match=r"changes outside the editable files: harness\.py"):
        ResearchRepo(repo_dir, "t1", editable).start()
    assert (repo_dir / "harness.py").read_text() == "def evaluate(x):\n    return 0\n"


def test_detached_head_is_recorded_and_returned_to(repo_dir: Path) -> None:
    sha = git(repo_dir, "rev-parse", "HEAD")
    git(repo_dir, "checkout", "-q", "--detach", "HEAD")
    repo = ResearchRepo(repo_dir, "t1", editable)
    assert repo.start().original == sha
    (repo_dir / "train.py").write_text("LR = 5\n")
    repo.commit("kept")
    repo.finish()
    assert git(repo_dir, "rev-parse", "HEAD") == sha
    assert subprocess.run(["git", "symbolic-ref", "-q", "HEAD"], cwd=repo_dir).returncode == 1


def test_rootdir_in_a_subdirectory_of_the_repository(tmp_path: Path) -> None:
    files = {f"proj/{name}": text for name, text in FILES.items()}
    root = make_repo(tmp_path / "mono", {**files, "lib/util.py": "X = 1\n"})
    repo = ResearchRepo(root / "proj", "t1", editable)
    assert repo.prefix == "proj"
    repo.start()
    (root / "proj" / "train.py").write_text("LR = 7\n")
    (root / "proj" / "model" / "more.py").write_text("M = 1\n")
    (root / "lib" / "util.py").write_text("X = 2\n")
    (root / "train.py").write_text("outside the rootdir\n")
    assert repo.out_of_scope() == ["../lib/util.py (modified)", "../train.py (new file)"]
    assert repo.changed_files() == [
        "../lib/util.py",
        "../train.py",
        "model/more.py",
        "train.py",
    ]
    repo.restore()
    assert not (root / "train.py").exists()
    assert not (root / "proj" / "model" / "more.py").exists()
    (root / "proj" / "train.py").write_text("LR = 7\n")
    sha = repo.commit("in the subdirectory")
    assert git(root, "show", "--name-only", "--format=", sha) == "proj/train.py"
    repo.finish()


def test_commits_fall_back_to_a_fixed_identity_when_git_has_none(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "anon", identity=False)
    repo = started(root)
    (root / "train.py").write_text("LR = 4\n")
    sha = repo.commit("kept")
    ident = git(root, "log", "-1", "--format=%an <%ae>|%cn <%ce>", sha)
    assert ident == (
        "pytest-autoresearch <autoresearch@localhost>|pytest-autoresearch <autoresearch@localhost>"
    )
    snap = repo.snapshot("snap")
    assert git(root, "log", "-1", "--format=%an", snap) == "pytest-autoresearch"
    repo.finish()


# -- what experiment code can touch besides tracked files (issue 12) ---------------------

HOOK_NAMES = ("post-commit", "reference-transaction", "post-checkout", "pre-commit")


def _plant_hooks(root: Path, marker: Path) -> None:
    for name in HOOK_NAMES:
        hook = root / ".git" / "hooks" / name
        hook.write_text(f"#!/bin/sh\necho {name} >> {marker}\n")
        hook.chmod(0o755)
    monitor = root / "fsmonitor.sh"
    monitor.write_text(f"#!/bin/sh\necho fsmonitor >> {marker}\n")
    monitor.chmod(0o755)
    with open(root / ".git" / "config", "a") as fh:
        fh.write(f"[core]\n\tfsmonitor = {monitor}\n")


def test_git_commands_of_the_loop_never_run_hooks_and_restore_removes_them(
    repo_dir: Path, tmp_path: Path
) -> None:
    config_before = (repo_dir / ".git" / "config").read_text()
    repo = started(repo_dir)
    marker = tmp_path / "ran"
    _plant_hooks(repo_dir, marker)
    (repo_dir / "train.py").write_text("LR = 3\n")
    repo.commit("kept")  # write-tree, commit-tree, update-ref: no hook runs
    (repo_dir / "train.py").write_text("LR = 4\n")
    repo.restore()
    assert not marker.exists(), marker.read_text()
    hooks = sorted(p.name for p in (repo_dir / ".git" / "hooks").iterdir())
    assert not set(HOOK_NAMES) & set(hooks)  # gone: only the samples git init wrote
    assert (repo_dir / ".git" / "config").read_text() == config_before
    repo.finish()
    assert not marker.exists()
    # The check can fail: plain git runs such a hook.
    _plant_hooks(repo_dir, marker)
    git(repo_dir, "update-ref", "refs/heads/x", "HEAD")
    assert "reference-transaction" in marker.read_text()


def test_a_leftover_index_lock_stops_start_and_later_git_errors_say_what_to_do(
    repo_dir: Path,
) -> None:
    lock = repo_dir / ".git" / "index.lock"
    lock.write_text("")
    with pytest.raises(VcsError, match=r"another git process is running in .*delete .*index\.lock"):
        started(repo_dir)
    lock.unlink()
    repo = started(repo_dir)
    lock.write_text("")  # a crashed git, or experiment code with .git writable
    (repo_dir / "train.py").write_text("LR = 5\n")
    with pytest.raises(VcsError, match="another git process is running") as exc:
        repo.commit("blocked")
    assert "Traceback" not in str(exc.value)
    repo.restore()  # removes the lock it did not find at the start
    assert not lock.exists()
    repo.finish()


def test_a_failing_git_command_becomes_a_vcs_error_with_git_s_words(repo_dir: Path) -> None:
    repo = started(repo_dir)
    repo.best = "f" * 40  # a commit that does not exist
    with pytest.raises(
        VcsError, match=r"git rev-parse .*failed in .*: .*f{40}.*your work is on autoresearch/t1"
    ):
        repo.snapshot("nope")


def test_index_flags_and_a_dirty_submodule_stop_the_start(repo_dir: Path) -> None:
    git(repo_dir, "update-index", "--skip-worktree", "harness.py")
    with pytest.raises(VcsError, match=r"harness\.py \(skip-worktree\).*--no-skip-worktree"):
        started(repo_dir)
    git(repo_dir, "update-index", "--no-skip-worktree", "harness.py")
    lib = make_repo(repo_dir / "vendor" / "lib", {"a.py": "A = 1\n"})
    git(repo_dir, "add", "vendor/lib")
    git(repo_dir, "commit", "-qm", "embed")
    (lib / "a.py").write_text("A = 2\n")
    with pytest.raises(VcsError, match=r"the submodule vendor/lib has uncommitted changes"):
        started(repo_dir)
    assert git(repo_dir, "symbolic-ref", "HEAD") == "refs/heads/main"


def test_an_ignored_file_the_globs_match_is_reported_and_never_editable(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "r", {**FILES, ".gitignore": "model/local_*.py\n"})
    (root / "model" / "local_cfg.py").write_text("OFFSET = 0\n")
    repo = ResearchRepo(root, "t1", editable)
    info = repo.start()
    assert info.ignored_editable == ["model/local_cfg.py"]
    (root / "model" / "local_cfg.py").write_text("OFFSET = -7\n")  # by a proposal
    assert repo.out_of_scope() == [
        "model/local_cfg.py (changed, and git does not see it (ignored or nested))"
    ]
    repo.restore()
    assert (root / "model" / "local_cfg.py").read_text() == "OFFSET = 0\n"
    repo.finish()


def test_the_evaluation_s_writes_are_judged_and_undone(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "r", {**FILES, ".gitignore": "data/\n*.log\n"})
    (root / "data").mkdir()
    (root / "data" / "scale.txt").write_text("1\n")
    (root / "data" / "big.bin").write_bytes(bytes(5 << 20))  # over the backup size cap
    repo = started(root)
    (root / "train.py").write_text("LR = 2\n")  # the candidate
    assert repo.out_of_scope() == []
    before = repo.fingerprint()
    (root / "data" / "scale.txt").write_text("0\n")  # the metric reads it
    (root / "tests" / "conftest.py").write_text("# rigs later runs\n")
    (root / "model" / "gen.py").write_text("")  # written inside the editable set
    (root / "run.log").write_text("loss 1\n")  # an output: fine, removed at the end
    assert repo.out_of_scope(after="evaluation", since=before) == [
        "data/scale.txt (changed by the evaluation)",
        "model/gen.py (new file inside the editable set, written by the evaluation)",
        "tests/conftest.py (new code file, written by the evaluation)",
    ]
    repo.restore()
    assert (root / "data" / "scale.txt").read_text() == "1\n"
    for gone in ("tests/conftest.py", "model/gen.py", "run.log"):
        assert not (root / gone).exists(), gone
    assert (root / "train.py").read_text() == FILES["train.py"]
    before = repo.fingerprint()
    with open(root / "data" / "big.bin", "r+b") as fh:  # no backup: must not pass silently
        fh.write(b"\1")
    assert repo.out_of_scope(after="evaluation", since=before) == [
        "data/big.bin (changed by the evaluation)"
    ]
    with pytest.raises(VcsError, match=r"changed data/big\.bin.*had no backup.*restore them"):
        repo.restore()


def test_baseline_outputs_are_learned_and_bad_ones_refused(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "r", {**FILES, ".gitignore": "cache/\n"})
    (root / "cache").mkdir()
    (root / "cache" / "last.json").write_text("{}")
    repo = started(root)
    before = repo.fingerprint()
    (root / "cache" / "last.json").write_text('{"loss": 1}')  # rewritten every run
    (root / "results.csv").write_text("loss\n1\n")
    repo.learn_baseline_outputs(before)
    (root / "train.py").write_text("LR = 2\n")  # a candidate, then its evaluation:
    before = repo.fingerprint()
    (root / "cache" / "last.json").write_text('{"loss": 2}')
    assert repo.out_of_scope(after="evaluation", since=before) == []
    repo.restore()
    assert (root / "cache" / "last.json").read_text() == "{}"  # as the user had it
    assert not (root / "results.csv").exists()
    for write, words in (
        (lambda: (root / "model" / "w.py").write_text(""), "write model/w.py, inside the edit"),
        (lambda: (root / "gen.py").write_text(""), "write the code file gen.py"),
        (lambda: (root / "harness.py").write_text(""), "change harness.py, a file git tracks"),
        (lambda: (root / ".git" / "hooks" / "x").write_text(""), "git's own file .git/hooks/x"),
    ):
        before = repo.fingerprint()
        write()
        with pytest.raises(VcsError, match=words):
            repo.learn_baseline_outputs(before)
        repo.restore()
    assert not (root / "model" / "w.py").exists() and not (root / "gen.py").exists()
    repo.finish()
    assert status(root) == ""


def test_a_nested_repository_is_never_editable_and_its_git_dir_is_restored(
    tmp_path: Path,
) -> None:
    root = make_repo(tmp_path / "r", {**FILES})
    lib = make_repo(root / "model" / "lib", {"a.py": "A = 1\n"})
    git(root, "add", "model/lib")
    git(root, "commit", "-qm", "embed")

    def everything_in_model(path: str) -> bool:
        return path.startswith("model/")

    repo = ResearchRepo(root, "t1", everything_in_model)
    repo.start()
    (lib / ".git" / "hooks" / "post-commit").write_text("#!/bin/sh\n")
    (lib / "a.py").write_text("A = 2\n")
    bad = repo.out_of_scope()
    assert "model/lib/.git/hooks/post-commit (git's own file, new by the proposal)" in bad
    assert any(b.startswith("model/lib (") for b in bad), bad
    repo.restore()
    assert not (lib / ".git" / "hooks" / "post-commit").exists()
    assert (lib / "a.py").read_text() == "A = 1\n"
    repo.finish()
    ResearchRepo(root, "t1", everything_in_model).start()  # the next start is not refused


def test_safe_git_env_appends_to_the_user_s_config_entries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pytest_autoresearch.vcs.repo import safe_git_env

    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    env = safe_git_env()
    assert env["GIT_CONFIG_KEY_1"] == "core.hooksPath" and env["GIT_CONFIG_VALUE_1"] == os.devnull
    assert int(env["GIT_CONFIG_COUNT"]) == 1 + sum(k.startswith("GIT_CONFIG_KEY_") for k in env)


def test_resume_after_a_kill_mid_evaluation_undoes_planted_hooks_and_code(
    tmp_path: Path,
) -> None:
    root = make_repo(tmp_path / "r", {**FILES, ".gitignore": "cache/\n"})
    (root / "cache").mkdir()
    (root / "cache" / "last.json").write_text("{}")
    config = (root / ".git" / "config").read_text()
    record = root / ".autoresearch" / "t1"
    repo = ResearchRepo(root, "t1", editable, record_dir=record)
    repo.start()
    before = repo.fingerprint()
    (root / "cache" / "last.json").write_text('{"loss": 1}')  # the baseline's output
    repo.learn_baseline_outputs(before)
    # An experiment's evaluation, killed with kill -9 before the loop could look:
    (root / "train.py").write_text("LR = 9\n")
    hook = root / ".git" / "hooks" / "post-checkout"
    hook.write_text("#!/bin/sh\n")
    with open(root / ".git" / "config", "a") as fh:
        fh.write("[core]\n\tfsmonitor = /bin/true\n")
    (root / "tests" / "conftest.py").write_text("# rigs every later run\n")
    git(root, "branch", "users-own-branch")  # made by the user in between: left alone
    del repo

    again = ResearchRepo(root, "t1", editable, record_dir=record)
    info = again.start(in_flight=True)
    assert info.restored == [
        ".git/config",
        ".git/hooks/post-checkout",
        "tests/conftest.py",
        "train.py",
    ]
    assert not hook.exists() and (root / ".git" / "config").read_text() == config
    assert not (root / "tests" / "conftest.py").exists()
    assert (record / "quarantine" / "tests" / "conftest.py").exists()  # moved, never deleted
    assert git(root, "branch", "--list", "users-own-branch")
    # The baseline is not measured again, but its outputs are still known as outputs.
    before = again.fingerprint()
    (root / "cache" / "last.json").write_text('{"loss": 2}')
    assert again.out_of_scope(after="evaluation", since=before) == []
    again.finish()


def test_an_overtaken_change_is_rebased_by_a_three_way_merge(repo_dir: Path) -> None:
    """Two edits of one hyperparameter block, a line apart: the context lines of the second
    no longer match after the first is kept, yet the change merges as git merge would. An
    edit of the very next line conflicts and is None; nothing else is touched either way."""
    block = "".join(f"P{i} = {i}\n" for i in range(8))
    (repo_dir / "train.py").write_text(block)
    git(repo_dir, "commit", "-qam", "a block of numbers")
    repo = started(repo_dir)
    base = repo.head()

    def on_base(old: str, new: str) -> str:
        (repo_dir / "train.py").write_text(block.replace(old, new))
        sha = repo.snapshot(f"{old} -> {new}")
        repo.restore()
        return sha

    near, adjacent = on_base("P5 = 5", "P5 = 50"), on_base("P4 = 4", "P4 = 40")
    (repo_dir / "train.py").write_text(block.replace("P3 = 3", "P3 = 30"))
    kept = repo.commit("P3 = 30")
    index_before = git(repo_dir, "ls-files", "-s")

    moved = repo.rebased(near, "P5, re-based")
    assert moved is not None and git(repo_dir, "rev-parse", f"{moved}^") == kept
    both = block.replace("P3 = 3", "P3 = 30").replace("P5 = 5", "P5 = 50")
    assert git(repo_dir, "show", f"{moved}:train.py") + "\n" == both
    assert repo.rebased(adjacent, "P4, re-based") is None
    assert git(repo_dir, "ls-files", "-s") == index_before
    assert (repo_dir / "train.py").read_text() == block.replace("P3 = 3", "P3 = 30")
    assert status(repo_dir) == "" and repo.head() == kept != base
