"""The line between the controller and its workers: what crosses it, and the Executor seam.

The controller (the loop) proposes, decides, commits and journals; a worker only
measures. What it is sent is a ``Trial`` (a parent commit plus the candidate's diff, or a
snapshot commit, and how to measure it); what comes back is a ``TrialResult`` (the
evaluations, who ran them where, and what the run changed). Both are plain picklable data:
no git objects, no open files, so they cross threads, processes and Ray alike.

``run_trial`` is the worker's whole job, shared by every executor: apply the candidate in a
workspace, evaluate it ``trial.runs`` times, note what each run changed, put the candidate
back. See docs/parallel.md for the executors and the keep semantics with K workers.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pytest_autoresearch.sandbox.evaluate import Evaluation
    from pytest_autoresearch.vcs.workspace import Workspace

__all__ = ["EvaluateFn", "Executor", "Trial", "TrialResult", "run_trial", "worker_env"]

# Set in every evaluation a worker runs: which worker, and how many CPU threads it may use
# (metric code may read it, e.g. torch.set_num_threads(int(os.environ[THREADS_ENV]))).
WORKER_ENV = "AUTORESEARCH_WORKER"
THREADS_ENV = "AUTORESEARCH_NUM_THREADS"


@dataclass(frozen=True)
class Trial:
    """One candidate to measure: ``parent`` + ``diff`` (or the commit ``snapshot``)."""

    id: str
    parent_sha: str
    diff: str = ""  # unified diff from parent_sha (git apply --binary); "" = the parent itself
    snapshot_sha: str | None = None  # a commit holding exactly the candidate (instead of diff)
    metric_args: tuple[str, ...] = ()  # node ids of the metric tests
    guard_args: tuple[str, ...] = ()  # pytest args of the guards
    timeout: float | None = None  # seconds per evaluation
    env_hints: Mapping[str, str] = field(default_factory=dict)  # extra environment variables
    runs: int = 1  # evaluations in a row (the baseline's runs, a confirmation)
    required: tuple[str, ...] = ()  # metric names that must have a value (the objective)
    extra_args: tuple[str, ...] = ()  # more pytest arguments (e.g. lean's ``-p`` plugins)

    def __post_init__(self) -> None:
        if self.runs < 1:
            raise ValueError(f"trial {self.id}: runs must be 1 or more, not {self.runs}")
        if not self.parent_sha:
            raise ValueError(f"trial {self.id}: parent_sha is required")
        # Tuples and a plain dict, whatever the caller passed: the trial must pickle.
        object.__setattr__(self, "metric_args", tuple(self.metric_args))
        object.__setattr__(self, "guard_args", tuple(self.guard_args))
        object.__setattr__(self, "required", tuple(self.required))
        object.__setattr__(self, "extra_args", tuple(self.extra_args))
        object.__setattr__(self, "env_hints", dict(self.env_hints))


@dataclass
class TrialResult:
    """What a worker measured for one trial. ``error`` set: it could not be measured at all."""

    trial_id: str
    evaluations: list[Evaluation] = field(default_factory=list)
    worker: str = ""
    host: str = ""
    duration: float = 0.0  # seconds on the worker, applying and cleaning up included
    error: str = ""  # one line: why nothing (or not all) was measured; "" when all ran
    stale: bool = False  # the diff did not apply on the parent (``error`` says how)
    changed: list[list[str]] = field(default_factory=list)  # per evaluation: paths it wrote
    created: list[list[str]] = field(default_factory=list)  # per evaluation: new files among them
    started: list[float] = field(default_factory=list)  # per evaluation: time.time() at its start
    # Per evaluation, when the executor judged the run itself (in place): what it changed
    # that it may not, one "path (why)" each. Empty: the controller judges ``changed``.
    refused: list[list[str]] = field(default_factory=list)
    attempts: int = 1  # 2 when the worker was lost once and the trial ran again
    notes: list[str] = field(default_factory=list)  # e.g. "worker lost (...), retried"

    @property
    def ok(self) -> bool:
        """Every run was carried out (each Evaluation may still be a crash or a timeout)."""
        return not self.error


@runtime_checkable
class Executor(Protocol):
    """Where trials run. ``capacity``: how many the controller should keep in flight.

    ``submit`` never blocks (trials queue up); ``as_completed`` yields results in the order
    they finish, including those of trials submitted while it is being iterated, and ends
    when none is pending, or when ``timeout`` seconds pass without a result (so the caller
    can check its budgets and come back). ``shutdown`` stops everything still running
    (evaluations are killed, not awaited) and removes the workspaces; it is idempotent.
    The loop's shape::

        for _ in range(executor.capacity):
            executor.submit(next_trial())
        for result in executor.as_completed():
            handle(result)            # decide / re-base / journal; may submit() more
    """

    capacity: int

    def submit(self, trial: Trial) -> None: ...

    def as_completed(self, timeout: float | None = None) -> Iterator[TrialResult]: ...

    def shutdown(self) -> None: ...


class EvaluateFn(Protocol):
    """``evaluate.evaluate``'s shape as the workers call it."""

    def __call__(
        self,
        root: Path,
        metric_args: Sequence[str],
        guard_args: Sequence[str],
        timeout: float | None,
        **kwargs: Any,
    ) -> Evaluation: ...


