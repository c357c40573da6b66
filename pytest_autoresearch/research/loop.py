"""The research loop: one controller over an executor, with 1 or K experiments in flight.

    baseline: trials of the best commit until the noise is measured
    then, until the count or a stop:
      propose (in the user's checkout) -> scope check -> snapshot -> submit
      for result in executor.as_completed():
          what the run wrote -> values -> repair (a crash, a failed guard)
          -> keep rule (confirm, keep after a fresh re-measure, discard)
          -> overtaken? (stale.resolve: discard, re-base, stale) -> journal

With one worker the executor evaluates in place (``InPlaceExecutor``: the candidate stays
in the checkout until its experiment ends); with K it is a worktree or a Ray executor and
the checkout is back at the best commit as soon as the candidate is a snapshot commit. The
keep is a compare-and-swap on the research branch, so two candidates are never both kept
on one parent. Every step exists once, for every K (docs/architecture.md).

It knows nothing of pytest internals, HTTP or subprocess details: its collaborators are
handed in, so tests drive it with small fakes (tests/fakes.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pytest_autoresearch.executors.base import Trial
from pytest_autoresearch.executors.serial import BoundEvaluate, InPlaceExecutor
from pytest_autoresearch.proposers.base import (
    Cost,
    Outcome,
    ProposalContext,
    Proposer,
    ProposerError,
    ProposerFatal,
    ProposerUnavailable,
)
from pytest_autoresearch.research import decide
from pytest_autoresearch.research.candidates import Candidate, Candidates
from pytest_autoresearch.research.checks import check_for
from pytest_autoresearch.research.faults import FAULT_ENV, FAULT_STEPS, Faults, parse_fault
from pytest_autoresearch.research.records import (
    Failed,
    LoopError,
    LoopResult,
    LoopSettings,
    new_record,
    now,
    shown,
)
from pytest_autoresearch.research.run_state import RunState
from pytest_autoresearch.research.sent_back import SendBack

__all__ = [
    "FAULT_ENV",
    "FAULT_STEPS",
    "LoopError",
    "LoopResult",
    "LoopSettings",
    "ResearchLoop",
    "parse_fault",
]


class ResearchLoop(SendBack, Candidates, RunState):
    """Runs experiments until the count, the cost cap, Ctrl-C or a fatal proposer error.

    ``executor``: where trials run (``executors/``); without one, ``evaluate`` is run in
    the user's checkout by an ``InPlaceExecutor``, one experiment at a time.
    """

    def __init__(
        self,
        settings: LoopSettings,
        *,
        repo: Any,  # vcs.repo.ResearchRepo (started)
        proposer: Proposer,
        journal: Any,  # research.journal.Journal
        executor: Any = None,
        evaluate: BoundEvaluate | None = None,
        echo: Callable[[str], None] = print,
        on_record: Callable[[dict], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.faults = Faults(settings.fault)  # a typo stops here, before anything runs
        if executor is None:
            if evaluate is None:
                raise LoopError("the loop needs an executor, or an evaluate function for in place")
            executor = InPlaceExecutor(evaluate, self._watch_checkout)
        self.s = settings
        self.program = settings.program
        self.objective = self.program.objective
        self.repo = repo
        self.executor = executor
        self.in_place = bool(getattr(executor, "in_place", False))
        self.capacity = max(1, int(executor.capacity))
        self.executor_kind = getattr(
            executor, "kind", type(executor).__name__.removesuffix("Executor").lower()
        )
        self.proposer = proposer
        self.journal = journal
        self.echo = echo
        self.on_record = on_record or (lambda rec: None)
        self.clock = clock
        self.sleep = sleep  # the back-off while the proposer is unavailable
        self._init_state()
        self._init_candidates()

    # -- the whole run ------------------------------------------------------------------

    def run(self) -> LoopResult:
        interrupted, failed = False, False
        stop_reason = f"reached {self.s.experiments} experiments"
        started = self.clock()
        state = self.journal.load()
        self.next_index = max(state.highest, state.next_index - 1) + 1
        self.journal.write(
            "session",
            tag=self.s.tag,
            proposer=self.s.proposer_name,
            experiments=self.s.experiments,
            workers=self.capacity,
            executor=self.executor_kind,
            at=now(),
        )
        try:
            if state.baseline is None:
                self._measure_baseline()
            else:
                self._resume(state)
            stop_reason, failed = self._drive(started, stop_reason)
        except KeyboardInterrupt:
            interrupted = True
            stop_reason = "interrupted (Ctrl-C)"
            self._interrupted()
            raise
        finally:
            self.journal.write("end", reason=stop_reason, done=self.done, at=now())
            self.result = self._result(stop_reason, interrupted, failed)
        return self.result

    def _result(self, stop_reason: str, interrupted: bool, failed: bool) -> LoopResult:
        holdout = self.program.holdout
        st = self.st
        return LoopResult(
            objective=self.objective,
            goal=st.goal,
            baseline=st.baseline,
            best=st.best,
            sigma=st.sigma,
            kept=st.kept,
            done=st.done,
            ran=self.ran,
            stop_reason=stop_reason,
            branch=getattr(self.repo, "branch", ""),
            record_dir=self.s.record_dir,
            holdout=holdout,
            holdout_baseline=st.baseline_metrics.get(holdout) if holdout else None,
            holdout_best=st.best_metrics.get(holdout) if holdout else None,
            holdout_goal=st.goals.get(holdout) if holdout else None,
            cost=st.cost,
            interrupted=interrupted,
            failed=failed,
            workers=self.capacity if self.executor_kind != "serial" else None,
        )

    def _drive(self, started: float, stop_reason: str) -> tuple[str, bool]:
        """Keep ``capacity`` experiments in flight; handle each result as it comes back."""
        self._fill(started)
        for result in self.executor.as_completed():
            try:
                self._handle(result)
            except ProposerFatal as exc:  # from a repair: that experiment is run again
                self._stop_fatal(exc)
            self._fill(started)
            self._show_workers()
        if self.pending:  # as_completed ends only when nothing is outstanding
            raise LoopError(
                f"the executor stopped with {len(self.pending)} trial(s) unmeasured; "
                "run the same command again to resume (they are run again)"
            )
        return self._stopping or (stop_reason, False)

    def _fill(self, started: float) -> None:
        """Propose until ``capacity`` experiments are in flight or no more may start."""
        while not self._stopping and len(self.pending) < self.capacity:
            if self.done + len(self.pending) >= self.s.experiments:
                return
            if not self._outage_allows():
                return  # backing off; a result coming back brings the loop here again
            why = self._stop_reason(started)
            if why:
                self._stopping = (why, False)
                return
            try:
                self._start(self._next_index())
            except ProposerUnavailable as exc:
                self._unavailable(exc)
            except ProposerFatal as exc:
                self._stop_fatal(exc)

    def _stop_fatal(self, exc: ProposerFatal) -> None:
        self.repo.restore()
        self._proposing = None
        self._stopping = (f"the proposer cannot go on: {exc}", True)

    def _interrupted(self) -> None:
        """Ctrl-C: stop the workers, discard the candidate; resume runs it again."""
        try:
            self.executor.shutdown()
        finally:
            self.repo.restore()
            for index in self.running_indices():
                self.journal.write("interrupted", index=index, at=now())

    def running_indices(self) -> list[int]:
        """Experiments started and not finished: being proposed or in flight."""
        indices = {c.rec["index"] for c in self.pending.values()}
        if self._proposing is not None:
            indices.add(self._proposing)
        return sorted(indices)

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

    # -- the baseline, measured by the executor -----------------------------------------

    def _measure_baseline(self) -> None:
        runs = self.program.baseline_runs
        values: list[float] = []
        per_metric: dict[str, list[float]] = {}
        slowest = 0.0
        at_once = "" if self.capacity == 1 else f", {self.capacity} at a time"
        self.echo(
            f"measuring the baseline (up to {runs} runs{at_once}) for the noise of {self.objective}"
        )
        in_flight = self._top_up_baseline(values, 0)
        for result in self.executor.as_completed():
            in_flight -= 1
            if result.error and not result.evaluations:
                raise LoopError(f"the baseline could not be measured: {result.error}")
            where = "" if self.in_place else f" on {result.worker}"
            for i, ev in enumerate(result.evaluations):
                self._check_baseline_run(ev)
                self._learn_outputs(result, i)
                self._take_baseline_run(ev, values, per_metric, where=where)
                slowest = max(slowest, ev.duration)
            in_flight += self._top_up_baseline(values, in_flight)
            if in_flight == 0:
                break
        if self.in_place:  # files the unchanged tests write are outputs, not a proposal's
            self.repo.out_of_scope(self.program.is_editable, after="evaluation")
        self._set_baseline(values, per_metric, slowest)

    def _top_up_baseline(self, values: list[float], in_flight: int) -> int:
        """Submit baseline runs up to capacity while more are needed; how many were added."""
        wanted = decide.baseline_runs_left(values, self.program.baseline_runs) - in_flight
        added = 0
        while wanted > 0 and in_flight + added < self.capacity:
            trial_id = f"baseline.{next(self._trial_ids)}"
            self.executor.submit(Trial(trial_id, self.repo.head(), **self._trial_kwargs()))
            wanted -= 1
            added += 1
        return added

    def _learn_outputs(self, result: Any, i: int) -> None:
        """What the unchanged code writes is an output; an edit of the editable files is not."""
        refused = result.refused[i] if i < len(result.refused) else []
        changed = result.changed[i] if i < len(result.changed) else []
        rewritten = [p for p in changed if self.program.is_editable(p)]
        if rewritten:
            refused = [
                "the unchanged code rewrote editable files "
                f"({', '.join(rewritten[:5])}); a candidate would be measured on other files "
                "than the ones kept. Make the tests leave them alone"
            ]
        if refused:
            raise LoopError(f"the baseline run cannot be trusted: {'; '.join(refused)}")
        self.outputs.update(changed)

    def _watch_checkout(self, trial: Trial) -> Callable[[], list[str]]:
        """In place: fingerprint the checkout before a run, judge what the run changed after."""
        before = self.repo.fingerprint()  # what is measured must be what is kept
        if trial.id.startswith("baseline."):

            def learned() -> list[str]:
                try:  # what the unchanged code writes is an output, not a later experiment's
                    self.repo.learn_baseline_outputs(before)
                except Exception as exc:  # vcs.VcsError: the loop knows nothing of git
                    return [str(exc)]
                return []

            return learned
        return lambda: self.repo.out_of_scope(
            self.program.is_editable, after="evaluation", since=before
        )

    def _check_baseline_run(self, ev: Any) -> None:
        if ev.status != "ok" or not ev.guards_passed:
            why = ev.reason or ("guards failed: " + ", ".join(ev.failed_guards))
            lean = (
                " (lean: is a plugin the tests need missing? list it under lean:, see docs/lean.md)"
                if getattr(self.program, "lean", False)
                else ""
            )
            raise LoopError(
                f"the baseline run failed ({why}). Fix the unmodified code first{lean}; nothing "
                f"was changed.\n--- last lines of its output ---\n{ev.log_tail}"
            )

    # -- one experiment: propose, check, submit ----------------------------------------

    def _context(self, index: int) -> ProposalContext:
        st = self.st
        return ProposalContext(
            root=self.s.root,
            program=self.program,
            editable_files=self.program.editable_files(self.s.root),
            objective=self.objective,
            goal=st.goal,
            best_value=st.best,
            baseline_value=st.baseline,
            noise=st.noise.sigma,
            history=list(st.history),
            experiment=index,
            total=self.s.experiments,
            state_dir=self.s.record_dir,
            metrics=dict(st.best_metrics),
            in_flight=[c.rec["description"] for c in self.pending.values()],
            seconds_per_experiment=(
                sum(st.durations) / len(st.durations) if st.durations else None
            ),
            sent_back=self.sent_back_lines(index),  # repeats sent back (research/sent_back.py)
            baseline_artifacts=st.baseline_artifacts,
        )

    def _start(self, index: int) -> None:
        self._proposing = index
        try:
            self._propose(index)
        finally:
            self._proposing = None

    def _propose(self, index: int) -> None:
        t0 = self.clock()
        rec = new_record(
            index, self.s.experiments, self.repo.head(), self.st.best, self.st.noise.sigma,
            self.s.proposer_name,
        )  # fmt: skip
        if index not in self._waiting:  # a retry after an outage was journaled already
            self.journal.write("start", index=index, parent=rec["parent"], at=rec["started"])
        self.faults.at("after-start", index)
        ctx = self._context(index)
        ctx.check = check_for(self, rec)  # the model's check tool (research/checks.py)
        try:
            proposal = self.proposer.propose(ctx)
        except ProposerUnavailable as exc:
            self.repo.restore()  # a half-made proposal is not left in the checkout
            self._waiting[index] = self._waiting.get(index, Cost()) + _spent(exc)
            self.rerun.insert(0, index)  # the same experiment, once the service is back
            raise
        except ProposerError as exc:
            self._outage_over()
            rec["durations"] = {"propose": self.clock() - t0}
            rec["cost"] = (_spent(exc) + self._waiting.pop(index, Cost())).as_dict()
            self._finish(rec, ctx, None, "error", f"proposer error: {exc}", t0)
            return
        self._outage_over()
        proposal.cost = proposal.cost + self._waiting.pop(index, Cost())
        rec["durations"] = {"propose": self.clock() - t0}
        rec.update(description=proposal.description, params=proposal.params)
        for key in ("made_by", "builds_on"):  # the hybrid proposer: which half, on what
            if proposal.extra.get(key) is not None:
                rec[key] = proposal.extra[key]
        self.faults.at("after-proposal", index)
        cand = Candidate(rec, ctx, proposal, "", rec["parent"], self.st.best_state(), t0)
        cand.cost = proposal.cost
        if not self._checked(cand, "proposal"):
            return
        if self._sent_back(cand):  # it repeats another: not measured, proposed again
            return
        self._submit_candidate(cand)
        if self.capacity > 1:
            self.echo(
                f"  [{index}] proposed: {rec['description'] or '(no description)'} "
                f"({len(self.pending)} in flight)"
            )

    def _checked(self, cand: Candidate, after: str) -> bool:
        """The scope check of a proposal or a repair; False when the experiment ended here."""
        rec = cand.rec
        try:
            self._check_scope(rec, after)
        except Failed as failed:
            self._discard(rec, "rejected")
            self._end(cand, "rejected", str(failed), valid=False)
            return False
        if not self.repo.changed_files():
            self._end(cand, "discard", "the proposal changed nothing")
            return False
        return True

    def _check_scope(self, rec: dict, after: str) -> None:
        """Reject the candidate when anything outside the editable files changed."""
        outside = self.repo.out_of_scope(self.program.is_editable, after="proposal")
        # Code lines only: deleted comments and blank lines do not make a change simpler.
        diff = self.repo.diff_text()
        added, removed = decide.code_lines_changed(diff)
        rec.update(diff=diff, lines_added=added, lines_removed=removed)
        if outside:
            why = f"the {after} changed files it may not change: {shown(outside)}"
            raise Failed("rejected", why)

    def _discard(self, rec: dict, status: str) -> None:
        """Keep a rejected proposal inspectable as a dangling commit (_finish restores)."""
        if self.repo.changed_files():
            rec["commit"] = self.repo.snapshot(f"{status}: {rec['description']}")

    def _submit_candidate(self, cand: Candidate) -> None:
        """The checkout's candidate as a snapshot commit, measured by the executor."""
        rec = cand.rec
        repaired = f" (repair {cand.attempt})" if cand.attempt else ""
        cand.snapshot = self.repo.snapshot(
            f"candidate {rec['index']}{repaired}: {rec['description']}"
        )
        rec["commit"] = cand.snapshot
        if not self.in_place:
            self.repo.restore()  # the checkout is the best commit again, for the next proposal
        self._submit(cand, "candidate")

    # -- the end of an experiment ---------------------------------------------------------

    def _end(self, cand: Candidate, status: str, reason: str, valid: bool = True) -> None:
        rec = cand.rec
        rec["cost"] = cand.cost.as_dict()
        self._finish(rec, cand.ctx, cand.proposal, status, reason, cand.t0, valid=valid)

    def _finish(
        self, rec: dict, ctx: ProposalContext, proposal: Any, status: str, reason: str,
        t0: float, valid: bool = True,
    ) -> None:  # fmt: skip
        """Journal (write-ahead), move the branch on a keep, restore, record, tell."""
        rec.pop("_values", None)
        propose = rec.get("durations", {}).get("propose", 0.0)
        evaluate = sum(e["duration"] for e in rec["evaluations"])
        total = self.clock() - t0
        rec["durations"] = {
            "propose": round(propose, 3), "evaluate": round(evaluate, 3), "total": round(total, 3)
        }  # fmt: skip
        rec.update(status=status, reason=reason, finished=now())
        rec.setdefault("decision", reason)
        # Write-ahead: the whole record first, then the step that cannot be undone, then
        # the record line. A kill anywhere in between is finished by _settle_decided.
        index = rec["index"]
        self.journal.decide(rec)
        if status == "keep":
            self.faults.at("before-commit", index)
            self.repo.advance_to(rec["commit"])
            self.faults.at("after-commit", index)
        else:
            self.faults.at("before-restore", index)
        self.repo.restore()
        if status != "keep":
            self.faults.at("after-restore", index)
        self.journal.record(rec)
        self.faults.at("after-record", index)
        self._learn(rec)
        self.ran += 1
        if proposal is not None:
            value = rec["objective"] if valid else None
            self.proposer.observe(ctx, proposal, Outcome(status, value, reason))
        self.on_record(rec)
        self.echo(self._line(rec))


def _spent(exc: ProposerError) -> Cost:
    """What a failed proposal spent (a plugin's error may not say: nothing then)."""
    cost = getattr(exc, "cost", None)
    return cost if isinstance(cost, Cost) else Cost()
