"""fingerprint: stat keys of the work tree and git dirs, against real files in tmp_path."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from pytest_autoresearch.sandbox import fingerprint as fp


def take(root: Path, **kw) -> fp.Fingerprint:
    return fp.take(root, [root / ".git"], **kw)


def tree(root: Path) -> Path:
    for rel, text in {
        "a.py": "A = 1\n",
        "data/x.txt": "1\n",
        "pkg/__pycache__/a.cpython-311.pyc": "",
        "pkg/b.pyc": "",
        ".autoresearch/t1/results.tsv": "commit\n",
        ".git/config": "[core]\n",
        ".git/HEAD": "ref: refs/heads/main\n",
        ".git/index": "binary",
        ".git/hooks/pre-commit.sample": "#!/bin/sh\n",
        ".git/refs/heads/main": "0" * 40 + "\n",
        ".git/objects/ab/cdef": "blob",
        ".git/modules/vendor/lib/HEAD": "ref: refs/heads/main\n",
        ".git/modules/vendor/lib/config": "[core]\n",
        ".git/modules/vendor/lib/hooks/post-commit": "#!/bin/sh\n",
        "vendor/lib/.git": "gitdir: ../../.git/modules/vendor/lib\n",
        "nested/repo/.git/config": "[core]\n",
        "nested/repo/.git/objects/xx": "blob",
        "nested/repo/src.py": "S = 1\n",
    }.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_files_and_git_parts_are_keyed_and_noise_is_left_out(tmp_path: Path) -> None:
    root = tree(tmp_path)
    f = take(root, skip=[root / ".autoresearch" / "t1"])
    assert sorted(f.files) == ["a.py", "data/x.txt", "nested/repo/src.py", "vendor/lib/.git"]
    assert sorted(f.git) == [
        ".git/HEAD",
        ".git/config",
        ".git/hooks/pre-commit.sample",
        ".git/modules/vendor/lib/HEAD",
        ".git/modules/vendor/lib/config",
        ".git/modules/vendor/lib/hooks/post-commit",
        ".git/refs/heads/main",
        "nested/repo/.git/config",
    ]  # never objects or the index (every git status rewrites its stat cache)


def test_a_rewrite_that_restores_the_mtime_still_shows(tmp_path: Path) -> None:
    root = tree(tmp_path)
    before = take(root)
    st = (root / "a.py").stat()
    (root / "a.py").write_text("A = 2\n")  # same size
    os.utime(root / "a.py", ns=(st.st_atime_ns, st.st_mtime_ns))
    after = take(root)
    assert [(c.path, c.kind) for c in fp.diff(before.files, after.files)] == [("a.py", "changed")]


def test_diff_names_new_changed_and_deleted_files(tmp_path: Path) -> None:
    root = tree(tmp_path)
    before = take(root)
    (root / "data" / "x.txt").unlink()
    (root / "tests").mkdir()
    (root / "tests" / "conftest.py").write_text("")
    (root / ".git" / "hooks" / "post-commit").write_text("#!/bin/sh\n")
    (root / "pkg" / "__pycache__" / "c.pyc").write_text("")  # bytecode: not a change
    after = take(root)
    assert [(c.path, c.kind) for c in fp.diff(before.files, after.files)] == [
        ("data/x.txt", "deleted"),
        ("tests/conftest.py", "new"),
    ]
    assert [c.path for c in fp.diff(before.git, after.git)] == [".git/hooks/post-commit"]


def test_index_flags_from_ls_files_tags() -> None:
    before = fp.Fingerprint({}, {}, {"a.py": "H", "t.py": "H"})
    after = fp.Fingerprint({}, {}, {"a.py": "h", "t.py": "S"})
    assert after.flags() == {"a.py": "assume-unchanged", "t.py": "skip-worktree"}
    assert fp.flag_changes(before, after) == ["a.py", "t.py"]
    assert before.tracked == {"a.py", "t.py"}


def test_code_files_are_those_that_change_what_runs() -> None:
    for path in ("x.py", "tests/conftest.py", "CONFTEST.PY", "site/evil.pth", "m.so", "tox.ini"):
        assert fp.is_code(path), path
    for path in ("run.log", "ckpt.pt", "data/x.txt", "results.json"):
        assert not fp.is_code(path), path


def test_a_large_tree_is_cheap(tmp_path: Path) -> None:
    """lstat only: 5000 files well under a second even on a loaded 2-core machine."""
    for i in range(50):
        d = tmp_path / f"d{i}"
        d.mkdir()
        for j in range(100):
            (d / f"f{j}.txt").write_bytes(b"x" * 10)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    t0 = time.perf_counter()
    f = take(tmp_path)
    took = time.perf_counter() - t0
    assert len(f.files) == 5000
    assert took < 2.0, took