def worker_env(
    name: str,
    *,
    threads: int | None = None,
    gpus: Sequence[str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment hints of one worker: its name, its CPU threads, its GPUs.

    ``gpus``: device ids for CUDA_VISIBLE_DEVICES ([] hides every GPU; None leaves it as
    it is). ``threads``: OMP/MKL threads and THREADS_ENV, unless ``base`` (the user's
    environment) pins OMP_NUM_THREADS already.
    """
    base = os.environ if base is None else base
    env = {WORKER_ENV: name}
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    if threads is not None:
        env[THREADS_ENV] = str(threads)
        if "OMP_NUM_THREADS" not in base:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def run_trial(
    workspace: Workspace,
    trial: Trial,
    evaluate_fn: EvaluateFn | None = None,
    *,
    worker: str = "",
    env: Mapping[str, str] | None = None,
    evaluate_kwargs: Mapping[str, Any] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> TrialResult:
    """The worker's job: apply ``trial`` in ``workspace``, evaluate, restore; never raises.

    ``env``: the worker's environment hints (``worker_env``), under the trial's own hints;
    the evaluation starts from this process's environment plus both (evaluate strips
    secrets). ``evaluate_kwargs``: passed through (``launcher=``, ``tmp_root=``...).
    """
    from pytest_autoresearch.vcs.workspace import ApplyError

    if evaluate_fn is None:
        from pytest_autoresearch.sandbox.evaluate import evaluate as evaluate_fn
    t0 = time.monotonic()
    result = TrialResult(trial.id, worker=worker, host=socket.gethostname())
    full_env = {**os.environ, **(env or {}), **trial.env_hints}
    kwargs = dict(evaluate_kwargs or {})
    if trial.required:
        kwargs.setdefault("required", trial.required)
    if trial.extra_args:
        kwargs["extra_args"] = (*kwargs.get("extra_args", ()), *trial.extra_args)
    try:
        workspace.apply(trial.parent_sha, trial.diff, trial.snapshot_sha)
    except ApplyError as exc:
        result.error, result.stale = str(exc), True
    except Exception as exc:  # WorkspaceError, OSError: the trial is lost, the worker is not
        result.error = f"could not set up the candidate: {exc}"
    else:
        try:
            for _ in range(trial.runs):
                if should_stop():
                    result.error = "stopped before all runs were done"
                    break
                result.started.append(time.time())
                ev = evaluate_fn(
                    workspace.root,
                    list(trial.metric_args),
                    list(trial.guard_args),
                    trial.timeout,
                    env=full_env,
                    **kwargs,
                )
                result.evaluations.append(ev)
                kinds = workspace.changes_by_kind()
                result.changed.append(sorted(kinds))
                result.created.append(sorted(p for p, k in kinds.items() if k == "new"))
                workspace.restore()  # each run starts from exactly the candidate
        except Exception as exc:  # a broken workspace: say so, keep the runs made so far
            result.error = f"{type(exc).__name__}: {exc}"
    result.duration = time.monotonic() - t0
    return result
