"""One trial at a time, in this process: today's behaviour behind the Executor seam.

With a ``workspace`` each trial is applied there (like one worktree worker, minus the
thread). Without one, the trial is evaluated in ``root`` as it stands: the controller has
already put the candidate there (the proposer edits the user's checkout, as the loop has
always done), so ``parent_sha``/``diff`` are only carried along for the record.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_autoresearch.executors.base import EvaluateFn, Trial, TrialResult, run_trial

if TYPE_CHECKING:
    from pytest_autoresearch.vcs.workspace import Workspace


class SerialExecutor:
    """Runs each submitted trial when ``as_completed`` asks for the next result."""

    capacity = 1

    def __init__(
        self,
        root: Path | str | None = None,
        *,
        workspace: Workspace | None = None,
        evaluate_fn: EvaluateFn | None = None,
        env: Mapping[str, str] | None = None,
        evaluate_kwargs: Mapping[str, Any] | None = None,
        worker: str = "serial",
    ) -> None:
        if (root is None) == (workspace is None):
            raise ValueError("SerialExecutor needs either root (evaluate in place) or workspace")
        self.root = Path(root) if root is not None else None
        self.workspace = workspace
        self.evaluate_fn = evaluate_fn
        self.env = dict(env or {})
        self.evaluate_kwargs = dict(evaluate_kwargs or {})
        self.worker = worker
        self._pending: deque[Trial] = deque()
        self._closed = False

    def submit(self, trial: Trial) -> None:
        if self._closed:
            raise RuntimeError("the executor is shut down; make a new one")
        self._pending.append(trial)

    def as_completed(self, timeout: float | None = None) -> Iterator[TrialResult]:
        # ``timeout`` cannot cut a run short here (it runs in the caller's thread); the
        # evaluation's own timeout bounds it.
        while self._pending and not self._closed:
            yield self._run(self._pending.popleft())

    def shutdown(self) -> None:
        self._closed = True
        self._pending.clear()

    def _run(self, trial: Trial) -> TrialResult:
        if self.workspace is not None:
            return run_trial(
                self.workspace,
                trial,
                self.evaluate_fn,
                worker=self.worker,
                env=self.env,
                evaluate_kwargs=self.evaluate_kwargs,
            )
        return _run_in_place(
            self.root, trial, self.evaluate_fn, self.env, self.evaluate_kwargs, self.worker
        )


def _run_in_place(
    root: Path | None,
    trial: Trial,
    evaluate_fn: EvaluateFn | None,
    env: Mapping[str, str],
    evaluate_kwargs: Mapping[str, Any],
    worker: str,
) -> TrialResult:
    import os

    if evaluate_fn is None:
        from pytest_autoresearch.sandbox.evaluate import evaluate as evaluate_fn
    t0 = time.monotonic()
    result = TrialResult(trial.id, worker=worker, host=socket.gethostname())
    kwargs = dict(evaluate_kwargs)
    if trial.required:
        kwargs.setdefault("required", trial.required)
    if trial.extra_args:
        kwargs["extra_args"] = (*kwargs.get("extra_args", ()), *trial.extra_args)
    full_env = {**os.environ, **env, **trial.env_hints}
    for _ in range(trial.runs):
        result.started.append(time.time())
        ev = evaluate_fn(
            root, list(trial.metric_args), list(trial.guard_args), trial.timeout,
            env=full_env, **kwargs,
        )  # fmt: skip
        result.evaluations.append(ev)
        result.changed.append([])  # the controller's own scope check looks at its checkout
        result.created.append([])
    result.duration = time.monotonic() - t0
    return result
