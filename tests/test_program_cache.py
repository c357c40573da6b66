"""program.md ``cache:``: paths outside the checkout that evaluations may write and keep."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_autoresearch.program.program_md import ProgramError, load_program

HEAD = '---\neditable: ["train.py"]\nobjective: loss\n'


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "train.py").write_text("x = 1\n")
    (tmp_path / "data").mkdir()
    return tmp_path / "proj"


def load(root: Path, lines: str):
    (root / "program.md").write_text(HEAD + lines + "---\n")
    return load_program(root / "program.md", root)


def test_cache_paths_are_absolute_and_each_once(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = root.parent / "home"
    (home / ".cache" / "hf").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    data = str((root.parent / "data").resolve())
    p = load(root, f"cache: ['../data', '{data}', '~/.cache/hf']\n")
    assert p.cache == (data, str((home / ".cache" / "hf").resolve()))
    assert load(root, "").cache == ()
    later = load(root, "cache: ['../not-yet']\n").cache  # created at start, by the launcher
    assert later == (str((root.parent / "not-yet").resolve()),)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("['~']", ["covers the home folder", "name the cache folder itself"]),
        ("['/']", ["covers the home folder, the checkout or the whole disk"]),
        ("['..']", ["covers the home folder, the checkout"]),
        ("['.']", ["covers the home folder, the checkout"]),
        ("['sub']", ["inside the checkout", "shared:"]),
        ("3", ["cache must be a list of non-empty strings"]),
    ],
)
def test_a_bad_cache_says_what_to_do(root: Path, value: str, words: list[str]) -> None:
    (root / "sub").mkdir()
    with pytest.raises(ProgramError) as exc:
        load(root, f"cache: {value}\n")
    message = str(exc.value)
    assert "program.md:4" in message
    for word in words:
        assert word in message, message
