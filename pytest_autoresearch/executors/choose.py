"""The built-in answer to ``pytest_autoresearch_make_executor``: in place, worktrees, or Ray.

``make_executor`` turns the settings (``options.executor_settings``: the command line,
the ini file, program.md) into an executor:

- one worker and no Ray: None, so the session evaluates in the user's checkout, one
  experiment at a time (what it has always done);
- K > 1 workers: a ``WorktreeExecutor`` with K git worktrees under ``worktree_folder``,
  made at the research branch's HEAD (the session calls the hook once it is checked out);
- ``--autoresearch-ray``: a ``RayExecutor`` at that address, with K actors (or as many as
  the cluster holds), each asking for ``gpus_per_worker`` GPUs where the cluster has any.

Whatever keeps it from starting (too few GPUs, Ray not installed or not reachable, a
shared path git tracks) becomes a ``pytest.UsageError`` that says what to change.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_autoresearch.executors.base import Executor
    from pytest_autoresearch.program.options import ExecutorSettings
    from pytest_autoresearch.program.program_md import Program

__all__ = ["WORKTREES_DIR", "make_executor", "worktree_folder"]

WORKTREES_DIR = "autoresearch-worktrees"  # under the system's temp folder


def worktree_folder(root: Path | str) -> Path:
    """Where the workers' worktrees of ``root`` go: a temp folder named after the rootdir.

    Outside the work tree (the research repository's status would see the worktrees) and
    outside the record (the isolation launcher hides the record from evaluations, so a
    worktree inside it would be hidden from its own evaluation); stable per rootdir, so
    the next run prunes what a killed one left (``workspace.prune_stale``).
    """
    digest = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / WORKTREES_DIR / digest


def make_executor(
    settings: ExecutorSettings,
    root: Path,
    launcher: Any,
    record_dir: Path,
    program: Program,
    *,
    gpus: list[str] | None = None,
) -> Executor | None:
    """The executor ``settings`` ask for, or None for one experiment at a time in place.

    ``gpus``: the GPU ids to share out between worktree workers (None: detected).
    """
    if settings.ray is not None:
        return _ray(settings, root, program)
    workers = settings.workers or 1
    if workers == 1:
        return None
    from pytest_autoresearch.executors.worktree import WorktreeExecutor
    from pytest_autoresearch.vcs.workspace import WorkspaceError

    try:
        return WorktreeExecutor(
            root,
            worktree_folder(root),
            workers,
            sha="HEAD",  # the research branch, checked out before the hook is called
            gpus_per_worker=settings.gpus_per_worker,
            gpus=gpus,
            evaluate_kwargs={"launcher": launcher, "tmp_root": Path(record_dir) / "tmp"},
            shared=program.shared,
            is_editable=_editable_globs(program),
        )
    except (ValueError, WorkspaceError) as exc:
        # ValueError: plan_devices (too few GPUs), with the --autoresearch-workers that fits.
        raise pytest.UsageError(f"{workers} workers ({settings.workers_from}): {exc}") from None


def _ray(settings: ExecutorSettings, root: Path, program: Program) -> Executor:
    from pytest_autoresearch.executors.ray import RayExecutor

    try:
        return RayExecutor(
            root,
            settings.ray or "local",
            settings.workers,
            num_gpus=settings.gpus_per_worker,
            gpu_optional=True,  # a CPU-only cluster: the actors ask for no GPU
            sandbox=program.sandbox,
            network=program.network,
            shared=program.shared if "shared" in program.lines else None,
            is_editable=_editable_globs(program),
            caches=[str((root / Path(c).expanduser()).resolve()) for c in program.cache],
        )
    except ImportError as exc:
        raise pytest.UsageError(str(exc)) from None
    except (ConnectionError, ValueError) as exc:
        raise pytest.UsageError(f"--autoresearch-ray {settings.ray}: {exc}") from None


def _editable_globs(program: Program) -> Any:
    """What program.md's editable globs match, as written: never linked into a worker.

    Not ``program.is_editable``: the session has already taken the gitignored files the
    globs match out of the editable set, and those are exactly the ones a link would expose.
    """
    from pytest_autoresearch.program.globs import glob_to_regex

    patterns = [glob_to_regex(g) for g in program.editable]
    return lambda path: any(p.match(path) for p in patterns)
