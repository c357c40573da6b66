"""The --autoresearch session: wires pytest's collected tests to the loop's real parts.

Everything that can be checked before the tree is touched is checked first
(program.md, the metric tests, the proposer, the git state), so a bad input stops
the run with a clear message and nothing changed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pytest_autoresearch.program import options
from pytest_autoresearch.program.options import RESULT_KEY

PROGRAM_EXAMPLE = """\
---
editable: ["mypkg/hyperparams.py"]   # globs: the only files a proposal may change
objective: latency_ms                # a @metric name; its goal gives the direction
guards: ["tests/test_correctness.py"] # must pass for a change to be kept (optional)
---
# What to try
Free text for the proposer."""


def _program_path(config: pytest.Config) -> Path:
    given = config.getoption("autoresearch_program") or "program.md"
    path = Path(given)
    if not path.is_absolute():
        # Given on the command line: relative to where pytest was started; else to the rootdir.
        base = (
            Path(config.invocation_params.dir)
            if config.known_args_namespace.autoresearch_program
            else Path(config.rootpath)
        )
        path = base / path
    return path


def _load_program(config: pytest.Config):
    from pytest_autoresearch.program.program_md import ProgramError, load_program

    path = _program_path(config)
    if not path.is_file():
        raise pytest.UsageError(
            f"--autoresearch needs a research program, and {path} does not exist.\n"
            f"Create it (or pass --autoresearch-program PATH); a minimal one:\n\n{PROGRAM_EXAMPLE}"
        )
    try:
        return load_program(path, Path(config.rootpath))
    except ProgramError as exc:
        raise pytest.UsageError(str(exc)) from None


def _protect_measurement(program: Any, session: pytest.Session, echo: Any) -> Any:
    """Metric tests, guards and the ini file stay protected whatever the globs say."""
    root = Path(session.config.rootpath)
    why: dict[str, str] = {}
    for item in session.items:
        if item.get_closest_marker("metric") and item.path.is_relative_to(root):
            why.setdefault(item.path.relative_to(root).as_posix(), "a metric test")
    for guard in program.guards:
        why.setdefault(guard.split("::", 1)[0].rstrip("/"), "a guard")
    ini = session.config.inipath
    if ini is not None and Path(ini).is_relative_to(root):
        why.setdefault(Path(ini).relative_to(root).as_posix(), "pytest's configuration")
    program = program.with_protected(why)
    for line in program.protected_overlaps(root):
        echo(line, yellow=True)
    return program


def _make_proposer(config: pytest.Config, echo) -> tuple[Any, str]:
    from pytest_autoresearch.proposers.base import ProposerFatal

    name, why = options.proposer_choice(config)
    try:
        proposer = config.hook.pytest_autoresearch_make_proposer(name=name, config=config)
    except ProposerFatal as exc:
        raise pytest.UsageError(f"proposer {name!r}: {exc}") from None
    except ImportError as exc:
        raise pytest.UsageError(
            f"proposer {name!r} needs a package that is not installed ({exc.name or exc}); "
            f"install it with: pip install 'pytest-autoresearch[{name}]'"
        ) from None
    if proposer is None:
        raise pytest.UsageError(
            f"no proposer called {name!r}: the built-in ones are optuna, anthropic and openai; "
            "a plugin adds more through the pytest_autoresearch_make_proposer hook"
        )
    check = getattr(proposer, "check", None)  # e.g. a rejected API key: say so before any work
    if check is not None:
        try:
            check()
        except ProposerFatal as exc:
            proposer.close()
            raise pytest.UsageError(f"proposer {name!r}: {exc}") from None
    echo(f"proposer: {name} ({why})")
    return proposer, name


class _Lock:
    """One research run per checkout at a time: two would fight over HEAD and the tree.

    The lock lives in the work tree's git directory, so two tags in one checkout exclude
    each other, while separate worktrees of one repository do not.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / "autoresearch.lock"

    def __enter__(self) -> _Lock:
        from pytest_autoresearch.sandbox.evaluate import pid_alive

        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pid = self.path.read_text().strip()
            if pid.isdigit() and pid_alive(int(pid)):
                raise pytest.UsageError(
                    f"another research run (pid {pid}) is using this checkout (lock: "
                    f"{self.path}); wait for it to finish, or run in another git worktree "
                    "(git worktree add ../other) with its own tag"
                ) from None
            self.path.unlink(missing_ok=True)  # left by a killed run
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def _git_dir(root: Path) -> Path | None:
    """The work tree's own git directory (per worktree), or None outside a repository."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--absolute-git-dir"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return Path(out.stdout.strip())


def _lean_start(session: pytest.Session, program: Any, metric_ids: list[str], echo: Any) -> Any:
    """program.md ``lean:``: evaluations load only the plugins the metric tests need."""
    lean = getattr(program, "lean", False)
    if not lean:
        return None
    from pytest_autoresearch.research.lean import lean_start

    keep = tuple(lean) if isinstance(lean, (tuple, list)) else ()
    start = lean_start(session, metric_ids, list(program.guards), keep=keep)
    echo(start.why)
    return start


def _describe_executor(executor: Any, workers: Any) -> str:
    kind = getattr(executor, "kind", type(executor).__name__.removesuffix("Executor").lower())
    where = f" on Ray ({workers.ray})" if workers.ray else ""
    return (
        f"workers: {executor.capacity} {kind} worker(s){where}, one experiment each; "
        "proposals, decisions, commits and the journal stay here"
    )


def run_research_session(session: pytest.Session) -> None:
    """Run the research loop over the collected metric tests (called from runtestloop)."""
    from pytest_autoresearch import publish
    from pytest_autoresearch.reporting import report
    from pytest_autoresearch.research.journal import Journal, JournalError
    from pytest_autoresearch.research.loop import (
        FAULT_ENV,
        LoopError,
        LoopSettings,
        ResearchLoop,
        parse_fault,
    )
    from pytest_autoresearch.sandbox.evaluate import cleanup_stale, evaluate
    from pytest_autoresearch.sandbox.isolation import IsolationError, for_research
    from pytest_autoresearch.vcs.repo import ResearchRepo, VcsError

    config = session.config
    tr = config.pluginmanager.get_plugin("terminalreporter")

    def echo(line: str, **markup: bool) -> None:
        if tr is not None:
            tr.write_line(line, **markup)
        else:
            print(line, flush=True)

    root = Path(config.rootpath)
    program = _load_program(config)
    metric_ids = [item.nodeid for item in session.items if item.get_closest_marker("metric")]
    if not metric_ids:
        raise pytest.UsageError(
            "--autoresearch found no metric tests among the collected tests; write one with "
            "@metric(goal='min') (or the record_metric fixture), or check the paths, -k and -m "
            "you selected"
        )
    program = _protect_measurement(program, session, echo)
    tag = config.getoption("autoresearch_tag") or options.default_tag()
    record_dir = root / ".autoresearch" / tag
    experiments = config.getoption("autoresearch_experiments")
    publish.preflight(config, echo)  # --autoresearch-pr: token, repo, remote; before any work
    proposer, proposer_name = _make_proposer(config, echo)
    preflight = getattr(proposer, "preflight", None)  # e.g. optuna: is there anything to tune?
    if preflight is not None:
        from pytest_autoresearch.proposers.base import ProposerFatal

        try:
            echo(preflight(root, program))
        except ProposerFatal as exc:
            proposer.close()
            raise pytest.UsageError(f"proposer {proposer_name!r}: {exc}") from None

    workers = options.executor_settings(config, program)
    in_worktrees = workers.ray is None and (workers.workers or 1) > 1
    start = _lean_start(session, program, metric_ids, echo)

    with _Lock(_git_dir(root) or record_dir):
        # Everything that writes into the record comes after the lock: a refused second
        # run must leave no trace.
        try:
            launcher = for_research(
                root,
                record_dir,
                sandbox=program.sandbox,
                network=program.network,
                checkout_readonly=in_worktrees,
            )
        except IsolationError as exc:
            proposer.close()
            raise pytest.UsageError(str(exc)) from None
        echo(launcher.describe())
        cleanup_stale(record_dir / "tmp")  # left by a killed run (we hold the lock: not in use)
        journal = Journal(record_dir, program.objective)
        try:
            state = journal.load()
            repo = ResearchRepo(root, tag, program.is_editable, record_dir=record_dir)
            info = repo.start(in_flight=state.unfinished is not None or bool(state.decided))
        except (VcsError, JournalError) as exc:
            proposer.close()
            raise pytest.UsageError(str(exc)) from None
        if info.ignored_editable:  # a commit would silently drop them: never editable
            program = program.with_protected(dict.fromkeys(info.ignored_editable, "ignored by git"))
            echo(f"not editable, ignored by git: {', '.join(info.ignored_editable)}", yellow=True)
        echo(
            f"autoresearch {tag}: {experiments} experiments on branch {repo.branch}, "
            f"objective {program.objective}, {len(metric_ids)} metric test(s), "
            f"record in {record_dir}"
        )
        settings = LoopSettings(
            root=root,
            program=program,
            tag=tag,
            experiments=experiments,
            metric_args=metric_ids,
            record_dir=record_dir,
            max_cost=config.getoption("autoresearch_max_cost"),
            repair_attempts=config.getoption("autoresearch_repair_attempts"),
            proposer_name=proposer_name,
            fault=os.environ.get(FAULT_ENV),
            time_budget=config.getoption("autoresearch_time_budget"),
            eval_args=start.extra_args if start else (),
            eval_env=dict(start.env) if start else {},
        )
        executor = None
        try:
            parse_fault(settings.fault)
            executor = config.hook.pytest_autoresearch_make_executor(
                config=config,
                settings=workers,
                root=root,
                launcher=launcher,
                record_dir=record_dir,
                program=program,
            )
        except (LoopError, pytest.UsageError, ValueError, ImportError, ConnectionError) as exc:
            repo.finish()
            proposer.close()
            raise pytest.UsageError(str(exc)) from None
        common: dict[str, Any] = dict(
            repo=repo,
            proposer=proposer,
            journal=journal,
            echo=echo,
            on_record=lambda rec: config.hook.pytest_autoresearch_experiment_done(
                record=rec, config=config
            ),
        )
        if executor is None:
            env = {**os.environ, **settings.eval_env}
            loop = ResearchLoop(
                settings,
                evaluate=lambda metric_args, guard_args, timeout: evaluate(
                    root,
                    list(metric_args),
                    list(guard_args),
                    timeout,
                    launcher=launcher,
                    tmp_root=record_dir / "tmp",
                    extra_args=settings.eval_args,
                    env=env,
                ),  # fmt: skip
                **common,
            )
        else:
            from pytest_autoresearch.research.parallel import ParallelLoop

            echo(_describe_executor(executor, workers))
            loop = ParallelLoop(settings, executor=executor, **common)
        try:
            if loop.run().failed:
                echo(f"autoresearch stopped: {loop.result.stop_reason}", red=True)
                session.testsfailed += 1
        except (LoopError, VcsError, JournalError) as exc:
            # A state the loop cannot go on from (git refused, a file it cannot restore):
            # one clear line, the tree put back in finally, never an INTERNALERROR.
            echo(f"autoresearch stopped: {exc}", red=True)
            session.testsfailed += 1
        finally:
            try:
                if executor is not None:
                    executor.shutdown()  # evaluations killed, worktrees and actors removed
            finally:
                try:
                    repo.finish()
                finally:
                    proposer.close()
                    result = loop.result
                    if result is not None:
                        records = journal.load().records
                        config.stash[RESULT_KEY] = (result, records)
                        report.write_report(record_dir, records, result, program)
        publish.after_run(session, repo, echo)  # only kept, not interrupted, not failed
