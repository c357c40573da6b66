"""The --autoresearch session: wires pytest's collected tests to the loop's real parts.

``run_research_session`` is a short composition of named steps. Everything that can be
checked before the tree is touched is checked first (program.md, the metric tests, the
proposer, publishing), so a bad input stops the run with a clear message and nothing
changed; everything built after that is put back in reverse order whatever happens
(an ``ExitStack``): the executor's workers, the research branch, the proposer.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_autoresearch.program import options
from pytest_autoresearch.program.options import RESULT_KEY
from pytest_autoresearch.research.session_parts import (
    Lock,
    git_dir,
    lean_start,
    load_program,
    make_proposer,
    protect_measurement,
)


@dataclass
class Plan:
    """What the run will do, settled before anything is written."""

    root: Path
    program: Any  # program_md.Program
    metric_ids: list[str]
    tag: str
    record_dir: Path
    experiments: int
    proposer: Any
    proposer_name: str
    workers: Any  # options.ExecutorSettings
    lean: Any  # lean.LeanStart | None


def run_research_session(session: pytest.Session) -> None:
    """Run the research loop over the collected metric tests (called from runtestloop)."""
    from pytest_autoresearch import publish
    from pytest_autoresearch.reporting import page_plugin

    echo = _echo_for(session.config)
    plan = _plan(session, echo)
    session.config.stash[page_plugin.RECORD_KEY] = (plan.record_dir, plan.program)
    with Lock(git_dir(plan.root) or plan.record_dir):
        # Everything that writes into the record comes after the lock: a refused second
        # run must leave no trace.
        repo = _run(session, plan, echo)
    publish.after_run(session, repo, echo)  # only kept, not interrupted, not failed


def _echo_for(config: pytest.Config) -> Any:
    tr = config.pluginmanager.get_plugin("terminalreporter")

    def echo(line: str, **markup: bool) -> None:
        if tr is not None:
            tr.write_line(line, **markup)
        else:
            print(line, flush=True)

    return echo


def _plan(session: pytest.Session, echo: Any) -> Plan:
    """program.md, the metric tests, publishing and the proposer: checked, nothing written."""
    from pytest_autoresearch import publish

    config = session.config
    root = Path(config.rootpath)
    program = load_program(config)
    metric_ids = [item.nodeid for item in session.items if item.get_closest_marker("metric")]
    if not metric_ids:
        raise pytest.UsageError(
            "--autoresearch found no metric tests among the collected tests; write one with "
            "@metric(goal='min') (or the record_metric fixture), or check the paths, -k and -m "
            "you selected"
        )
    program = protect_measurement(program, session, echo)
    tag = config.getoption("autoresearch_tag") or options.default_tag()
    publish.preflight(config, echo)  # --autoresearch-pr: token, repo, remote; before any work
    proposer, proposer_name = make_proposer(config, root, program, echo)
    return Plan(
        root=root,
        program=program,
        metric_ids=metric_ids,
        tag=tag,
        record_dir=root / ".autoresearch" / tag,
        experiments=config.getoption("autoresearch_experiments"),
        proposer=proposer,
        proposer_name=proposer_name,
        workers=options.executor_settings(config, program),
        lean=lean_start(session, program, metric_ids, echo),
    )


def _run(session: pytest.Session, plan: Plan, echo: Any, *, stay: bool = False) -> Any:
    """Build the parts, run the loop, report; every part put back in reverse order.

    ``stay``: end on the research branch (its best commit, a clean tree) instead of the
    user's branch: an outside agent's next change must start from the best (agent_try.py).
    """
    from pytest_autoresearch.research.journal import JournalError
    from pytest_autoresearch.research.loop import LoopError
    from pytest_autoresearch.vcs.repo import VcsError

    with contextlib.ExitStack() as undo:
        undo.callback(plan.proposer.close)
        launcher = _launcher(plan)
        echo(launcher.describe())
        journal, repo = _start_branch(plan, undo, echo, stay=stay)
        loop = _make_loop(session.config, plan, launcher, journal, repo, echo, undo)
        try:
            if loop.run().failed:
                echo(f"autoresearch stopped: {loop.result.stop_reason}", red=True)
                session.testsfailed += 1
        except (LoopError, VcsError, JournalError) as exc:
            # A state the loop cannot go on from (git refused, a file it cannot restore):
            # one clear line, the tree put back by the exit stack, never an INTERNALERROR.
            echo(f"autoresearch stopped: {exc}", red=True)
            session.testsfailed += 1
    return repo


def _launcher(plan: Plan) -> Any:
    """How evaluations are isolated (namespaces where the system has them)."""
    from pytest_autoresearch.sandbox.evaluate import cleanup_stale
    from pytest_autoresearch.sandbox.isolation import IsolationError, for_research

    workers = plan.workers
    try:
        launcher = for_research(
            plan.root,
            plan.record_dir,
            sandbox=plan.program.sandbox,
            network=plan.program.network,
            checkout_readonly=workers.ray is None and (workers.workers or 1) > 1,
            caches=plan.program.cache,
        )
    except IsolationError as exc:
        raise pytest.UsageError(str(exc)) from None
    cleanup_stale(plan.record_dir / "tmp")  # left by a killed run (we hold the lock: not in use)
    return launcher


def _start_branch(
    plan: Plan, undo: contextlib.ExitStack, echo: Any, *, stay: bool = False
) -> tuple[Any, Any]:
    """The journal read back and the research branch checked out (``repo.finish`` undoes;
    with ``stay``, ``repo.restore``: the tree clean, the research branch still checked out)."""
    from pytest_autoresearch.research.journal import Journal, JournalError
    from pytest_autoresearch.vcs.repo import ResearchRepo, VcsError

    journal = Journal(plan.record_dir, plan.program.objective)
    try:
        state = journal.load()
        program, record_dir = plan.program, plan.record_dir
        repo = ResearchRepo(plan.root, plan.tag, program.is_editable, record_dir=record_dir)
        info = repo.start(in_flight=state.unfinished is not None or bool(state.decided))
    except (VcsError, JournalError) as exc:
        raise pytest.UsageError(str(exc)) from None
    undo.callback(repo.restore if stay else repo.finish)
    if info.ignored_editable:  # a commit would silently drop them: never editable
        plan.program = plan.program.with_protected(
            dict.fromkeys(info.ignored_editable, "ignored by git")
        )
        echo(f"not editable, ignored by git: {', '.join(info.ignored_editable)}", yellow=True)
    echo(
        f"autoresearch {plan.tag}: {plan.experiments} experiments on branch {repo.branch}, "
        f"objective {plan.program.objective}, {len(plan.metric_ids)} metric test(s), "
        f"record in {plan.record_dir}"
    )
    return journal, repo


def _make_loop(
    config: pytest.Config,
    plan: Plan,
    launcher: Any,
    journal: Any,
    repo: Any,
    echo: Any,
    undo: contextlib.ExitStack,
) -> Any:
    """The loop over the executor the hook chooses (None: in place); its report on exit."""
    from pytest_autoresearch.research.loop import LoopError, ResearchLoop, parse_fault

    settings = _loop_settings(config, plan)
    check = _in_place(plan, _check_launcher(plan, launcher), settings, metrics=False)
    settings.check = check  # the model's check tool (research/checks.py)
    try:
        parse_fault(settings.fault)  # a typo is an error before any worker is started
        executor = config.hook.pytest_autoresearch_make_executor(
            config=config,
            settings=plan.workers,
            root=plan.root,
            launcher=launcher,
            record_dir=plan.record_dir,
            program=plan.program,
        )
        if executor is not None:
            undo.callback(executor.shutdown)  # evaluations killed, worktrees, actors removed
            echo(_describe_executor(executor, plan.workers))
            for note in getattr(executor, "notes", ()):  # e.g. ignored files not linked, and why
                echo(note, yellow=True)
        loop = ResearchLoop(
            settings,
            executor=executor,
            evaluate=None if executor is not None else _in_place(plan, launcher, settings),
            repo=repo,
            proposer=plan.proposer,
            journal=journal,
            echo=echo,
            on_record=lambda rec: config.hook.pytest_autoresearch_experiment_done(
                record=rec, config=config
            ),
        )
    except (LoopError, pytest.UsageError, ValueError, ImportError, ConnectionError) as exc:
        raise pytest.UsageError(str(exc)) from None
    undo.callback(_report, config, plan, journal, loop)  # after the executor's shutdown
    return loop


def _loop_settings(config: pytest.Config, plan: Plan) -> Any:
    from pytest_autoresearch.research.loop import FAULT_ENV, LoopSettings

    return LoopSettings(
        root=plan.root,
        program=plan.program,
        tag=plan.tag,
        experiments=plan.experiments,
        metric_args=plan.metric_ids,
        record_dir=plan.record_dir,
        max_cost=config.getoption("autoresearch_max_cost"),
        repair_attempts=config.getoption("autoresearch_repair_attempts"),
        proposer_name=plan.proposer_name,
        fault=os.environ.get(FAULT_ENV),
        time_budget=config.getoption("autoresearch_time_budget"),
        outage=config.getoption("autoresearch_outage"),
        eval_args=plan.lean.extra_args if plan.lean else (),
        eval_env=dict(plan.lean.env) if plan.lean else {},
    )


def _in_place(plan: Plan, launcher: Any, settings: Any, *, metrics: bool = True) -> Any:
    """One evaluation in the user's checkout, as the in-place executor calls it; with
    ``metrics=False``, ``check(args, timeout)``: the check tool's tests (research/checks.py)."""
    from pytest_autoresearch.sandbox.evaluate import evaluate

    env = {**os.environ, **settings.eval_env}

    def evaluate_here(metric_args: Any, guard_args: Any, timeout: Any) -> Any:
        return evaluate(
            plan.root, list(metric_args), list(guard_args), timeout, launcher=launcher,
            tmp_root=plan.record_dir / "tmp", extra_args=settings.eval_args, env=env,
        )  # fmt: skip

    if not metrics:
        return lambda args, timeout: evaluate_here([], args, timeout)
    return evaluate_here


