"""The file editor against a real directory tree: what it does, and what it refuses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_autoresearch.proposers.editor import EditRefused, FileEditor, glob_matcher

TRAIN = "LR = 0.01\nBATCH = 32\n\n\ndef train():\n    return LR * BATCH\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "train.py").write_text(TRAIN)
    (root / "src" / "model.py").write_text("WIDTH = 64\n")
    (root / "prepare.py").write_text("DATA = 'fixed'\n")
    (root / "tests" / "test_metric.py").write_text("def test_x():\n    pass\n")
    (root / "program.md").write_text("# program\n")
    (root / "notes.md").write_text("context notes\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    return root


def make(root: Path, editable=("train.py", "src/**/*.py"), readable=("prepare.py",), **kw):
    return FileEditor(root, glob_matcher(editable), readable, **kw)


def test_glob_matcher_double_star_spans_directories():
    match = glob_matcher(["src/**/*.py", "*.cfg"])
    assert match("src/a.py") and match("src/x/y/a.py")
    assert match("setup.cfg") and not match("conf/setup.cfg")
    assert not match("tests/test_a.py") and not match("src/a.pyc")


def test_view_numbers_lines_and_honours_view_range(project):
    box = make(project)
    out = box.run({"command": "view", "path": "train.py"})
    assert out.splitlines()[0] == "     1\tLR = 0.01"
    assert "     6\t    return LR * BATCH" in out
    part = box.run({"command": "view", "path": "./train.py", "view_range": [2, 2]})
    assert part == "     2\tBATCH = 32"
    tail = box.run({"command": "view", "path": "train.py", "view_range": [5, -1]})
    assert tail.splitlines()[0] == "     5\tdef train():"
    with pytest.raises(EditRefused, match="outside 1..7"):
        box.run({"command": "view", "path": "train.py", "view_range": [9, 10]})


def test_view_allows_context_files_and_refuses_the_rest(project):
    box = make(project)
    assert "DATA" in box.run({"command": "view", "path": "prepare.py"})
    for path in ("tests/test_metric.py", "program.md", ".git/config", "notes.md"):
        text, is_error = box.execute({"command": "view", "path": path})
        assert is_error, path
        assert "you may view only the editable files and the context files" in text
    assert box.refused == 4


def test_directory_listing_shows_only_viewable_files(project):
    box = make(project)
    listing = box.run({"command": "view", "path": "."}).splitlines()
    assert listing == ["prepare.py  (read-only)", "src/model.py", "train.py"]
    assert box.run({"command": "view", "path": "tests"}) == "tests: no files you may view here"


def test_str_replace_edits_and_tracks_the_change(project):
    box = make(project)
    out = box.run(
        {
            "command": "str_replace",
            "path": "train.py",
            "old_str": "LR = 0.01",
            "new_str": "LR = 0.04",
        }
    )
    assert "Edited train.py" in out and "     1\tLR = 0.04" in out
    assert (project / "train.py").read_text() == TRAIN.replace("0.01", "0.04")
    assert box.changed == ["train.py"]


def test_str_replace_needs_exactly_one_match(project):
    box = make(project)
    (project / "src" / "model.py").write_text("A = 1\nA = 1\n")
    with pytest.raises(EditRefused, match="occurs 2 times"):
        box.run(
            {"command": "str_replace", "path": "src/model.py", "old_str": "A = 1", "new_str": ""}
        )
    with pytest.raises(EditRefused, match="old_str was not found"):
        box.run(
            {"command": "str_replace", "path": "train.py", "old_str": "LR=0.01", "new_str": "x"}
        )
    assert box.changed == []


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/etc/passwd", "absolute path '/etc/passwd' refused: use a path relative"),
        ("../outside.py", "'..' is not allowed"),
        ("src/../train.py", "'..' is not allowed"),
        ("~/x.py", "absolute path"),
        ("", "'path' is required"),
    ],
)
def test_escaping_paths_are_refused(project, path, message):
    box = make(project, editable=("**",))
    text, is_error = box.execute({"command": "create", "path": path, "file_text": "pwned\n"})
    assert is_error and message in text
    assert box.changed == []


def test_protected_files_are_refused_and_left_alone(project):
    box = make(project)
    for path in ("tests/test_metric.py", "prepare.py", "program.md"):
        before = (project / path).read_text()
        text, is_error = box.execute(
            {"command": "create", "path": path, "file_text": "def test_x():\n    assert True\n"}
        )
        assert is_error and f"{path}: not an editable file" in text
        assert (project / path).read_text() == before


def test_program_md_and_git_are_protected_even_if_a_glob_matches(project):
    box = make(project, editable=("**",), protected=("program.md",))
    for path in ("program.md", ".git/config", ".autoresearch/x/experiments.jsonl"):
        text, is_error = box.execute({"command": "create", "path": path, "file_text": "x"})
        assert is_error and "not an editable file" in text, path
    assert (project / "program.md").read_text() == "# program\n"


def test_symlinked_directory_leading_outside_is_refused(project, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.py").write_text("SAFE = 1\n")
    os.symlink(outside, project / "src" / "link")
    box = make(project)
    text, is_error = box.execute(
        {
            "command": "str_replace",
            "path": "src/link/victim.py",
            "old_str": "SAFE = 1",
            "new_str": "SAFE = 0",
        }
    )
    assert is_error and "'src/link' is a symlink" in text
    text, is_error = box.execute({"command": "view", "path": "src/link/victim.py"})
    assert is_error and "resolves outside the project" in text
    assert (outside / "victim.py").read_text() == "SAFE = 1\n"
    assert "src/link" not in box.run({"command": "view", "path": "src"})


def test_symlinked_file_is_never_written_through(project):
    os.symlink(project / "prepare.py", project / "src" / "alias.py")
    box = make(project)
    text, is_error = box.execute({"command": "create", "path": "src/alias.py", "file_text": "x"})
    assert is_error and "is a symlink" in text
    assert (project / "prepare.py").read_text() == "DATA = 'fixed'\n"


def test_symlink_inside_to_an_unviewable_file_is_refused_for_view(project):
    os.symlink(project / "tests" / "test_metric.py", project / "src" / "peek.py")
    text, is_error = make(project).execute({"command": "view", "path": "src/peek.py"})
    assert is_error and "links to a file you may not view" in text


def test_hard_link_to_an_outside_file_is_replaced_not_written_through(project, tmp_path):
    outside = tmp_path / "shared.py"
    outside.write_text("X = 1\n")
    (project / "src" / "model.py").unlink()
    os.link(outside, project / "src" / "model.py")
    make(project).run(
        {"command": "str_replace", "path": "src/model.py", "old_str": "X = 1", "new_str": "X = 2"}
    )
    assert outside.read_text() == "X = 1\n"
    assert (project / "src" / "model.py").read_text() == "X = 2\n"


def test_directories_binary_and_huge_files_are_refused(project):
    box = make(project, editable=("**",), max_bytes=1000)
    (project / "src" / "sub").mkdir()
    text, is_error = box.execute({"command": "create", "path": "src/sub", "file_text": "x"})
    assert is_error and "is a directory" in text
    (project / "src" / "blob.py").write_bytes(b"A = 1\x00\x01\n")
    text, is_error = box.execute({"command": "view", "path": "src/blob.py"})
    assert is_error and "binary file" in text
    (project / "src" / "big.py").write_text("# x\n" * 500)
    text, is_error = box.execute(
        {"command": "str_replace", "path": "src/big.py", "old_str": "# x", "new_str": "#"}
    )
    assert is_error and "2000 bytes is more than the 1000-byte limit" in text
    text, is_error = box.execute({"command": "create", "path": "src/n.py", "file_text": "a\x00"})
    assert is_error and "NUL" in text
    text, is_error = box.execute({"command": "create", "path": "src/h.py", "file_text": "x" * 2000})
    assert is_error and "over the 1000-byte limit" in text
    assert not (project / "src" / "n.py").exists() and not (project / "src" / "h.py").exists()


def test_create_new_editable_file_in_a_new_directory(project):
    box = make(project)
    out = box.run({"command": "create", "path": "src/layers/attn.py", "file_text": "HEADS = 4\n"})
    assert out == "Created src/layers/attn.py (2 lines)"
    assert (project / "src" / "layers" / "attn.py").read_text() == "HEADS = 4\n"
    text, is_error = box.execute({"command": "create", "path": "lib/new.py", "file_text": "x"})
    assert is_error and not (project / "lib").exists()
    assert box.changed == ["src/layers/attn.py"]


def test_insert_at_top_and_end_keeps_mode(project):
    (project / "train.py").chmod(0o755)
    box = make(project)
    box.run({"command": "insert", "path": "train.py", "insert_line": 0, "insert_text": "# top\n"})
    lines = (project / "train.py").read_text().split("\n")
    assert lines[0] == "# top" and lines[1] == "LR = 0.01"
    n = len(lines)
    box.run({"command": "insert", "path": "train.py", "insert_line": n, "new_str": "# end"})
    assert (project / "train.py").read_text().endswith("\n# end")
    assert (project / "train.py").stat().st_mode & 0o777 == 0o755
    with pytest.raises(EditRefused, match="outside 0.."):
        box.run({"command": "insert", "path": "train.py", "insert_line": 99, "insert_text": "x"})


def test_bad_commands_get_a_readable_error(project):
    box = make(project)
    text, is_error = box.execute({"command": "undo_edit", "path": "train.py"})
    assert is_error and "unknown command 'undo_edit'" in text
    text, is_error = box.execute("view train.py")
    assert is_error and "must be an object" in text
    text, is_error = box.execute({"command": "insert", "path": "train.py", "insert_line": "2"})
    assert is_error and "insert_line" in text
    assert box.refused == 3 and (project / "train.py").read_text() == TRAIN
