"""One trial at a time, in the caller's thread: the serial loop, and one workspace.

``InPlaceExecutor`` is the research loop with one worker: the candidate is evaluated in the
user's checkout, where the proposer made it and where the controller leaves it until the
experiment ends (the loop's behaviour since the first version). ``SerialExecutor`` is the
same seam for tests and tools: a root to evaluate in place, or a ``Workspace`` where each
trial is applied first (like one worktree worker, minus the thread).
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_autoresearch.executors.base import EvaluateFn, Trial, TrialResult, run_trial

if TYPE_CHECKING:
    from pytest_autoresearch.sandbox.evaluate import Evaluation
    from pytest_autoresearch.vcs.workspace import Workspace

__all__ = ["BoundEvaluate", "InPlaceExecutor", "SerialExecutor", "Watch"]

# ``evaluate(metric_args, guard_args, timeout)``: an evaluation bound to its checkout,
# launcher and environment.
BoundEvaluate = Callable[[Sequence[str], Sequence[str], "float | None"], "Evaluation"]
# ``watch(trial)`` before a run returns ``done()``, called after it: what the run changed
# that it may not, one "path (why)" each (the controller's scope rules).
Watch = Callable[[Trial], Callable[[], list[str]]]


class InPlaceExecutor:
    """Evaluates each submitted trial in the checkout as it stands, when asked for results.

    ``in_place``: the controller does not restore its checkout after taking the snapshot;
    the trial's ``parent_sha``/``snapshot_sha`` are carried along for the record only.
    What a run wrote is judged here, by ``watch``, against the checkout itself: results
    carry ``refused`` instead of ``changed``/``created``.
    """

    capacity = 1
    in_place = True
    kind = "serial"

    def __init__(
        self, evaluate: BoundEvaluate, watch: Watch | None = None, *, worker: str = "serial"
    ) -> None:
        self.evaluate = evaluate
        self.watch = watch
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
        t0 = time.monotonic()
        result = TrialResult(trial.id, worker=self.worker, host=socket.gethostname())
        for _ in range(trial.runs):
            done = self.watch(trial) if self.watch is not None else list
            result.started.append(time.time())
            ev = self.evaluate(list(trial.metric_args), list(trial.guard_args), trial.timeout)
            result.evaluations.append(ev)
            result.refused.append(done())
        result.duration = time.monotonic() - t0
        return result


class SerialExecutor(InPlaceExecutor):
    """``InPlaceExecutor`` over a root and an ``EvaluateFn``, or one ``Workspace``."""

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
        super().__init__(self._bound, worker=worker)
        self.in_place = workspace is None
        self.root = Path(root) if root is not None else None
        self.workspace = workspace
        self.evaluate_fn = evaluate_fn
        self.env = dict(env or {})
        self.evaluate_kwargs = dict(evaluate_kwargs or {})
        self._trial: Trial | None = None

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
        self._trial = trial
        return super()._run(trial)

    def _bound(self, metric_args: Sequence[str], guard_args: Sequence[str], timeout: Any):
        evaluate_fn = self.evaluate_fn
        if evaluate_fn is None:
            from pytest_autoresearch.sandbox.evaluate import evaluate as evaluate_fn
        trial = self._trial
        assert trial is not None
        kwargs = dict(self.evaluate_kwargs)
        if trial.required:
            kwargs.setdefault("required", trial.required)
        if trial.extra_args:
            kwargs["extra_args"] = (*kwargs.get("extra_args", ()), *trial.extra_args)
        env = {**os.environ, **self.env, **trial.env_hints}
        return evaluate_fn(
            self.root, list(metric_args), list(guard_args), timeout, env=env, **kwargs
        )
