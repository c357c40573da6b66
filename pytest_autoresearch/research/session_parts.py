"""The pieces of the --autoresearch session that come before the loop.

Reading program.md (relative to where pytest was started, or the rootdir), protecting what
measures, choosing the proposer and checking it, lean start, and the one-run-per-checkout
lock. Each fails with a ``pytest.UsageError`` that says what to change, before anything
is written.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pytest_autoresearch.program import options

PROGRAM_EXAMPLE = """\
---
editable: ["mypkg/hyperparams.py"]   # globs: the only files a proposal may change
objective: latency_ms                # a @metric name; its goal gives the direction
guards: ["tests/test_correctness.py"] # must pass for a change to be kept (optional)
---
# What to try
Free text for the proposer."""


def program_path(config: pytest.Config) -> Path:
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


def load_program(config: pytest.Config):
    from pytest_autoresearch.program.program_md import ProgramError, load_program

    path = program_path(config)
    if not path.is_file():
        raise pytest.UsageError(
            f"--autoresearch needs a research program, and {path} does not exist.\n"
            f"Create it (or pass --autoresearch-program PATH); a minimal one:\n\n{PROGRAM_EXAMPLE}"
        )
    try:
        return load_program(path, Path(config.rootpath))
    except ProgramError as exc:
        raise pytest.UsageError(str(exc)) from None


def protect_measurement(program: Any, session: pytest.Session, echo: Any) -> Any:
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


def make_proposer(config: pytest.Config, root: Path, program: Any, echo: Any) -> tuple[Any, str]:
    """The proposer the options choose, its key checked and its preflight said."""
    from pytest_autoresearch.proposers.base import ProposerFatal

    name, why = options.proposer_choice(config)
    try:
        proposer = config.hook.pytest_autoresearch_make_proposer(name=name, config=config)
    except ProposerFatal as exc:
        raise pytest.UsageError(f"proposer {name!r}: {exc}") from None
    except ImportError as exc:
        extra = name
        if name.startswith("hybrid"):  # the LLM half's SDK (both extras bring Optuna)
            extra = "openai" if "openai" in str(exc.name or exc) else "anthropic"
        raise pytest.UsageError(
            f"proposer {name!r} needs a package that is not installed ({exc.name or exc}); "
            f"install it with: pip install 'pytest-autoresearch[{extra}]'"
        ) from None
    if proposer is None:
        raise pytest.UsageError(
            f"no proposer called {name!r}: the built-in ones are optuna, anthropic, openai and "
            "hybrid; "
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
    preflight = getattr(proposer, "preflight", None)  # e.g. optuna: is there anything to tune?
    if preflight is not None:
        try:
            echo(preflight(root, program))
        except ProposerFatal as exc:
            proposer.close()
            raise pytest.UsageError(f"proposer {name!r}: {exc}") from None
    return proposer, name


class Lock:
    """One research run per checkout at a time: two would fight over HEAD and the tree.

    The lock lives in the work tree's git directory, so two tags in one checkout exclude
    each other, while separate worktrees of one repository do not.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / "autoresearch.lock"

    def __enter__(self) -> Lock:
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


def git_dir(root: Path) -> Path | None:
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


def lean_start(session: pytest.Session, program: Any, metric_ids: list[str], echo: Any) -> Any:
    """program.md ``lean:``: evaluations load only the plugins the metric tests need."""
    lean = getattr(program, "lean", False)
    if not lean:
        return None
    from pytest_autoresearch.research import lean

    keep = tuple(lean) if isinstance(lean, (tuple, list)) else ()
    start = lean.lean_start(session, metric_ids, list(program.guards), keep=keep)
    echo(start.why)
    return start
