"""An experiment in flight, from its first trial to its end: the loop's result handlers.

A part of ``ResearchLoop`` (research/loop.py) kept in its own file. Each result the
executor sends back is handled here, one at a time, in the controller's thread:

- what the run wrote outside the rules rejects the candidate (``refused`` when the
  executor judged it in place; ``changed``/``created`` from a worker's checkout);
- a crash or a failed guard goes back to the proposer for a repair (one conversation per
  candidate) until ``repair_attempts`` are spent;
- measured on the best commit: the keep rule decides (a confirm run and the fresh
  re-measurement of a keep are further trials of the same snapshot);
- measured on a commit that is no longer the best: ``stale.resolve`` says discard,
  re-base (the change on the new best, measured there from scratch) or ``stale``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytest_autoresearch.proposers.base import (
    Cost,
    Proposal,
    ProposalContext,
    ProposerError,
    ProposerUnavailable,
)
from pytest_autoresearch.research import decide, stale
from pytest_autoresearch.research.records import Failed, forget_values, iso, shown, take
from pytest_autoresearch.sandbox.fingerprint import is_code


@dataclass
class Candidate:
    """An experiment in flight: its record so far and where it stands."""

    rec: dict[str, Any]
    ctx: ProposalContext
    proposal: Proposal
    snapshot: str  # the commit holding exactly the candidate
    parent: str  # the best commit it was proposed (or re-based) on
    parent_best: tuple[float, int, float]  # (best, best_runs, anchor) of that commit
    t0: float
    kind: str = "candidate"  # its trial in flight: candidate|confirm|remeasure|rebase
    verdict: decide.Decision | None = None  # the keep verdict a confirm/remeasure completes
    attempt: int = 0  # repairs made so far
    cost: Cost = field(default_factory=Cost)  # the proposal's and its repairs'


class Candidates:
    """Mixed into ``ResearchLoop``: submitting trials and handling what comes back."""

    def _init_candidates(self: Any) -> None:
        self.pending: dict[str, Candidate] = {}  # trial id -> candidate

    def _trial_kwargs(self: Any) -> dict[str, Any]:
        return {
            "metric_args": tuple(self.s.metric_args),
            "guard_args": tuple(self.program.guards),
            "timeout": self.timeout,
            "required": (self.objective,),
            "env_hints": dict(self.s.eval_env),
            "extra_args": tuple(self.s.eval_args),
        }

    def _submit(self: Any, cand: Candidate, kind: str, runs: int = 1) -> None:
        from pytest_autoresearch.executors.base import Trial

        cand.kind = kind
        trial_id = f"{cand.rec['index']}.{next(self._trial_ids)}"
        trial = Trial(
            trial_id, cand.parent, snapshot_sha=cand.snapshot, runs=runs, **self._trial_kwargs()
        )
        self.pending[trial_id] = cand
        self.executor.submit(trial)

    # -- a result comes back --------------------------------------------------------------

    def _handle(self: Any, result: Any) -> None:
        cand = self.pending.pop(result.trial_id, None)
        if cand is None:
            return  # not ours (or already given up on)
        rec = cand.rec
        if not self.in_place:
            rec.setdefault("worker", result.worker)
            rec.setdefault("host", result.host)
        try:
            fresh = self._take_result(cand, result)
        except Failed as failed:
            self._failed(cand, failed)
            return
        best = self.repo.head()
        if cand.parent != best:
            self._overtaken(cand, best)
        elif cand.kind == "remeasure":
            self._keep(cand, fresh)
        else:
            self._judge(cand)

    def _take_result(self: Any, cand: Candidate, result: Any) -> list[float]:
        """Journal the trial's evaluations and take their values; the fresh runs of a keep.

        Raises Failed when a run wrote what it may not (rejected), or, outside a
        remeasurement, when it crashed, failed a guard or gave no value.
        """
        rec, kind = cand.rec, cand.kind
        measuring = kind in ("candidate", "rebase")
        fresh: list[float] = []
        for i, ev in enumerate(result.evaluations):
            rec["evaluations"].append(self._evaluation_entry(ev, kind, result, i))
            self.faults.at("evaluation" if measuring else "confirmation", rec["index"])
            bad = result.refused[i] if i < len(result.refused) else self._written(result, i)
            if bad:
                why = f"the evaluation changed files it may not change: {shown(bad)}"
                raise Failed("rejected", why)
            if kind != "remeasure":
                take(rec, ev, self.objective, self.program.constraints)
                continue
            scratch: dict[str, Any] = {"runs": [], "samples": {}, "metrics": {}, "guards": {}}
            try:
                take(scratch, ev, self.objective, self.program.constraints)
            except Failed:
                continue  # a failed fresh run is left out
            fresh.extend(scratch["runs"])
        if result.error and kind != "remeasure":
            why = f"worker {result.worker or '?'}: {result.error}"
            raise Failed("crash", why, repairable=False)
        return fresh

    def _evaluation_entry(self: Any, ev: Any, kind: str, result: Any, i: int) -> dict[str, Any]:
        entry = {
            "status": ev.status,
            "duration": round(ev.duration, 3),
            "confirm": kind not in ("candidate", "rebase"),
        }
        if not self.in_place:
            started = result.started[i] if i < len(result.started) else None
            entry.update(
                kind=kind, worker=result.worker, host=result.host,
                started=iso(started) if started is not None else None,
            )  # fmt: skip
        return entry

    def _written(self: Any, result: Any, i: int) -> list[str]:
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

    def _failed(self: Any, cand: Candidate, failed: Failed) -> None:
        """No usable value: repair it, or end it (a confirmation that failed discards)."""
        rec = cand.rec
        if failed.failure.status != "rejected":
            measuring = cand.kind in ("candidate", "rebase")
            if measuring and failed.repairable and cand.attempt < self.s.repair_attempts:
                self._repair(cand, failed)
                return
            if cand.kind == "confirm":
                self._end(cand, "discard", f"the confirmation run failed: {failed}")
                return
        rec["log_tail"] = failed.failure.log_tail or None
        # No valid measurement: an optimiser must not learn a value from it.
        self._end(cand, failed.status, failed.failure.reason, valid=False)

    # -- repairs: the candidate back in the checkout, the proposer fixes it ---------------

    def _repair(self: Any, cand: Candidate, failed: Failed) -> None:
        rec, f = cand.rec, failed.failure
        cand.attempt += 1
        rec["attempts"].append(
            {"status": f.status, "reason": f.reason, "log_tail": f.log_tail, "diff": rec["diff"]}
        )
        if not self._into_checkout(cand):
            rec["attempts"][-1]["repair_error"] = "the change no longer applies on the best commit"
            return self._give_up(cand, failed)
        self._proposing = rec["index"]
        try:
            fixed = self._ask_repair(cand, f)
        except ProposerError as exc:
            rec["attempts"][-1]["repair_error"] = str(exc)
            spent = getattr(exc, "cost", None)  # a failed repair's tokens are spent too
            cand.cost = cand.cost + spent if isinstance(spent, Cost) else cand.cost
            fixed = None
        finally:
            self._proposing = None
        if fixed is None:
            return self._give_up(cand, failed)
        cand.cost = cand.cost + fixed.cost
        rec["description"] = fixed.description or rec["description"]
        forget_values(rec)
        if self._checked(cand, f"repair attempt {cand.attempt}"):
            self._submit_candidate(cand)

    def _ask_repair(self: Any, cand: Candidate, f: Any) -> Proposal | None:
        """``proposer.repair``, waiting out an outage as a proposal does: the service being
        unavailable spends no repair attempt; past the outage allowance it is an error."""
        while True:
            try:
                fixed = self.proposer.repair(cand.ctx, f)
            except ProposerUnavailable as exc:
                spent = getattr(exc, "cost", None)
                cand.cost = cand.cost + spent if isinstance(spent, Cost) else cand.cost
                self.repo.restore()  # a half-made repair out; the candidate back in
                self.repo.load(cand.snapshot)
                self._unavailable(exc)
                if self._stopping:
                    raise ProposerError(f"no repair: {exc}") from None
                self.sleep(max(0.0, self._retry_at - self.clock()))
                continue
            self._outage_over()
            return fixed

    def _give_up(self: Any, cand: Candidate, failed: Failed) -> None:
        self.repo.restore()  # a half-made repair is not left in the checkout
        cand.rec["log_tail"] = failed.failure.log_tail or None
        self._end(cand, failed.status, failed.failure.reason, valid=False)

    def _into_checkout(self: Any, cand: Candidate) -> bool:
        """Put the candidate in the checkout for the proposer; False when it cannot be."""
        if self.in_place:
            return True  # it never left
        best = self.repo.head()
        if cand.parent != best:
            moved = self._rebased(cand, "re-based for a repair")
            if moved is None:
                return False
            self._adopt(cand, best, moved)
        self.repo.load(cand.snapshot)
        return True

    def _rebased(self: Any, cand: Candidate, why: str) -> str | None:
        """The candidate's change as a snapshot on the best commit; None when it conflicts."""
        rec = cand.rec
        return self.repo.rebased(
            cand.snapshot, f"candidate {rec['index']} ({why}): {rec['description']}"
        )

    def _adopt(self: Any, cand: Candidate, best: str, moved: str) -> None:
        """From now on the candidate is ``moved``, on ``best``, measured from scratch."""
        rec = cand.rec
        rec.setdefault("earlier", []).append(
            {"parent": cand.parent, "runs": rec["runs"], "objective": rec["objective"]}
        )
        forget_values(rec)
        rec["parent"] = best
        rec["best_before"] = rec["best_after"] = self.st.best
        rec["commit"] = moved
        diff = self.repo.diff_of(moved)
        added, removed = decide.code_lines_changed(diff)
        rec.update(diff=diff, lines_added=added, lines_removed=removed)
        cand.parent, cand.snapshot, cand.parent_best = best, moved, self.st.best_state()
        cand.verdict = None

    # -- the keep rule ----------------------------------------------------------------------

    def _judge(self: Any, cand: Candidate) -> None:
        """Measured on the best commit: confirm, keep (after a fresh re-measure) or discard."""
        rec = cand.rec
        verdict = self.st.decide(rec, self.st.best_state(), self.program.min_delta)
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

    def _keep(self: Any, cand: Candidate, fresh: list[float]) -> None:
        rec, verdict = cand.rec, cand.verdict
        assert verdict is not None
        self._carry(rec, verdict, fresh)
        # The measured snapshot under its final message: the same tree, the best as parent.
        rec["commit"] = self.repo.recommit(
            cand.snapshot,
            f"{rec['description']}\n\n{self.objective}: {self.st.best:.6g} -> "
            f"{verdict.new_best:.6g} (experiment {rec['index']}; {verdict.reason})",
        )
        self._end(cand, "keep", verdict.reason)

    def _carry(self: Any, rec: dict, verdict: decide.Decision, fresh: list[float]) -> None:
        """Into ``rec``: the best carried forward after a keep (decide.after_keep)."""
        carried = decide.after_keep(verdict, rec["runs"], fresh)
        rec["best_after"] = carried.best
        rec["kept"] = {
            "fresh_runs": fresh,
            "best_runs": carried.best_runs,
            "noise_groups": carried.noise_groups,
            "simplification": verdict.simplification,
        }
        if verdict.remeasure:
            self.echo(
                f"  [{rec['index']}] kept; measured again {len(fresh)} of {verdict.remeasure} "
                f"times: {self.objective} {carried.best:.6g} carried forward"
            )

    def _overtaken(self: Any, cand: Candidate, best: str) -> None:
        """Its parent is no longer the best: discard, re-base or drop it (stale.resolve)."""
        rec = cand.rec
        if cand.kind == "remeasure":
            promising = True  # it was judged a keep on its parent
        else:
            verdict = self.st.decide(rec, cand.parent_best, self.program.min_delta)
            rec["improvement"] = verdict.improvement
            promising = stale.promising(verdict.action)
        moved = self._rebased(cand, "re-based") if promising else None
        resolution = stale.resolve(
            parent=cand.parent, best=best, promising=promising,
            applies=(moved is not None) if promising else None, rebases=rec.get("rebased", 0),
        )  # fmt: skip
        if resolution.action == "discard":
            self._end(cand, "discard", resolution.reason)
        elif resolution.action == "stale":
            self._end(cand, "stale", resolution.reason, valid=False)
        else:
            assert moved is not None
            self._adopt(cand, best, moved)
            rec["rebased"] = rec.get("rebased", 0) + 1
            self.echo(f"  [{rec['index']}] {resolution.reason}")
            self._submit(cand, "rebase")
