"""program: program.md is parsed and validated against real files in a temp rootdir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_autoresearch.program.program_md import (
    Constraint,
    ProgramError,
    glob_to_regex,
    load_program,
)

FULL = """\
---
editable: ["nanochat/train.py"]     # globs; the only files a proposal may change
objective: val_bpb                  # a @metric name; its goal gives the direction
guards: ["tests/test_model.py"]     # pytest args that must pass for a keep (optional)
holdout: test_bpb                   # reported, never used to decide (optional)
constraints: ["peak_vram_gb <= 60"] # other metrics that must hold (optional)
timeout: 420                        # seconds per evaluation
min_delta: 0.001
baseline_runs: 5
context: ["nanochat/*.md"]
---
# What to try
Raise the learning rate.
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for rel in (
        "nanochat/train.py",
        "nanochat/model.py",
        "nanochat/README.md",
        "nanochat/sub/deep.py",
        "tests/test_model.py",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    return tmp_path


def write(root: Path, text: str) -> Path:
    path = root / "program.md"
    path.write_text(text)
    return path


def error(root: Path, text: str) -> ProgramError:
    with pytest.raises(ProgramError) as exc:
        load_program(write(root, text), root)
    return exc.value


def test_the_issue_example_parses_into_a_program(root: Path) -> None:
    p = load_program(write(root, FULL), root)
    assert p.editable == ("nanochat/train.py",)
    assert (p.objective, p.holdout, p.guards) == ("val_bpb", "test_bpb", ("tests/test_model.py",))
    assert p.constraints == (Constraint("peak_vram_gb", "<=", 60.0, "peak_vram_gb <= 60"),)
    assert (p.timeout, p.min_delta, p.baseline_runs) == (420.0, 0.001, 5)
    assert p.context == ("nanochat/*.md",)
    assert p.instructions == "# What to try\nRaise the learning rate."
    assert p.editable_files(root) == ["nanochat/train.py"]


def test_defaults_and_a_single_string_glob(root: Path) -> None:
    p = load_program(write(root, "---\neditable: nanochat/*.py\nobjective: loss\n---\n"), root)
    assert p.editable == ("nanochat/*.py",)
    assert (p.guards, p.holdout, p.constraints, p.timeout) == ((), None, (), None)
    assert (p.min_delta, p.baseline_runs, p.instructions) == (0.0, 8, "")
    assert p.editable_files(root) == ["nanochat/model.py", "nanochat/train.py"]


def test_is_editable_supports_double_star_and_refuses_escapes(root: Path) -> None:
    p = load_program(write(root, "---\neditable: ['nanochat/**/*.py']\nobjective: l\n---\n"), root)
    assert p.is_editable("nanochat/train.py")
    assert p.is_editable("nanochat/sub/deep.py")
    assert p.is_editable("./nanochat/train.py")
    assert not p.is_editable("nanochat/README.md")
    assert not p.is_editable("nanochat/../tests/test_model.py")
    assert not p.is_editable("/nanochat/train.py")
    assert not p.is_editable("tests/test_model.py")
    assert p.editable_files(root) == [
        "nanochat/model.py",
        "nanochat/sub/deep.py",
        "nanochat/train.py",
    ]


def test_glob_translation() -> None:
    assert glob_to_regex("*.py").match("a.py") and not glob_to_regex("*.py").match("d/a.py")
    assert glob_to_regex("**/*.py").match("a.py") and glob_to_regex("**/*.py").match("d/e/a.py")
    assert glob_to_regex("src/**").match("src/a/b.txt")
    assert glob_to_regex("f?.[ch]").match("f1.c") and not glob_to_regex("f?.[ch]").match("f1.o")
    assert glob_to_regex("[!a]x").match("bx") and not glob_to_regex("[!a]x").match("ax")


def test_a_typo_in_a_key_names_the_line_and_suggests_the_key(root: Path) -> None:
    e = error(root, "---\nobjective: val_bpb\neditabel: ['nanochat/train.py']\n---\n")
    assert str(e) == f"{root / 'program.md'}:3: unknown key 'editabel'; did you mean 'editable'?"
    assert e.line == 3


def test_an_unknown_key_without_a_near_miss_lists_the_keys(root: Path) -> None:
    e = error(root, "---\neditable: [nanochat/train.py]\nobjective: l\nwhat to try: more\n---\n")
    assert ":4: unknown key 'what to try'" in str(e) and "the known keys are editable" in str(e)


@pytest.mark.parametrize(
    ("front", "line", "words"),
    [
        ("editable: ['nanochat/nope.py']\nobjective: l", 2, ["matches no file", "spelling"]),
        ("editable: ['/etc/passwd']\nobjective: l", 2, ["absolute", "relative to the rootdir"]),
        ("editable: ['../x.py']\nobjective: l", 2, ["leaves the rootdir", "'..'"]),
        ("editable: ['*.md']\nobjective: l", 2, ["'*.md' matches no file"]),
        ("editable: ['nanochat\\\\train.py']\nobjective: l", 2, ["uses '\\'"]),
        ("objective: l", 3, ["'editable' is required"]),
        ("editable: [nanochat/train.py]", 3, ["'objective' is required"]),
        ("editable: [nanochat/train.py]\nobjective: [a, b]", 3, ["must be a metric name"]),
        ("editable: [nanochat/train.py]\nobjective: l\nguards: ['-x']", 4, ["is an option"]),
        (
            "editable: [nanochat/train.py]\nobjective: l\nguards: ['tests/nope.py::t']",
            4,
            ["'tests/nope.py' does not exist"],
        ),
        (
            "editable: [nanochat/train.py]\nobjective: l\nconstraints: ['vram is small']",
            4,
            ["cannot read the constraint 'vram is small'", "peak_vram_gb <= 60"],
        ),
        (
            "editable: [nanochat/train.py]\nobjective: l\nconstraints: ['vram <= lots']",
            4,
            ["cannot read the constraint"],
        ),
        ("editable: [nanochat/train.py]\nobjective: l\nbaseline_runs: 1", 4, [">= 2"]),
        ("editable: [nanochat/train.py]\nobjective: l\nbaseline_runs: true", 4, [">= 2"]),
        ("editable: [nanochat/train.py]\nobjective: l\ntimeout: -5", 4, ["seconds > 0"]),
        ("editable: [nanochat/train.py]\nobjective: l\nmin_delta: -1", 4, [">= 0"]),
        (
            "editable: [nanochat/train.py]\nobjective: l\nholdout: l",
            4,
            ["holdout is the objective"],
        ),
        (
            "editable: [nanochat/train.py]\nobjective: l\ncontext: ['docs/*.md']",
            4,
            ["context glob 'docs/*.md' matches no file"],
        ),
        ("editable: [nanochat/train.py]\nobjective: l\nobjective: m", 4, ["given twice", "line 3"]),
        ("editable: [nanochat/train.py\nobjective: l", 3, ["not valid YAML"]),
        ("- editable\n- objective", 2, ["must be 'key: value' lines"]),
    ],
)
def test_bad_front_matter_names_the_line_the_problem_and_the_fix(
    root: Path, front: str, line: int, words: list[str]
) -> None:
    e = error(root, f"---\n{front}\n---\nbody\n")
    assert str(e).startswith(f"{root / 'program.md'}:{line}: "), str(e)
    for w in words:
        assert w in str(e)
    assert "; " in str(e)  # every message carries a fix after the problem


def test_missing_or_unclosed_front_matter(root: Path) -> None:
    assert "must start with YAML front matter" in str(error(root, "# Just text\n"))
    assert "never closed" in str(error(root, "---\nobjective: l\n"))
    with pytest.raises(ProgramError, match="no such file"):
        load_program(root / "missing.md", root)


def test_a_symlink_leading_outside_the_root_is_refused(root: Path, tmp_path_factory) -> None:
    outside = tmp_path_factory.mktemp("outside") / "secret.py"
    outside.write_text("KEY = 1\n")
    os.symlink(outside, root / "nanochat" / "link.py")
    e = error(root, "---\neditable: ['nanochat/*.py']\nobjective: l\n---\n")
    assert "nanochat/link.py is a symlink" in str(e) and "outside the rootdir" in str(e)


def test_a_symlink_to_a_protected_file_is_refused(root: Path) -> None:
    os.symlink(root / "tests" / "test_model.py", root / "nanochat" / "alias.py")
    e = error(root, "---\neditable: ['nanochat/alias.py']\nobjective: l\n---\n")
    assert "symlink to tests/test_model.py, which the editable globs do not allow" in str(e)


def test_check_metrics_names_missing_metrics_and_the_known_ones(root: Path) -> None:
    p = load_program(write(root, FULL), root)
    p.check_metrics({"val_bpb": "min", "test_bpb": "min", "peak_vram_gb": "min"})
    with pytest.raises(ProgramError) as exc:
        p.check_metrics({"val_bp": "min", "test_bpb": "min", "peak_vram_gb": "min"})
    assert str(exc.value) == (
        f"{root / 'program.md'}:3: objective names the metric 'val_bpb', but the metric tests "
        "report no such metric (known: peak_vram_gb, test_bpb, val_bp); did you mean 'val_bp'?"
    )
    with pytest.raises(ProgramError, match=r":6: constraints names the metric 'peak_vram_gb'"):
        p.check_metrics({"val_bpb": "min", "test_bpb": "min"})
    with pytest.raises(ProgramError, match=r":5: holdout names the metric 'test_bpb'"):
        p.check_metrics({"val_bpb": "min", "peak_vram_gb": "min"})


def test_constraint_holds() -> None:
    c = Constraint("m", "<=", 60.0, "m <= 60")
    assert c.holds(60.0) and not c.holds(60.5) and not c.holds(float("nan"))
    assert Constraint("m", ">", 1.0, "m > 1").holds(1.5)
    assert not Constraint("m", "==", 1.0, "m == 1").holds(1.1)


def test_the_pure_modules_import_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "import pytest_autoresearch.program.program_md, pytest_autoresearch.research.decide\n"
        "import pytest_autoresearch.metrics.stats, pytest_autoresearch.research.journal\n"
        "import pytest_autoresearch.reporting.report\n"
        "heavy = [m for m in ('yaml', 'matplotlib', 'numpy', 'torch', 'git', 'optuna') "
        "if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- protected paths (issue 12, items 15 and 18) -----------------------------------------


def test_protected_paths_stay_protected_whatever_the_globs_say(root: Path) -> None:
    for rel in ("conftest.py", "nanochat/conftest.py", ".gitattributes", "nanochat/.gitmodules"):
        (root / rel).write_text("x = 1\n")
    p = load_program(write(root, "---\neditable: ['**']\nobjective: l\n---\n"), root)
    assert any("covers program.md (the research program)" in x for x in p.protected_overlaps(root))
    p = p.with_protected({"tests/test_model.py": "a metric test"})
    assert p.is_editable("nanochat/train.py")
    for rel in (
        "conftest.py",
        "nanochat/CONFTEST.PY",  # case-insensitive file systems (macOS, Windows)
        ".git/hooks/post-commit",
        ".GIT/config",
        "sub/.Git/config",
        ".autoresearch/t1/results.tsv",
        ".AutoResearch/x",
        "program.md",
        "PROGRAM.MD",
        ".gitattributes",
        "nanochat/.gitmodules",
        "tests/test_model.py",
        "TESTS/Test_Model.py",
    ):
        assert not p.is_editable(rel), rel
    assert "tests/test_model.py" not in p.editable_files(root)
    assert "conftest.py" not in p.editable_files(root)
    assert p.protected_reason("tests/test_model.py") == "a metric test"
    assert p.protected_reason("nanochat/train.py") is None


def test_globs_covering_protected_files_are_reported_with_their_line(root: Path) -> None:
    (root / "nanochat" / "conftest.py").write_text("")
    text = "---\nobjective: l\neditable: ['**/*.py', 'nanochat/train.py']\n---\n"
    p = load_program(write(root, text), root).with_protected(
        {"tests/test_model.py": "a metric test", "nanochat/train.py": "a guard"}
    )
    lines = p.protected_overlaps(root)
    assert (
        "program.md line 3: editable glob '**/*.py' covers tests/test_model.py (a metric test); "
        "it stays protected"
    ) in lines
    assert any("covers nanochat/conftest.py (a conftest file)" in line for line in lines)
    assert any("'nanochat/train.py' covers nanochat/train.py (a guard)" in line for line in lines)
    assert p.glob_for("nanochat/model.py") == "the editable glob '**/*.py' (program.md line 3)"
    narrow = load_program(
        write(root, "---\neditable: [nanochat/model.py]\nobjective: l\n---\n"), root
    )
    assert narrow.protected_overlaps(root) == []


def test_a_glob_reaching_into_git_is_reported(root: Path) -> None:
    p = load_program(write(root, "---\neditable: ['**']\nobjective: l\n---\n"), root)
    lines = p.protected_overlaps(root)
    assert any("reaches into .git" in line for line in lines), lines
    assert any("reaches into .autoresearch" in line for line in lines), lines


def test_sandbox_and_network_are_on_by_default_and_take_on_off(root: Path) -> None:
    base = "---\neditable: [nanochat/train.py]\nobjective: l\n"
    p = load_program(write(root, base + "---\n"), root)
    assert (p.sandbox, p.network) == (True, True)
    p = load_program(write(root, base + "sandbox: off\nnetwork: false\n---\n"), root)
    assert (p.sandbox, p.network) == (False, False)
    e = error(root, base + "network: sometimes\n---\n")
    assert str(e) == (
        f"{root / 'program.md'}:4: network must be on or off, got 'sometimes'; "
        "write network: on (or network: off)"
    )


def test_a_protected_directory_protects_what_is_under_it(root: Path) -> None:
    p = load_program(write(root, "---\neditable: ['**/*.py']\nobjective: l\n---\n"), root)
    p = p.with_protected(["tests/"])
    assert not p.is_editable("tests/test_model.py") and not p.is_editable("Tests/sub/x.py")
    assert p.is_editable("nanochat/train.py") and p.is_editable("tests_other/x.py")


def test_parallel_keys_default_to_one_at_a_time(root: Path) -> None:
    p = load_program(write(root, "---\neditable: [nanochat/train.py]\nobjective: l\n---\n"), root)
    assert (p.workers, p.gpus_per_worker, p.lean, p.shared) == (None, 1, False, ())


def test_parallel_keys_parse_and_survive_with_protected(root: Path) -> None:
    (root / "data" / "shards").mkdir(parents=True)
    text = (
        "---\neditable: [nanochat/train.py]\nobjective: l\nworkers: 4\ngpus_per_worker: 0\n"
        "lean: [pytest_timeout, xdist]\nshared: ['data/', './data/shards', data]\n---\n"
    )
    p = load_program(write(root, text), root).with_protected(["tests/"])
    assert (p.workers, p.gpus_per_worker) == (4, 0)
    assert p.lean == ("pytest_timeout", "xdist")
    assert p.shared == ("data", "data/shards")  # normalised, each once
    for value, lean in (("true", True), ("off", False), ("[]", True)):
        text = f"---\neditable: [nanochat/train.py]\nobjective: l\nlean: {value}\n---\n"
        assert load_program(write(root, text), root).lean == lean


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("workers: 0", ["workers must be a whole number >= 1, got 0", "workers: 4"]),
        ("workers: two", ["workers must be a whole number >= 1, got 'two'"]),
        ("workers: true", ["workers must be a whole number >= 1, got True"]),
        ("gpus_per_worker: -1", ["gpus_per_worker must be a whole number >= 0, got -1"]),
        ("gpus_per_worker: 1.5", ["gpus_per_worker must be a whole number >= 0, got 1.5"]),
        ("lean: maybe", ["lean must be true, false or a list of pytest plugin names", "lean: [py"]),
        ("lean: ['-p no:x']", ["lean must be true, false or a list"]),
        ("shared: data", ["the shared path 'data' does not exist", "download the data"]),
        ("shared: ['/data']", ["'/data' is not a plain path inside the rootdir"]),
        ("shared: ['../data']", ["'../data' is not a plain path", "without '..'"]),
        ("shared: ['data/*.bin']", ["not a plain path", "wildcards"]),
        ("shared: ['.git/lfs']", ["inside git's or the loop's own files"]),
        ("shared: 3", ["shared must be a list of non-empty strings"]),
        ("worker: 4", ["unknown key 'worker'; did you mean 'workers'?"]),
        ("gpus_per_workers: 2", ["did you mean 'gpus_per_worker'?"]),
    ],
)
def test_parallel_keys_errors_name_the_line_and_the_fix(
    root: Path, line: str, words: list[str]
) -> None:
    e = error(root, f"---\neditable: [nanochat/train.py]\nobjective: l\n{line}\n---\n")
    assert str(e).startswith(f"{root / 'program.md'}:4: ") and e.line == 4
    for w in words:
        assert w in str(e)
