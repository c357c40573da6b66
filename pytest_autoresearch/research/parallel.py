"""K experiments in flight: the controller's side of parallel research (docs/parallel.md).

The controller proposes in the user's checkout, which sits at the best commit between
proposals: the proposer edits it, the scope is checked, the candidate becomes a snapshot
commit on top of the best and the checkout is restored at once. The snapshot goes to an
executor (``executors/``) as a ``Trial``; workers measure it in their own checkouts and
send back a ``TrialResult``. One ``for result in executor.as_completed()`` loop takes the
results in the order they finish, and each is handled in this thread, one at a time:

- what the run wrote (``result.changed``) outside the rules rejects it, as in the checkout;
- measured on the best commit: the keep rule decides (confirm runs and the fresh
  re-measurement of a keep are further trials of the same snapshot); a keep moves the
  research branch onto that very snapshot (re-committed under its final message, same tree);
- measured on a commit that is no longer the best: ``stale.resolve`` says discard, re-base
  (the change applied on the new best, measured there from scratch) or ``stale``.

So two candidates are never both kept on one parent: the keep is a compare-and-swap on
the branch, and the second finds its parent moved. The journal is the same write-ahead
journal as with one worker; several experiments may be started and undecided at once,
and a resumed run starts each of them again. Repairs of a crashed candidate are made
with one worker only: here a crash is recorded and the proposer sees it in its history.
"""

from __future__ import annotations

import datetime
import itertools
from dataclasses import dataclass
from typing import Any

from pytest_autoresearch.proposers.base import (
    Proposal,
    ProposalContext,
    ProposerError,
    ProposerFatal,
)
from pytest_autoresearch.research import decide, stale
from pytest_autoresearch.research.loop import LoopError, ResearchLoop, _Failed
from pytest_autoresearch.sandbox.fingerprint import is_code

__all__ = ["ParallelLoop"]


@dataclass
class _Candidate:
    """An experiment in flight: its record so far and where it stands."""

    rec: dict[str, Any]
    ctx: ProposalContext
    proposal: Proposal
    snapshot: str  # the commit holding exactly the candidate
    parent: str  # the best commit it was proposed (or re-based) on
    parent_best: tuple[float, int, float]  # (best, best_runs, anchor) of that commit
    t0: float
    kind: str = "candidate"  # what its trial in flight is: candidate|confirm|remeasure|rebase
    verdict: decide.Decision | None = None  # the keep verdict a remeasure trial completes


