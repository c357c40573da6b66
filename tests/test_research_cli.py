"""The --autoresearch command line: -n interception, options, ini keys and usage errors."""

from __future__ import annotations

import datetime

import pytest

from pytest_autoresearch.program.options import default_tag

METRIC_TEST = """
from pytest_autoresearch import metric

@metric(goal="min")
def test_m():
    return 1.0
"""


def experiments_of(pytester: pytest.Pytester, *args: str):
    config = pytester.parseconfigure(*args)
    return config.getoption("autoresearch_experiments"), config.getoption("numprocesses", None)


def test_n_means_experiments_with_xdist_installed(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    assert experiments_of(pytester, "--autoresearch", "-n", "200") == (200, None)
    assert experiments_of(pytester, "-n7", "--autoresearch") == (7, None)


def test_n_means_experiments_without_xdist(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfigure("-p", "no:xdist", "--autoresearch", "-n", "12")
    assert config.getoption("autoresearch_experiments") == 12
    assert not config.pluginmanager.has_plugin("xdist")


def test_long_spelling(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfigure("--autoresearch", "--autoresearch-experiments", "5")
    assert config.getoption("autoresearch_experiments") == 5


@pytest.mark.all_plugins  # xdist in the inner runs
def test_plain_n_still_distributes_with_xdist(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile("def test_a(): pass\ndef test_b(): pass\n")
    result = pytester.runpytest_subprocess("-n", "2")
    result.stdout.fnmatch_lines(["*2 workers*", "*2 passed*"])
    assert result.ret == 0


@pytest.mark.parametrize("value", ["auto", "logical", "0"])
def test_n_auto_is_rejected_under_autoresearch(pytester: pytest.Pytester, value: str) -> None:
    result = pytester.runpytest_subprocess("--autoresearch", "-n", value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*-n {value}*number of experiments*"])


def test_ini_keys_mirror_the_options(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\nautoresearch_experiments = 9\nautoresearch_tag = night1\n"
        "autoresearch_max_cost = 2.5\n"
    )
    config = pytester.parseconfigure("--autoresearch")
    assert config.getoption("autoresearch_experiments") == 9
    assert config.getoption("autoresearch_tag") == "night1"
    assert config.getoption("autoresearch_max_cost") == 2.5
    # The command line wins over the ini file.
    config = pytester.parseconfigure("--autoresearch", "-n", "3")
    assert config.getoption("autoresearch_experiments") == 3


def test_bad_ini_value_is_a_clear_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nautoresearch_experiments = lots\n")
    result = pytester.runpytest_subprocess("--autoresearch")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*autoresearch_experiments*lots*whole number*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--autoresearch-tag", "../x"], "*invalid tag*"),
        (["--autoresearch-max-cost", "-1"], "*more than 0 dollars*"),
        (["--autoresearch-experiments", "many"], "*whole number of experiments*"),
    ],
)
def test_bad_options_say_what_to_do(pytester: pytest.Pytester, args, message) -> None:
    result = pytester.runpytest_subprocess("--autoresearch", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_help_lists_the_research_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(
        [
            "autoresearch*",
            "*--autoresearch *research loop*",
            "*--autoresearch-experiments=N*",
            "*number of experiments to run*",
            "*--autoresearch-tag=TAG*",
            "*an existing tag resumes*",
            "*--autoresearch-proposer=NAME*",
            "*'optuna' (built in, offline)*",
            "*--autoresearch-max-cost=USD*",
        ]
    )


def test_default_tag_is_a_short_date() -> None:
    assert default_tag(datetime.date(2026, 11, 23)) == "nov23"


def test_missing_program_md_explains_what_to_write(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(METRIC_TEST)
    result = pytester.runpytest_subprocess("--autoresearch", "-n", "1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*program.md does not exist*", "*editable:*", "*objective:*"])


def test_unknown_proposer_lists_the_choices(pytester: pytest.Pytester) -> None:
    pytester.makefile(".md", program="---\neditable: ['m.py']\nobjective: m\n---\n")
    pytester.makepyfile(m="X = 1\n")
    pytester.makepyfile(METRIC_TEST)
    result = pytester.runpytest_subprocess("--autoresearch", "--autoresearch-proposer", "gpt9")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no proposer called 'gpt9'*optuna*anthropic*"])


def test_no_metric_tests_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".md", program="---\neditable: ['m.py']\nobjective: m\n---\n")
    pytester.makepyfile(m="X = 1\n")
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest_subprocess("--autoresearch", "--autoresearch-proposer", "optuna")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*found no metric tests*@metric*"])


# -- the user's own xdist settings (issue: first use in a real repository) -----------------


@pytest.mark.parametrize("addopts", ["-n auto", "-n 4", "--numprocesses=4 --dist loadscope"])
def test_xdist_settings_in_addopts_neither_fail_nor_count_experiments(
    pytester: pytest.Pytester, addopts: str
) -> None:
    pytest.importorskip("xdist")
    pytester.makeini(f"[pytest]\naddopts = {addopts}\n")
    assert experiments_of(pytester, "--autoresearch", "-n", "50") == (50, None)
    # Without -n on the command line the default count applies, not the ini's worker count.
    assert experiments_of(pytester, "--autoresearch") == (20, None)


@pytest.mark.all_plugins  # xdist in the inner runs
def test_pytest_addopts_n_does_not_change_the_number_of_experiments(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("xdist")
    monkeypatch.setenv("PYTEST_ADDOPTS", "-n 3")
    assert experiments_of(pytester, "--autoresearch", "-n", "2") == (2, None)
    assert experiments_of(pytester, "--autoresearch") == (20, None)


@pytest.mark.all_plugins  # xdist in the inner runs
def test_addopts_n_still_distributes_an_ordinary_run(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makeini("[pytest]\naddopts = -n 2\n")
    assert experiments_of(pytester)[1] == 2


@pytest.mark.parametrize(
    "args", [["--tx", "2*popen"], ["--dist", "load"], ["--dist=loadscope"], ["--tx=popen"]]
)
def test_distribution_flags_on_the_command_line_are_refused(
    pytester: pytest.Pytester, args: list[str]
) -> None:
    pytest.importorskip("xdist")
    result = pytester.runpytest_subprocess("--autoresearch", "-n", "3", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*runs its own loop and does not distribute tests*drop --tx/--dist*"]
    )


@pytest.mark.parametrize(
    ("args", "ini", "expected"),
    [
        (("--autoresearch-outage", "45m"), "", 2700.0),
        ((), "[pytest]\nautoresearch_outage = 90s\n", 90.0),
        ((), "", 1800.0),  # the default: 30 minutes
    ],
)
def test_the_loop_settings_carry_the_budget_options(
    pytester: pytest.Pytester, args: tuple[str, ...], ini: str, expected: float
) -> None:
    from types import SimpleNamespace

    from pytest_autoresearch.research.session import _loop_settings

    if ini:
        pytester.makefile(".ini", pytest=ini)
    config = pytester.parseconfigure("--autoresearch", "--autoresearch-max-cost", "3", *args)
    plan = SimpleNamespace(
        root=pytester.path, program=None, tag="t", experiments=5, metric_ids=["t.py::m"],
        record_dir=pytester.path / ".autoresearch" / "t", proposer_name="optuna", lean=None,
    )  # fmt: skip
    settings = _loop_settings(config, plan)
    assert settings.outage == expected and settings.max_cost == 3.0
