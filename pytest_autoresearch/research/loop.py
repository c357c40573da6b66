"""The research loop: baseline, then propose -> scope check -> evaluate -> decide -> record.

It knows nothing of pytest internals, HTTP or subprocess details: its collaborators
are handed in (see ``ResearchLoop.__init__``), so tests can drive it with small
fakes while the real parts are tested on their own.
"""

from __future__ import annotations

import datetime
import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pytest_autoresearch.metrics import stats
from pytest_autoresearch.program.budget import time_left_allows
from pytest_autoresearch.proposers.base import (
    Cost,
    Failure,
    Outcome,
    PastExperiment,
    Proposal,
    ProposalContext,
    Proposer,
    ProposerError,
    ProposerFatal,
)
from pytest_autoresearch.research import decide

# Without a timeout in program.md the baseline may take up to this long; the
# per-experiment timeout is then derived from how long the baseline took.
BASELINE_TIMEOUT = 3600.0

# Fault injection for the crash-safety tests: AUTORESEARCH_FAULT=STEP or STEP:INDEX kills the
# loop with SIGKILL at that step (of that experiment), as a power cut or kill -9 would.
FAULT_ENV = "AUTORESEARCH_FAULT"
FAULT_STEPS = (
    "baseline",  # after the first baseline run, before the baseline is journaled
    "after-start",  # the experiment's start line is written, nothing proposed yet
    "after-proposal",  # the proposer has edited the tree, nothing checked yet
    "evaluation",  # after the candidate's first evaluation
    "confirmation",  # after a confirmation run
    "before-commit",  # a keep is journaled (write-ahead), the branch has not moved
    "after-commit",  # the branch moved, the experiment's record is not written
    "before-restore",  # a discard is journaled (write-ahead), the tree is not restored
    "after-restore",  # the tree is restored, the experiment's record is not written
    "after-record",  # the record is written
)


class LoopError(Exception):
    """The loop cannot start or go on; the message says why and what to do."""


class Evaluator(Protocol):
    def __call__(
        self, metric_args: Sequence[str], guard_args: Sequence[str], timeout: float
    ) -> Any: ...


@dataclass
class LoopSettings:
    root: Path  # pytest's rootdir: program.md globs are relative to it
    program: Any  # program.Program
    tag: str
    experiments: int  # the total to reach, counting journaled ones of a resumed run
    metric_args: list[str]  # node ids of the collected metric tests
    record_dir: Path
    max_cost: float | None = None
    repair_attempts: int = 2
    proposer_name: str = ""
    fault: str | None = None  # FAULT_ENV's value: where to kill the loop (tests only)
    time_budget: float | None = None  # seconds for this run; no experiment starts past it
    eval_args: tuple[str, ...] = ()  # more pytest arguments for every evaluation (lean)
    eval_env: dict[str, str] = field(default_factory=dict)  # more environment (lean)


@dataclass
class LoopResult:
    """How the run ended, for the summary and report."""

    objective: str
    goal: str
    baseline: float
    best: float
    sigma: float
    kept: int
    done: int  # experiments journaled in total for this tag
    ran: int  # experiments run by this call
    stop_reason: str
    branch: str
    record_dir: Path
    holdout: str | None = None
    holdout_baseline: float | None = None
    holdout_best: float | None = None
    holdout_goal: str | None = None
    cost: Cost = field(default_factory=Cost)
    interrupted: bool = False
    failed: bool = False  # stopped by an error (the session exits non-zero)
    workers: int | None = None  # experiments in flight at once, when run by an executor


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class _Failed(Exception):
    """An evaluation that produced no usable objective value (crash, timeout, guard, scope)."""

    def __init__(self, status: str, reason: str, log_tail: str = "") -> None:
        super().__init__(reason)
        self.failure = Failure(status, reason, log_tail)