def _check_launcher(plan: Plan, launcher: Any) -> Any:
    """The launcher of the check tool, which runs the tests in the user's checkout.

    With worktree workers that checkout is read-only to evaluations (they run in their
    own checkouts, which they may write): the check gets a launcher like theirs in all
    but that, so a test that writes where it runs passes here as it would there (what it
    wrote is removed after the check). It shares the evaluations' cache guard.
    """
    workers = plan.workers
    if workers.ray is not None or (workers.workers or 1) <= 1:
        return launcher  # the checkout is where evaluations run (or on Ray, not read-only)
    from pytest_autoresearch.sandbox.caches import guard_of
    from pytest_autoresearch.sandbox.isolation import for_research

    own = for_research(
        plan.root,
        plan.record_dir,
        sandbox=plan.program.sandbox,
        network=plan.program.network,
        caches=plan.program.cache,
    )
    guard = guard_of(launcher)
    if guard is not None:
        own.cache_guard = guard  # one guard: the caches are verified around every run
    return own


def _describe_executor(executor: Any, workers: Any) -> str:
    kind = getattr(executor, "kind", type(executor).__name__.removesuffix("Executor").lower())
    where = f" on Ray ({workers.ray})" if workers.ray else ""
    return (
        f"workers: {executor.capacity} {kind} worker(s){where}, one experiment each; "
        "proposals, decisions, commits and the journal stay here"
    )


def _report(config: pytest.Config, plan: Plan, journal: Any, loop: Any) -> None:
    """report.md and progress.png, and the result for the terminal summary."""
    from pytest_autoresearch.reporting import report

    result = loop.result
    if result is None:
        return
    records = journal.load().records
    config.stash[RESULT_KEY] = (result, records)
    report.write_report(plan.record_dir, records, result, plan.program)