class ParallelLoop(ResearchLoop):
    """``ResearchLoop`` with an executor: up to ``executor.capacity`` experiments in flight."""

    def __init__(self, settings: Any, *, executor: Any, **kwargs: Any) -> None:
        kwargs.setdefault("evaluate", _no_evaluate)
        super().__init__(settings, **kwargs)
        self.executor = executor
        self.capacity = max(1, int(executor.capacity))
        self.executor_kind = getattr(
            executor, "kind", type(executor).__name__.removesuffix("Executor").lower()
        )
        self.pending: dict[str, _Candidate] = {}  # trial id -> candidate
        self.outputs: set[str] = set()  # paths the unchanged code writes (the baseline's)
        self._trial_ids = itertools.count(1)
        self._stopping: tuple[str, bool] | None = None

    # -- the baseline, measured by the workers ------------------------------------------

    def _measure_baseline(self) -> None:
        from pytest_autoresearch.executors.base import Trial

        runs = self.program.baseline_runs
        values: list[float] = []
        per_metric: dict[str, list[float]] = {}
        slowest = 0.0
        head = self.repo.head()
        self.echo(
            f"measuring the baseline (up to {runs} runs, {self.capacity} at a time) for the "
            f"noise of {self.objective}"
        )
        in_flight = 0

        def top_up() -> int:
            wanted = decide.baseline_runs_left(values, runs) - in_flight
            added = 0
            while wanted > 0 and in_flight + added < self.capacity:
                self.executor.submit(
                    Trial(f"baseline.{next(self._trial_ids)}", head, **self._trial_kwargs())
                )
                wanted -= 1
                added += 1
            return added

        in_flight += top_up()
        for result in self.executor.as_completed():
            in_flight -= 1
            if result.error and not result.evaluations:
                raise LoopError(f"the baseline could not be measured: {result.error}")
            for i, ev in enumerate(result.evaluations):
                self._check_baseline_run(ev)
                self._learn_outputs(result, i)
                self._take_baseline_run(ev, values, per_metric, where=f" on {result.worker}")
                slowest = max(slowest, ev.duration)
            in_flight += top_up()
            if in_flight == 0:
                break
        self._set_baseline(values, per_metric, slowest)

    def _learn_outputs(self, result: Any, i: int) -> None:
        """What the unchanged code writes is an output; an edit of the editable files is not."""
        changed = result.changed[i] if i < len(result.changed) else []
        rewritten = [p for p in changed if self.program.is_editable(p)]
        if rewritten:
            raise LoopError(
                "the baseline run cannot be trusted: the unchanged code rewrote editable "
                f"files ({', '.join(rewritten[:5])}); a candidate would be measured on other "
                "files than the ones kept. Make the tests leave them alone"
            )
        self.outputs.update(changed)

    # -- the controller loop ------------------------------------------------------------

    def _drive(self, started: float, stop_reason: str) -> tuple[str, bool]:
        self._fill(started)
        for result in self.executor.as_completed():
            self._handle(result)
            self._fill(started)
            self._show_workers()
        if self.pending:  # as_completed ends only when nothing is outstanding
            raise LoopError(
                f"the executor stopped with {len(self.pending)} trial(s) unmeasured; "
                "run the same command again to resume (they are run again)"
            )
        if self._stopping:
            return self._stopping
        return stop_reason, False

    def _show_workers(self) -> None:
        """One line: what each worker is measuring now (executors that say so)."""
        running = getattr(self.executor, "running", None)
        if not isinstance(running, dict) or not self.pending:
            return
        parts = []
        for worker, trial_id in running.items():
            cand = self.pending.get(trial_id) if trial_id else None
            parts.append(f"{worker} #{cand.rec['index']} {cand.kind}" if cand else f"{worker} -")
        queued = len(self.pending) - sum(1 for t in running.values() if t in self.pending)
        more = f"; {queued} queued" if queued > 0 else ""
        self.echo(f"  workers: {', '.join(parts)}{more}")

    def _fill(self, started: float) -> None:
        """Propose until ``capacity`` experiments are in flight or no more may start."""
        while not self._stopping and len(self.pending) < self.capacity:
            if self.done + len(self.pending) >= self.s.experiments:
                return
            why = self._stop_reason(started)
            if why:
                self._stopping = (why, False)
                return
            try:
                self._start(self._next_index())
            except ProposerFatal as exc:
                self.repo.restore()
                self._stopping = (f"the proposer cannot go on: {exc}", True)
                return

    def running_indices(self) -> list[int]:
        return sorted({c.rec["index"] for c in self.pending.values()})

    def _interrupted(self) -> None:
        """Ctrl-C: stop the workers; every experiment in flight is run again on resume."""
        try:
            self.executor.shutdown()
        finally:
            super()._interrupted()

    # -- starting one experiment ----------------------------------------------------------

    def _start(self, index: int) -> None:
        t0 = self.clock()
        rec = self._new_record(index)
        self.journal.write("start", index=index, parent=rec["parent"], at=rec["started"])
        self._fault("after-start", index)
        ctx = self._context(index)
        ctx.in_flight = [c.rec["description"] for c in self.pending.values()]
        try:
            proposal = self.proposer.propose(ctx)
        except ProposerError as exc:
            rec["durations"] = {"propose": self.clock() - t0}
            self._finish(rec, ctx, None, "error", f"proposer error: {exc}", t0)
            self.ran += 1
            return
        rec["durations"] = {"propose": self.clock() - t0}
        rec.update(description=proposal.description, params=proposal.params)
        rec["cost"] = proposal.cost.as_dict()
        self._fault("after-proposal", index)
        try:
            self._check_scope(rec, "proposal")
        except _Failed as failed:
            self._discard(rec, "rejected")
            self._finish(rec, ctx, proposal, "rejected", str(failed), t0, valid=False)
            self.ran += 1
            return
        if not self.repo.changed_files():
            self._finish(rec, ctx, proposal, "discard", "the proposal changed nothing", t0)
            self.ran += 1
            return
        snapshot = self.repo.snapshot(f"candidate {index}: {rec['description']}")
        self.repo.restore()  # the checkout is the best commit again, for the next proposal
        rec["commit"] = snapshot
        cand = _Candidate(rec, ctx, proposal, snapshot, rec["parent"], self._best_state(), t0)
        self._submit(cand, "candidate")
        self.echo(
            f"  [{index}] proposed: {rec['description'] or '(no description)'} "
            f"({len(self.pending)} in flight)"
        )

    def _best_state(self) -> tuple[float, int, float]:
        return (self.best, self.best_runs, self.anchor)

    def _trial_kwargs(self) -> dict[str, Any]:
        return {
            "metric_args": tuple(self.s.metric_args),
            "guard_args": tuple(self.program.guards),
            "timeout": self.timeout,
            "required": (self.objective,),
            "env_hints": dict(self.s.eval_env),
            "extra_args": tuple(self.s.eval_args),
        }

    def _submit(self, cand: _Candidate, kind: str, runs: int = 1) -> None:
        from pytest_autoresearch.executors.base import Trial

        cand.kind = kind
        trial_id = f"{cand.rec['index']}.{next(self._trial_ids)}"
        trial = Trial(
            trial_id, cand.parent, snapshot_sha=cand.snapshot, runs=runs, **self._trial_kwargs()
        )
        self.pending[trial_id] = cand
        self.executor.submit(trial)

    # -- a result comes back --------------------------------------------------------------

    def _handle(self, result: Any) -> None:
        cand = self.pending.pop(result.trial_id, None)
        if cand is None:
            return  # not ours (or already given up on)
        rec = cand.rec
        rec.setdefault("worker", result.worker)
        rec.setdefault("host", result.host)
        try:
            fresh = self._take_result(cand, result)
        except _Failed as failed:
            f = failed.failure
            status = {"rejected": "rejected", "guard": "discard"}.get(f.status, "crash")
            rec["log_tail"] = f.log_tail or None
            self._end(cand, status, f.reason, valid=False)
            return
        best = self.repo.head()
        if cand.parent != best:
            self._overtaken(cand, best)
        elif cand.kind == "remeasure":
            self._keep(cand, fresh)
        else:
            self._judge(cand)

    def _take_result(self, cand: _Candidate, result: Any) -> list[float]:
        """Journal the trial's evaluations and take their values; the fresh runs of a keep.

        Raises _Failed when a run wrote what it may not (rejected), or, outside a
        remeasurement, when it crashed, failed a guard or gave no value.
        """
        rec, kind = cand.rec, cand.kind
        fresh: list[float] = []
        for i, ev in enumerate(result.evaluations):
            rec["evaluations"].append(
                {
                    "status": ev.status,
                    "duration": round(ev.duration, 3),
                    "confirm": kind != "candidate" and kind != "rebase",
                    "kind": kind,
                    "worker": result.worker,
                    "host": result.host,
                    "started": _iso(result.started[i]) if i < len(result.started) else None,
                }
            )
            self._fault("evaluation" if kind in ("candidate", "rebase") else "confirmation",
                        rec["index"])  # fmt: skip
            bad = self._written(result, i)
            if bad:
                shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
                why = f"the evaluation changed files it may not change: {shown}"
                raise _Failed("rejected", why)
            if kind != "remeasure":
                self._take(rec, ev)
                continue
            scratch: dict[str, Any] = {"runs": [], "samples": {}, "metrics": {}, "guards": {}}
            try:
                self._take(scratch, ev)
            except _Failed:
                continue  # a failed fresh run is left out, as with one worker
            fresh.extend(scratch["runs"])
        if result.error and kind != "remeasure":
            raise _Failed("crash", f"worker {result.worker or '?'}: {result.error}")
        return fresh

    def _written(self, result: Any, i: int) -> list[str]:
        """What one run changed in its checkout that it may not: "path (why)" each."""
        changed = result.changed[i] if i < len(result.changed) else []
        created = set(result.created[i]) if i < len(result.created) else set()
        bad = []
        for path in changed:
            if path in self.outputs:
                continue  # the unchanged code writes it too
            if path not in created:
                bad.append(f"{path} (changed by the evaluation)")
            elif self.program.is_editable(path):
                bad.append(f"{path} (new file inside the editable set, written by the evaluation)")
            elif is_code(path) or self.program.protected_reason(path) is not None:
                bad.append(f"{path} (new code file, written by the evaluation)")
        return bad

    def _judge(self, cand: _Candidate) -> None:
        """Measured on the best commit: confirm, keep (after a fresh re-measure) or discard."""
        rec = cand.rec
        verdict = self._decide(rec)
        rec["improvement"] = verdict.improvement
        rec["decision"] = verdict.reason
        if verdict.action == "confirm":
            self.echo(f"  [{rec['index']}] {verdict.reason}")
            self._submit(cand, "confirm")
        elif verdict.action == "keep" and verdict.remeasure:
            cand.verdict = verdict
            self._submit(cand, "remeasure", runs=verdict.remeasure)
        elif verdict.action == "keep":
            cand.verdict = verdict
            self._keep(cand, [])
        else:
            self._end(cand, "discard", verdict.reason)

    def _keep(self, cand: _Candidate, fresh: list[float]) -> None:
        rec, verdict = cand.rec, cand.verdict
        assert verdict is not None
        self._carry(rec, verdict, fresh)
        # The measured snapshot under its final message: the same tree, the best as parent.
        rec["commit"] = self.repo.recommit(
            cand.snapshot,
            f"{rec['description']}\n\n{self.objective}: {self.best:.6g} -> "
            f"{verdict.new_best:.6g} (experiment {rec['index']}; {verdict.reason})",
        )
        self._end(cand, "keep", verdict.reason)

    def _overtaken(self, cand: _Candidate, best: str) -> None:
        """Its parent is no longer the best: discard, re-base or drop it (stale.resolve)."""
        rec = cand.rec
        if cand.kind == "remeasure":
            promising = True  # it was judged a keep on its parent
        else:
            verdict = self._decide_on(rec, cand.parent_best)
            rec["improvement"] = verdict.improvement
            promising = stale.promising(verdict.action)
        moved = None
        if promising:
            moved = self.repo.rebased(
                cand.snapshot, f"candidate {rec['index']} (re-based): {rec['description']}"
            )
        resolution = stale.resolve(
            parent=cand.parent,
            best=best,
            promising=promising,
            applies=(moved is not None) if promising else None,
            rebases=rec.get("rebased", 0),
        )
        if resolution.action == "discard":
            self._end(cand, "discard", resolution.reason)
        elif resolution.action == "stale":
            self._end(cand, "stale", resolution.reason, valid=False)
        else:
            assert moved is not None
            rec.setdefault("earlier", []).append(
                {"parent": cand.parent, "runs": rec["runs"], "objective": rec["objective"]}
            )
            rec.update(runs=[], samples={}, metrics={}, objective=None, parent=best)
            rec.pop("_values", None)
            rec["rebased"] = rec.get("rebased", 0) + 1
            rec["best_before"] = rec["best_after"] = self.best
            rec["commit"] = moved
            diff = self.repo.diff_of(moved)
            added, removed = decide.code_lines_changed(diff)
            rec.update(diff=diff, lines_added=added, lines_removed=removed)
            cand.parent, cand.snapshot, cand.parent_best = best, moved, self._best_state()
            cand.verdict = None
            self.echo(f"  [{rec['index']}] {resolution.reason}")
            self._submit(cand, "rebase")

    def _end(self, cand: _Candidate, status: str, reason: str, valid: bool = True) -> None:
        """Journal the experiment (write-ahead), move the branch on a keep, tell the proposer."""
        self._finish(cand.rec, cand.ctx, cand.proposal, status, reason, cand.t0, valid=valid)
        self.ran += 1


def _iso(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    return moment.isoformat(timespec="seconds")


def _no_evaluate(*args: Any, **kwargs: Any) -> Any:
    raise LoopError("with workers, evaluations run in the executor, not in the checkout")