class ResearchLoop:
    """Runs experiments until the count, the cost cap, Ctrl-C or a fatal proposer error."""

    def __init__(
        self,
        settings: LoopSettings,
        *,
        repo: Any,  # vcs.ResearchRepo (started)
        evaluate: Evaluator,
        proposer: Proposer,
        journal: Any,  # journal.Journal
        echo: Callable[[str], None] = print,
        on_record: Callable[[dict], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.s = settings
        self.program = settings.program
        self.objective = self.program.objective
        self.repo = repo
        self.evaluate = evaluate
        self.proposer = proposer
        self.journal = journal
        self.echo = echo
        self.on_record = on_record or (lambda rec: None)
        self.clock = clock
        self.goal = "min"
        self.goals: dict[str, str] = {}
        self.baseline = self.best = math.nan
        self.best_runs = 1
        # The best as of the last keep that was a real gain, not a simplification: a chain
        # of "equal but simpler" keeps may not drift away from it (decide.keep_decision).
        self.anchor = math.nan
        self.best_metrics: dict[str, float] = {}
        self.baseline_metrics: dict[str, float] = {}
        # Groups of repeated runs of one code version (the baseline, confirmed candidates):
        # the spread within a group is noise; differences between groups are not.
        self.noise_groups: list[list[float]] = []
        self.timeout = float(self.program.timeout or BASELINE_TIMEOUT)
        self.history: list[PastExperiment] = []
        self.cost = Cost()
        self.kept = 0
        self.done = 0
        self.durations: list[float] = []
        self.result: LoopResult | None = None
        self._fault_plan = parse_fault(settings.fault)
        self.ran = 0  # experiments finished by this call
        self.next_index = 1
        self.rerun: list[int] = []  # experiments cut short last time: run again first
        self._current: int | None = None  # the experiment under way (one at a time)
        self.capacity = 1  # experiments in flight at once
        self.executor_kind = "serial"

    @property
    def noise(self) -> stats.NoiseEstimate:
        return stats.pooled_noise(self.noise_groups)

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
            at=_now(),
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
            self.journal.write("end", reason=stop_reason, done=self.done, at=_now())
            holdout = self.program.holdout
            self.result = LoopResult(
                objective=self.objective,
                goal=self.goal,
                baseline=self.baseline,
                best=self.best,
                sigma=self.noise.sigma if self.noise_groups else 0.0,
                kept=self.kept,
                done=self.done,
                ran=self.ran,
                stop_reason=stop_reason,
                branch=getattr(self.repo, "branch", ""),
                record_dir=self.s.record_dir,
                holdout=holdout,
                holdout_baseline=self.baseline_metrics.get(holdout) if holdout else None,
                holdout_best=self.best_metrics.get(holdout) if holdout else None,
                holdout_goal=self.goals.get(holdout) if holdout else None,
                cost=self.cost,
                interrupted=interrupted,
                failed=failed,
                workers=self.capacity if self.executor_kind != "serial" else None,
            )
        return self.result

    def _drive(self, started: float, stop_reason: str) -> tuple[str, bool]:
        """One experiment after another until the count or a stop; (stop reason, failed)."""
        while self.done < self.s.experiments:
            why = self._stop_reason(started)
            if why:
                return why, False
            try:
                self._experiment(self._next_index())
            except ProposerFatal as exc:
                self.repo.restore()
                return f"the proposer cannot go on: {exc}", True
            self.ran += 1
        return stop_reason, False

    def _interrupted(self) -> None:
        """Ctrl-C: the candidate in the checkout is discarded; resume runs it again."""
        self.repo.restore()
        for index in self.running_indices():
            self.journal.write("interrupted", index=index, at=_now())

    def running_indices(self) -> list[int]:
        """Experiments started and not finished (one at most here; K with workers)."""
        return [self._current] if self._current is not None else []

    def _next_index(self) -> int:
        """The next experiment's index: one cut short last time first, then a new one."""
        if self.rerun:
            return self.rerun.pop(0)
        index = self.next_index
        self.next_index += 1
        return index

    def _stop_reason(self, started: float) -> str | None:
        """Why no further experiment may start (cost cap, time budget), or None."""
        if self.s.max_cost is not None and self.cost.usd >= self.s.max_cost:
            return f"cost cap reached: ${self.cost.usd:.2f} of ${self.s.max_cost:.2f}"
        budget = self.s.time_budget
        elapsed = self.clock() - started
        per = [d / self.capacity for d in self.durations]  # K in flight finish K times as often
        if budget is not None and not time_left_allows(elapsed, per, budget):
            return (
                f"time budget: {budget:.0f}s, and the next experiment would not finish "
                f"in the {max(0.0, budget - elapsed):.0f}s left"
            )
        return None

    def _resume(self, state: Any) -> None:
        """Pick up a journaled run: baseline, best, noise, history and cost."""
        base = state.baseline
        self.goal = base["goal"]
        self.goals = dict(base.get("goals") or {})
        self.baseline = self.best = self.anchor = base["value"]
        self.best_runs = len(base["samples"])
        self.noise_groups = [list(base["samples"])]
        self.baseline_metrics = dict(base.get("metrics") or {})
        self.best_metrics = dict(self.baseline_metrics)
        self.timeout = float(base.get("timeout") or self.timeout)
        for rec in state.records:
            self._learn(rec)
        for rec in state.decided:
            self._settle_decided(rec)
        for index in state.pending:
            self.journal.write("interrupted", index=index, at=_now())
            self.echo(f"experiment {index} was cut short last time; running it again")
        self.rerun = list(state.pending)
        self.echo(
            f"resuming {self.s.tag}: {self.done} experiments done, best {self.objective} "
            f"{self.best:.6g} (baseline {self.baseline:.6g})"
        )

    def _settle_decided(self, rec: dict) -> None:
        """Finish an experiment whose decision was journaled but whose record was not.

        The write-ahead line holds the whole record, so nothing is measured again: a keep
        whose branch move did not happen is moved now; a discard's tree was restored by
        the repository's start. Then the record is written as if the run had not stopped.
        """
        index = rec["index"]
        if rec["status"] == "keep":
            head = self.repo.head()
            if head == rec["parent"]:
                self.repo.advance_to(rec["commit"])
            elif head != rec["commit"]:
                raise LoopError(
                    f"experiment {index} was kept as {rec['commit'][:12]} on top of "
                    f"{rec['parent'][:12]}, but {self.repo.branch} is at {head[:12]}: the branch "
                    "was moved by hand. Reset it to one of those commits, or use a new tag"
                )
        self.repo.restore()
        self.journal.record(rec)
        self._learn(rec)
        self.on_record(rec)
        self.echo(f"experiment {index} was decided ({rec['status']}) before the last run stopped")
        self.echo(self._line(rec))

    def _learn(self, rec: dict) -> None:
        """Take in one finished experiment (live or read back from the journal)."""
        self.done += 1
        self.history.append(
            PastExperiment(
                index=rec["index"],
                description=rec.get("description", ""),
                status=rec["status"],
                objective=rec.get("objective"),
                delta=rec.get("improvement"),
                reason=rec.get("reason", ""),
                params=rec.get("params"),
            )
        )
        self.cost = self.cost + Cost(**(rec.get("cost") or {}))
        runs = rec.get("runs") or []
        if rec["status"] == "keep":
            self.kept += 1
            kept = rec.get("kept") or {}
            self.best = rec["best_after"]
            self.best_runs = kept.get("best_runs") or max(1, len(runs) - 1)
            self.noise_groups.extend(kept.get("noise_groups") or decide.noise_groups(runs))
            if not kept.get("simplification"):
                self.anchor = self.best
            self.best_metrics = dict(rec.get("metrics") or {})
        elif runs:
            self.noise_groups.extend(decide.noise_groups(runs))
        total = (rec.get("durations") or {}).get("total")
        if total:
            self.durations.append(total)

    # -- baseline -----------------------------------------------------------------------

    def _measure_baseline(self) -> None:
        runs = self.program.baseline_runs
        values: list[float] = []
        per_metric: dict[str, list[float]] = {}
        slowest = 0.0
        self.echo(f"measuring the baseline (up to {runs} runs) for the noise of {self.objective}")
        while decide.baseline_runs_left(values, runs) > 0:
            before = self.repo.fingerprint()
            ev = self.evaluate(self.s.metric_args, self.program.guards, self.timeout)
            self._check_baseline_run(ev)
            try:  # what the unchanged code writes is an output, not a later experiment's doing
                self.repo.learn_baseline_outputs(before)
            except Exception as exc:  # vcs.VcsError: the loop knows nothing of git
                raise LoopError(f"the baseline run cannot be trusted: {exc}") from None
            self._take_baseline_run(ev, values, per_metric)
            slowest = max(slowest, ev.duration)
        # Files the unchanged tests write are outputs, not a future proposal's doing.
        self.repo.out_of_scope(self.program.is_editable, after="evaluation")
        self._set_baseline(values, per_metric, slowest)

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

    def _take_baseline_run(
        self, ev: Any, values: list[float], per_metric: dict[str, list[float]], where: str = ""
    ) -> None:
        if not values:
            self.goals = {name: m.goal for name, m in ev.metrics.items()}
            self.program.check_metrics(self.goals)
            self.goal = self.goals[self.objective]
        value = ev.metrics[self.objective].value
        if value is None or not math.isfinite(value):
            raise LoopError(f"the baseline's {self.objective} is {value}; fix the metric first")
        values.append(value)
        for name, m in ev.metrics.items():
            if m.value is not None:
                per_metric.setdefault(name, []).append(m.value)
        self.echo(
            f"  baseline {len(values)}/{self.program.baseline_runs}: {self.objective} "
            f"{value:.6g}  ({ev.duration:.1f}s{where})"
        )
        self._fault("baseline")

    def _set_baseline(
        self, values: list[float], per_metric: dict[str, list[float]], slowest: float
    ) -> None:
        self.noise_groups = [values]
        self.best_runs = len(values)
        self.baseline = self.best = self.anchor = stats.mean(values)
        self.baseline_metrics = {k: stats.mean(v) for k, v in per_metric.items()}
        self.best_metrics = dict(self.baseline_metrics)
        if not self.program.timeout:
            # Room for a slower candidate, but a hang is caught in minutes, not hours.
            self.timeout = max(30.0, 3.0 * slowest)
        noise = self.noise
        self.journal.write(
            "baseline",
            commit=self.repo.head(),
            objective=self.objective,
            goal=self.goal,
            goals=self.goals,
            samples=values,
            sigma=noise.sigma,
            value=self.baseline,
            metrics=self.baseline_metrics,
            timeout=self.timeout,
            at=_now(),
        )
        self.echo(
            f"baseline {self.objective} {self.baseline:.6g}, noise ±{noise.sigma:.2g} "
            f"(sigma over {len(values)} runs); goal {self.goal}; "
            f"timeout {self.timeout:.0f}s per evaluation"
        )

    # -- one experiment -----------------------------------------------------------------

    def _context(self, index: int) -> ProposalContext:
        return ProposalContext(
            root=self.s.root,
            program=self.program,
            editable_files=self.program.editable_files(self.s.root),
            objective=self.objective,
            goal=self.goal,
            best_value=self.best,
            baseline_value=self.baseline,
            noise=self.noise.sigma,
            history=list(self.history),
            experiment=index,
            total=self.s.experiments,
            state_dir=self.s.record_dir,
            metrics=dict(self.best_metrics),
        )

    def _experiment(self, index: int) -> None:
        self._current = index
        try:
            self._one_experiment(index)
        finally:
            self._current = None

    def _new_record(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "total": self.s.experiments,
            "commit": "",
            "parent": self.repo.head(),
            "description": "",
            "objective": None,
            "best_before": self.best,
            "best_after": self.best,
            "improvement": None,
            "noise": self.noise.sigma,
            "metrics": {},
            "samples": {},
            "runs": [],
            "guards": {"passed": None, "failed": []},
            "proposer": self.s.proposer_name,
            "params": None,
            "diff": "",
            "lines_added": 0,
            "lines_removed": 0,
            "cost": Cost().as_dict(),
            "attempts": [],
            "evaluations": [],
            "log_tail": None,
            "started": _now(),
        }

    def _one_experiment(self, index: int) -> None:
        t0 = self.clock()
        rec = self._new_record(index)
        self.journal.write("start", index=index, parent=rec["parent"], at=rec["started"])
        self._fault("after-start", index)
        ctx = self._context(index)
        try:
            proposal = self.proposer.propose(ctx)
        except ProposerError as exc:
            rec["durations"] = {"propose": self.clock() - t0}
            self._finish(rec, ctx, None, "error", f"proposer error: {exc}", t0)
            return
        rec["durations"] = {"propose": self.clock() - t0}
        rec.update(description=proposal.description, params=proposal.params)
        self._fault("after-proposal", index)
        cost = proposal.cost
        try:
            self._check_scope(rec, "proposal")
            if not self.repo.changed_files():
                rec["cost"] = cost.as_dict()
                self._finish(rec, ctx, proposal, "discard", "the proposal changed nothing", t0)
                return
            cost = self._evaluate_with_repairs(rec, ctx, cost)
        except _Failed as failed:
            rec["cost"] = cost.as_dict()
            f = failed.failure
            status = {"rejected": "rejected", "guard": "discard"}.get(f.status, "crash")
            rec["log_tail"] = f.log_tail or None
            self._discard(rec, status)
            # No valid measurement: an optimiser must not learn a value from it.
            self._finish(rec, ctx, proposal, status, f.reason, t0, valid=False)
            return
        rec["cost"] = cost.as_dict()
        verdict = self._decide(rec)
        while verdict.action == "confirm":
            self.echo(f"  [{index}] {verdict.reason}")
            try:
                self._evaluate_once(rec, confirm=True)
            except _Failed as failed:
                verdict = decide.Decision(
                    "discard", f"the confirmation run failed: {failed}", verdict.improvement, None
                )
                break
            verdict = self._decide(rec)
        rec["improvement"] = verdict.improvement
        rec["decision"] = verdict.reason
        if verdict.action == "keep":
            try:
                self._remeasure(rec, verdict)
            except _Failed as failed:  # the kept code tampered with the tree when run again
                rec["log_tail"] = failed.failure.log_tail or None
                self._discard(rec, "rejected")
                self._finish(rec, ctx, proposal, "rejected", str(failed), t0, valid=False)
                return
            # The kept commit is a snapshot of exactly the measured tree; the branch moves
            # onto it in _finish, after the write-ahead line (a kill in between rolls forward).
            rec["commit"] = self.repo.snapshot(
                f"{rec['description']}\n\n{self.objective}: {self.best:.6g} -> "
                f"{verdict.new_best:.6g} (experiment {index}; {verdict.reason})"
            )
            self._finish(rec, ctx, proposal, "keep", verdict.reason, t0)
        else:
            self._discard(rec, "discard")
            self._finish(rec, ctx, proposal, "discard", verdict.reason, t0)

    def _remeasure(self, rec: dict, verdict: decide.Decision) -> None:
        """Measure the kept tree afresh and carry forward what decide.after_keep says.

        Done before the write-ahead line, on the working tree that becomes the kept
        snapshot (the same files), so the record written ahead is the complete one.
        A fresh run that fails is left out; one that tampers with the tree rejects.
        """
        fresh: list[float] = []
        for _ in range(verdict.remeasure):
            scratch: dict[str, Any] = {
                "index": rec["index"], "runs": [], "samples": {}, "metrics": {},
                "evaluations": rec["evaluations"], "guards": {},
            }  # fmt: skip
            try:
                self._evaluate_once(scratch, confirm=True)
            except _Failed as failed:
                if failed.failure.status == "rejected":
                    raise
                continue
            fresh.extend(scratch["runs"])
        self._carry(rec, verdict, fresh)

    def _carry(self, rec: dict, verdict: decide.Decision, fresh: list[float]) -> None:
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

    def _evaluate_with_repairs(self, rec: dict, ctx: ProposalContext, cost: Cost) -> Cost:
        """Evaluate; after a crash or a failed guard let the proposer fix its change."""
        attempt = 0
        while True:
            try:
                self._evaluate_once(rec)
                return cost
            except _Failed as failed:
                f = failed.failure
                if f.status == "rejected" or attempt >= self.s.repair_attempts:
                    raise
                attempt += 1
                rec["attempts"].append(
                    {"status": f.status, "reason": f.reason, "log_tail": f.log_tail,
                     "diff": rec["diff"]}
                )  # fmt: skip
                try:
                    fixed = self.proposer.repair(ctx, f)
                except ProposerError as exc:
                    rec["attempts"][-1]["repair_error"] = str(exc)
                    raise failed from None
                if fixed is None:
                    raise
                cost = cost + fixed.cost
                rec["description"] = fixed.description or rec["description"]
                rec["samples"], rec["runs"], rec["metrics"] = {}, [], {}
                self._check_scope(rec, f"repair attempt {attempt}")

    def _evaluate_once(self, rec: dict, confirm: bool = False) -> None:
        """One evaluation of the candidate; adds its values to ``rec`` or raises _Failed."""
        before = self.repo.fingerprint()  # what is measured must be what is kept
        ev = self.evaluate(self.s.metric_args, self.program.guards, self.timeout)
        rec["evaluations"].append(
            {"status": ev.status, "duration": round(ev.duration, 3), "confirm": confirm}
        )
        self._fault("confirmation" if confirm else "evaluation", rec["index"])
        self._check_scope(rec, "evaluation", since=before)
        self._take(rec, ev)

    def _take(self, rec: dict, ev: Any) -> None:
        """Add one evaluation's values to ``rec``, or raise _Failed (crash, guard, constraint)."""
        if ev.status != "ok":
            raise _Failed(ev.status, ev.reason, ev.log_tail)
        objective = ev.metrics.get(self.objective)
        if objective is None or objective.value is None or not math.isfinite(objective.value):
            why = (objective.error if objective is not None else None) or "no value reported"
            raise _Failed("crash", f"{self.objective}: {why}", ev.log_tail)
        rec["guards"] = {"passed": ev.guards_passed, "failed": list(ev.failed_guards)}
        if not ev.guards_passed:
            raise _Failed("guard", "guard failed: " + ", ".join(ev.failed_guards), ev.log_tail)
        rec["runs"].append(objective.value)
        for name, m in ev.metrics.items():
            if m.value is not None:
                rec["samples"].setdefault(name, []).extend(m.samples or [m.value])
                rec.setdefault("_values", {}).setdefault(name, []).append(m.value)
                rec["metrics"][name] = stats.mean(rec["_values"][name])
        rec["objective"] = stats.mean(rec["runs"])
        violations = decide.constraint_violations(self.program.constraints, rec["metrics"])
        if violations:
            raise _Failed("guard", "constraint violated: " + "; ".join(violations), ev.log_tail)

    def _decide(self, rec: dict) -> decide.Decision:
        return self._decide_on(rec, (self.best, self.best_runs, self.anchor))

    def _decide_on(self, rec: dict, best: tuple[float, int, float]) -> decide.Decision:
        """The keep rule for ``rec`` against a best given as (value, its runs, anchor)."""
        value, best_runs, anchor = best
        noise = self.noise
        return decide.keep_decision(
            goal=self.goal,
            best=value,
            sigma=noise.sigma,
            df=noise.df,
            candidate=rec["runs"],
            best_runs=best_runs,
            min_delta=self.program.min_delta,
            lines_added=rec["lines_added"],
            lines_removed=rec["lines_removed"],
            max_runs=decide.MAX_RUNS,
            anchor=anchor,
        )

    def _check_scope(self, rec: dict, after: str, since: Any = None) -> None:
        """Reject the candidate when anything outside the editable files changed.

        ``since``: the repo's fingerprint from right before the evaluation, so that what
        the evaluation itself wrote (an editable file rewritten at import, a planted
        conftest.py, a changed data file) is caught too.
        """
        outside = self.repo.out_of_scope(
            self.program.is_editable,
            after="evaluation" if after == "evaluation" else "proposal",
            since=since,
        )
        if after != "evaluation":
            # Code lines only: deleted comments and blank lines do not make a change simpler.
            diff = self.repo.diff_text()
            added, removed = decide.code_lines_changed(diff)
            rec.update(diff=diff, lines_added=added, lines_removed=removed)
        if outside:
            shown = ", ".join(outside[:5]) + (
                f" and {len(outside) - 5} more" if len(outside) > 5 else ""
            )
            raise _Failed("rejected", f"the {after} changed files it may not change: {shown}")

    def _discard(self, rec: dict, status: str) -> None:
        """Keep the candidate inspectable as a dangling commit (_finish restores the tree)."""
        if self.repo.changed_files():
            rec["commit"] = self.repo.snapshot(f"{status}: {rec['description']}")

    def _finish(
        self,
        rec: dict,
        ctx: ProposalContext,
        proposal: Proposal | None,
        status: str,
        reason: str,
        t0: float,
        valid: bool = True,
    ) -> None:
        rec.pop("_values", None)
        total = self.clock() - t0
        propose = rec["durations"].get("propose", 0.0)
        evaluate = sum(e["duration"] for e in rec["evaluations"])
        rec["durations"] = {
            "propose": round(propose, 3),
            "evaluate": round(evaluate, 3),
            "total": round(total, 3),
        }
        rec.update(status=status, reason=reason, finished=_now())
        rec.setdefault("decision", reason)
        # Write-ahead: the whole record first, then the step that cannot be undone, then
        # the record line. A kill anywhere in between is finished by _settle_decided.
        index = rec["index"]
        self.journal.decide(rec)
        if status == "keep":
            self._fault("before-commit", index)
            self.repo.advance_to(rec["commit"])
            self._fault("after-commit", index)
        else:
            self._fault("before-restore", index)
        self.repo.restore()
        if status != "keep":
            self._fault("after-restore", index)
        self.journal.record(rec)
        self._fault("after-record", index)
        self._learn(rec)
        if proposal is not None:
            value = rec["objective"] if valid else None
            self.proposer.observe(ctx, proposal, Outcome(status, value, reason))
        self.on_record(rec)
        self.echo(self._line(rec))

    def _fault(self, step: str, index: int | None = None) -> None:
        plan = self._fault_plan
        if plan is not None and plan[0] == step and plan[1] in (None, index):
            os.kill(os.getpid(), signal.SIGKILL)

    def _line(self, rec: dict) -> str:
        from pytest_autoresearch.reporting import report

        remaining = self.s.experiments - self.done
        avg = sum(self.durations) / len(self.durations) if self.durations else 0.0
        eta = remaining * avg / self.capacity
        return report.format_line(rec, objective=self.objective, eta_seconds=eta)


def parse_fault(text: str | None) -> tuple[str, int | None] | None:
    """``STEP`` or ``STEP:INDEX`` from FAULT_ENV; a typo is an error, not a silent no-op."""
    if not text:
        return None
    step, _, index = text.partition(":")
    if step not in FAULT_STEPS or (index and not index.isdigit()):
        raise LoopError(
            f"{FAULT_ENV}={text!r}: expected STEP or STEP:INDEX with STEP one of "
            + ", ".join(FAULT_STEPS)
        )
    return step, int(index) if index else None
