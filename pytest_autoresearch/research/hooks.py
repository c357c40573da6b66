"""pytest hooks for ``--autoresearch``: options, ``-n`` interception, hand-off to the loop.

Like pytest-xdist's DSession, the research session takes over ``pytest_runtestloop``:
tests are collected as usual (so ``-k``, ``-m`` and paths select the metric tests),
then the loop runs them in fresh subprocesses instead of in this process.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from pytest_autoresearch.program.options import (
    _METAVARS,
    _N_FLAGS,
    _OPTIONS,
    RESULT_KEY,
    TRY_KEY,
    option,
    report_tag,
    try_description,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("autoresearch", "autoresearch (metric tests and the research loop)")
    group.addoption(
        "--autoresearch",
        action="store_true",
        default=False,
        help="run the research loop: propose edits to the files program.md allows, measure, "
        "keep real improvements on a research branch (see program.md)",
    )
    # A flag, so not in _OPTIONS (those take a value); publish.pr_enabled() reads both.
    group.addoption(
        "--autoresearch-pr",
        action="store_true",
        default=False,
        help="at the end, if something was kept, push the research branch and open or update "
        "one pull request (GitHub: GITHUB_TOKEN, GITHUB_REPOSITORY; see docs/ci.md)",
    )
    parser.addini("autoresearch_pr", "default for --autoresearch-pr", type="bool", default=False)
    # A command, not a setting: no ini key (one would turn every pytest run into a report).
    group.addoption(
        "--autoresearch-report",
        dest="autoresearch_report",
        type=report_tag,
        default=None,
        metavar="TAG",
        help="regenerate report.md, progress.png and report.html of the record "
        ".autoresearch/TAG from its journal, then exit without collecting or running anything",
    )
    _add_agent_commands(group)
    for name, type_, _default, help_text in _OPTIONS:
        flag = "--autoresearch-" + name.replace("_", "-")
        group.addoption(
            flag,
            dest="autoresearch_" + name,
            type=type_,
            default=None,
            metavar=_METAVARS[name],
            help=help_text,
        )
        parser.addini("autoresearch_" + name, f"default for {flag}", default=None)


def _add_agent_commands(group: Any) -> None:
    """Commands for outside agents (docs/agents.md): no ini keys, like --autoresearch-report."""
    group.addoption(
        "--autoresearch-try",
        dest="autoresearch_try",
        type=try_description,
        default=None,
        metavar="DESCRIPTION",
        help="judge the uncommitted change in the checkout as one experiment of the run "
        "(scope check, isolated evaluation, keep rule); prints 'autoresearch-try: VERDICT ...' "
        "and exits 0 keep, 1 discard, 2 crash or refused, 3 usage error",
    )
    group.addoption(
        "--autoresearch-json",
        action="store_true",
        default=False,
        help="with --autoresearch-try or --autoresearch-status: also print one JSON object "
        "(one line) an agent can parse",
    )
    group.addoption(
        "--autoresearch-status",
        action="store_true",
        default=False,
        help="print where the run of the tag stands (best, noise, the last experiments, "
        "NOTES.md) from its journal, without collecting or running anything",
    )
    group.addoption(
        "--autoresearch-init",
        action="store_true",
        default=False,
        help="write program.md from the collected metric tests, and an AGENTS.md section "
        "telling an agent how to loop with --autoresearch-try; never overwrites a file",
    )


# pytest-xdist's distribution options (they take a value) and their "--opt=value" forms.
_XDIST_VALUED = ("--numprocesses", "--maxprocesses", "--dist", "--tx", "--maxschedchunk")


def _xdist_option(args: list[str], i: int) -> tuple[str, str | None, int] | None:
    """(flag, value, width) when ``args[i]`` is an xdist distribution option, else None."""
    arg = args[i]
    nxt = args[i + 1] if i + 1 < len(args) else None
    if arg in _N_FLAGS or arg in _XDIST_VALUED:
        return ("-n" if arg in _N_FLAGS else arg), nxt, 2
    for flag in _XDIST_VALUED:
        if arg.startswith(flag + "="):
            return ("-n" if flag == "--numprocesses" else flag), arg.split("=", 1)[1], 1
    if arg.startswith("-n") and not arg.startswith("--") and len(arg) > 2:
        return "-n", arg[2:].lstrip("="), 1
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    """Under --autoresearch, '-n N' counts experiments: rewrite it before pytest-xdist sees it.

    Only the command line counts. pytest has already put the ini file's ``addopts`` and
    PYTEST_ADDOPTS in front of it; the usual ``-n auto`` / ``--dist load`` there configure
    test distribution, which a research session does not do, so they are dropped rather
    than taken as a number of experiments (or refused).
    """
    trying = not os.environ.get("AUTORESEARCH_EVAL") and any(
        a == "--autoresearch-try" or a.startswith("--autoresearch-try=") for a in args
    )
    if "--autoresearch" not in args and not trying:
        return
    if trying and "--autoresearch" not in args:  # out of the tree before any conftest imports it
        from pytest_autoresearch.research.agent_try import prepare

        prepare(early_config)
    cli = list(early_config.invocation_params.args)
    n_cli = len(cli)
    tail_matches = n_cli <= len(args) and args[len(args) - n_cli :] == cli
    first_cli = len(args) - n_cli if tail_matches else 0
    i = 0
    while i < len(args):
        if args[i] == "--":
            break
        found = _xdist_option(args, i)
        if found is None:
            i += 1
            continue
        flag, value, width = found
        if i < first_cli:  # from addopts / PYTEST_ADDOPTS
            del args[i : i + width]
            first_cli -= width
            continue
        if flag != "-n":
            raise pytest.UsageError(
                f"{flag}: --autoresearch runs its own loop and does not distribute tests with "
                "pytest-xdist; drop --tx/--dist (experiments run one at a time, each in a "
                "fresh process) and use -n for the number of experiments"
            )
        if value is None:
            raise pytest.UsageError("-n needs a number of experiments, e.g. -n 200")
        if not value.isdigit() or int(value) < 1:
            raise pytest.UsageError(
                f"-n {value}: under --autoresearch, -n is the number of experiments (e.g. -n 200); "
                "it cannot be 'auto' and experiments are not distributed over workers"
            )
        args[i : i + width] = ["--autoresearch-experiments", value]
        i += 2


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """--autoresearch-report TAG: the reports from a record, nothing run."""
    if config.getoption("autoresearch_status", False):
        from pytest_autoresearch.research.status import show_status

        return show_status(config)
    tag = config.getoption("autoresearch_report", None)
    if tag is None:
        return None
    if config.getoption("autoresearch"):
        raise pytest.UsageError(
            "--autoresearch-report regenerates the reports of a finished record without running "
            "anything; drop --autoresearch (a run rewrites its reports itself)"
        )
    from pytest_autoresearch.reporting.page_plugin import regenerate

    return regenerate(config, tag)


def pytest_configure(config: pytest.Config) -> None:
    trying = config.stash.get(TRY_KEY, None)
    if config.getoption("autoresearch_try", None) is not None and config.getoption("autoresearch"):
        raise pytest.UsageError(
            "--autoresearch-try judges one change an agent made; --autoresearch runs the "
            "loop with a proposer. Give one of them"
        )
    if trying is not None:
        config.option.autoresearch = True  # a try is one experiment of a research run
    if not config.getoption("autoresearch"):
        return
    # Resolve ini keys and defaults once, so everyone reads them with config.getoption().
    for name, *_rest in _OPTIONS:
        setattr(config.option, "autoresearch_" + name, option(config, name))
    if trying is not None:
        config.option.autoresearch_tag = trying.tag or config.option.autoresearch_tag
        config.option.autoresearch_proposer = "working-tree"
    if config.pluginmanager.has_plugin("dsession"):
        # Only reachable if xdist was told to distribute in some way we did not rewrite.
        raise pytest.UsageError(
            "--autoresearch runs its own loop and cannot be combined with pytest-xdist "
            "distribution; drop --dist/--tx, and use -n for the number of experiments"
        )
    from pytest_autoresearch.reporting.page_plugin import install

    install(config)  # report.html after every experiment; --autoresearch-serve


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session: pytest.Session) -> bool | None:
    """A try stopped before the loop: collect nothing (the agent's code stays unimported)."""
    trying = session.config.stash.get(TRY_KEY, None)
    return True if trying is not None and trying.error is not None else None


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    config = session.config
    if config.getoption("autoresearch_init", False) and not config.option.collectonly:
        from pytest_autoresearch.research.init_program import write_starting_point

        write_starting_point(session)
        return True
    if not config.getoption("autoresearch") or config.option.collectonly:
        return None
    if os.environ.get("AUTORESEARCH_EVAL"):
        # An evaluation subprocess (e.g. --autoresearch in PYTEST_ADDOPTS): run tests, no loop.
        return None
    if config.stash.get(TRY_KEY, None) is not None:
        from pytest_autoresearch.research.agent_try import run_try

        run_try(session)
        return True
    from pytest_autoresearch.research.session import run_research_session

    run_research_session(session)
    return True


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The research run's summary: baseline -> best, kept, branch, record, holdout."""
    if not config.getoption("autoresearch"):
        return
    found = config.stash.get(RESULT_KEY, None)
    if found is None:
        return
    from pytest_autoresearch.reporting import report

    result, records = found
    terminalreporter.write_sep("=", "autoresearch summary")
    for line in report.summary_lines(records, result):
        terminalreporter.write_line(line, red=line.startswith("WARNING"))


@pytest.hookimpl(trylast=True, specname="pytest_terminal_summary")
def pytest_terminal_summary_try(terminalreporter: Any, config: pytest.Config) -> None:
    """A try's verdict, last: the line an agent greps for (``autoresearch-try: ...``)."""
    trying = config.stash.get(TRY_KEY, None)
    if trying is None:
        return
    from pytest_autoresearch.research.agent_try import verdict_lines

    for line in verdict_lines(trying):
        terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A try's exit code (0 keep, 1 discard, 2 crash or refused, 3 usage); init's (0 or 3)."""
    trying = session.config.stash.get(TRY_KEY, None)
    code = trying.exit_code if trying is not None else None
    if session.config.getoption("autoresearch_init", False):
        from pytest_autoresearch.research.init_program import INIT_KEY

        code = session.config.stash.get(INIT_KEY, None)
    if code is not None:
        session.exitstatus = code


@pytest.hookimpl(trylast=True)
def pytest_autoresearch_make_proposer(name: str, config: pytest.Config):
    """The built-in proposers."""
    if name == "optuna":
        from pytest_autoresearch.proposers import optuna

        return optuna.build(config)
    if name == "anthropic":
        from pytest_autoresearch.proposers import anthropic

        return anthropic.build(config)
    if name == "openai":
        from pytest_autoresearch.proposers import openai

        return openai.build(config)
    if name == "hybrid" or name.startswith("hybrid:"):
        from pytest_autoresearch.proposers import hybrid

        return hybrid.build(config, name)
    if name == "working-tree":
        from pytest_autoresearch.proposers import working_tree

        return working_tree.build(config)
    return None


@pytest.hookimpl(trylast=True)
def pytest_autoresearch_make_executor(
    config: pytest.Config, settings: Any, root: Any, launcher: Any, record_dir: Any, program: Any
):
    """The built-in executors: None (one at a time, in place), worktrees, or Ray."""
    from pytest_autoresearch.executors.choose import make_executor

    return make_executor(settings, root, launcher, record_dir, program)
